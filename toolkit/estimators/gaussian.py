"""``GaussianMixture``: scikit-learn's GaussianMixture on toolkit's EM.

:class:`GaussianMixture` is a drop-in for ``sklearn.mixture.GaussianMixture``: the same
constructor parameters (plus ``shrinkage``), fitted attributes, methods, warnings and
error messages, with EM running as one jitted loop in :mod:`toolkit.gmm`. It always
computes in float64 (scoped with ``jax.enable_x64``), like scikit-learn, whatever the
global JAX setting.
"""
from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_array

from .. import gmm as _gmm
from .._checks import scoped_x64
from ..gmm.covariance import COVARIANCE
from ..gmm.em import _m_step
from ..gmm.init import _init_resp
from ._base import _INIT_PARAMS, _Mixture

__all__ = ["GaussianMixture"]



def _raise_if_ill_defined(g):
    """scikit-learn's error for a singular covariance. toolkit.gmm itself never fails (a tiny
    jitter keeps it going); the drop-in raises as scikit-learn does when ``reg_covar=0``
    leaves a component's covariance singular (collapsed or singleton samples)."""
    cov = np.asarray(g.covariances, np.float64)
    if COVARIANCE[g.covariance_type].matrix:
        mats = cov.reshape((-1,) + cov.shape[-2:])
        bad = any(np.min(np.linalg.eigvalsh(m)) <= 0 for m in mats)
    else:
        bad = bool(np.any(cov <= 0))
    if bad:
        raise ValueError("Fitting the mixture model failed because some components have ill-defined empirical "
                         "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
                         "the number of components, increase reg_covar, or scale the input data.")


class GaussianMixture(_Mixture):
    """Gaussian mixture fitted by EM; scikit-learn's API, toolkit's engine.

    Parameters are those of ``sklearn.mixture.GaussianMixture``; ``init_params`` takes
    "kmeans" (Lloyd in JAX), "k-means++", "random" or "random_from_data". Extra:
    ``shrinkage`` (None, a float in [0, 1], "ledoit_wolf" or "oas") shrinks each
    covariance toward a target, which keeps EM well posed on rank-deficient data;
    ``shrinkage_target`` picks it: "identity" (a scaled identity, the default) or
    "diagonal" (the covariance's own diagonal: off-diagonal entries shrink, each
    feature keeps its variance).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> X = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 8])
      >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
      >>> gm.means_.round(0) + 0.0  # one component per cluster (order from the seeding)
      array([[8., 8.],
             [0., 0.]])
      >>> (gm.predict(X[:3]) == gm.predict(X[:1])).all(), gm.converged_
      (np.True_, True)
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100,
                 n_init=1, init_params="kmeans", weights_init=None, means_init=None, precisions_init=None,
                 random_state=None, warm_start=False, verbose=0, verbose_interval=10, shrinkage=None,
                 shrinkage_target="identity"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.shrinkage = shrinkage
        self.shrinkage_target = shrinkage_target

    # ------------------------------------------------------------------ checks
    def _check_parameters(self):
        self._check_common_parameters()

    def _user_init(self, X, key):
        """A warm-start mixture from weights_init / means_init / precisions_init (or None)."""
        if self.weights_init is None and self.means_init is None and self.precisions_init is None:
            return None
        k, d = self.n_components, X.shape[1]
        resp = _init_resp(key, X, jnp.ones(X.shape[0], X.dtype), k, _INIT_PARAMS[self.init_params])
        base = _m_step(X, resp, self.reg_covar, self.covariance_type, None)
        weights, means, cov = np.asarray(base.weights), np.asarray(base.means), np.asarray(base.covariances)
        if self.weights_init is not None:
            weights = check_array(self.weights_init, dtype=np.float64, ensure_2d=False)
            if weights.shape != (k,):
                raise ValueError(f"The parameter 'weights' should have the shape of ({k},), but got "
                                 f"{weights.shape}")
            if np.any(weights < 0) or np.any(weights > 1):
                # scikit-learn's text, min and max included as it prints them (its tests match it)
                raise ValueError("The parameter 'weights' should be in the range [0, 1], but got max value "
                                 f"{weights.min():.5f}, min value {weights.max():.5f}")
            if not np.allclose(weights.sum(), 1.0):
                raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = "
                                 f"{weights.sum():.5f}")
        if self.means_init is not None:
            means = check_array(self.means_init, dtype=np.float64, ensure_2d=False)
            if means.shape != (k, d):
                raise ValueError(f"The parameter 'means' should have the shape of {(k, d)}, but got {means.shape}")
        if self.precisions_init is not None:
            prec = check_array(self.precisions_init, dtype=np.float64, ensure_2d=False, allow_nd=True)
            shape = COVARIANCE[self.covariance_type].shape(k, d)
            if prec.shape != shape:
                raise ValueError(f"The parameter '{self.covariance_type} precision' should have the shape of "
                                 f"{shape}, but got {prec.shape}")
            if COVARIANCE[self.covariance_type].matrix:
                mats = prec.reshape((-1, d, d))
                for m in mats:
                    if not np.allclose(m, m.T) or np.any(np.linalg.eigvalsh(m) <= 0):
                        raise ValueError(f"'{self.covariance_type} precision' should be symmetric, "
                                         "positive-definite")
                cov = np.linalg.inv(mats).reshape(prec.shape)
            else:
                if np.any(prec <= 0):
                    raise ValueError(f"'{self.covariance_type} precision' should be positive")
                cov = 1.0 / prec
        return _gmm.from_covariances(weights, means, cov, self.covariance_type)

    # ------------------------------------------------------------------ fitting
    def _fit(self, X):
        """Fit on X; returns X as the float64 JAX array the fit used."""
        Xj, key, t0 = self._start_fit(X)
        with scoped_x64():
            warm = self.warm_start and hasattr(self, "_gmm")
            init = self._mixture() if warm else self._user_init(Xj, jax.random.fold_in(key, 1))
            init_name = _INIT_PARAMS[self.init_params] if init is None else init
            n_init = 1 if init is not None else self.n_init
            with warnings.catch_warnings():  # scikit-learn has no such warning: stay silent as it is
                warnings.simplefilter("ignore", _gmm.RegularizationWarning)
                if self.max_iter == 0:
                    g = init if init is not None else _gmm.fit(
                        key, Xj, self.n_components, max_iter=1, init=init_name, covariance_type=self.covariance_type,
                        reg_covar=self.reg_covar)[0]
                    converged, n_iter, lb, lbs = False, 0, -np.inf, np.array([])
                else:
                    g, info = _gmm.fit(key, Xj, self.n_components, covariance_type=self.covariance_type,
                                       reg_covar=float(self.reg_covar), shrinkage=self.shrinkage,
                                       shrinkage_target=self.shrinkage_target, init=init_name,
                                       n_init=n_init, max_iter=int(self.max_iter), tol=float(self.tol),
                                       prev_lower_bound=self.lower_bound_ if warm else None)
                    n_iter = int(info.n_iter)
                    converged, lb = bool(info.converged), float(info.lower_bound)
                    lbs = np.asarray(info.history)[:n_iter]
                    if self.verbose:
                        self._print_progress(np.asarray(info.lower_bounds), lbs, converged,
                                             time.perf_counter() - t0)
        if self.reg_covar == 0:
            _raise_if_ill_defined(g)
        self._end_fit(g, converged, n_iter, lb, lbs)
        return Xj

    def _set(self, g):
        # kept as numpy float64: a pickle round trip then keeps float64 even in a process
        # where JAX's x64 is off (JAX arrays would come back as float32 there)
        self._gmm = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), g)
        self._to_device()
        self.weights_ = np.asarray(g.weights, np.float64)
        self.means_ = np.asarray(g.means, np.float64)
        self.covariances_ = np.asarray(g.covariances, np.float64)
        pc = np.asarray(g.precisions_cholesky, np.float64)
        self.precisions_cholesky_ = pc
        # P = L L^T per matrix (tied: one), or 1 / var for the diagonal types
        self.precisions_ = pc @ np.swapaxes(pc, -1, -2) if COVARIANCE[self.covariance_type].matrix else pc ** 2

    # ------------------------------------------------------------------ inference
    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        with scoped_x64():
            return float(_gmm.bic(*self._data(X)))

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        with scoped_x64():
            return float(_gmm.aic(*self._data(X)))

    def _n_parameters(self):
        return int(_gmm.n_parameters(self._gmm))
