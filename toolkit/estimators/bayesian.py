"""``BayesianGaussianMixture``: scikit-learn's BayesianGaussianMixture on :func:`toolkit.gmm.fit_bayesian`."""
from __future__ import annotations

import time

import jax
import numpy as np

from .. import gmm as _gmm
from .._checks import scoped_x64
from ._base import _INIT_PARAMS, _Mixture

__all__ = ["BayesianGaussianMixture"]


class BayesianGaussianMixture(_Mixture):
    """Variational Bayesian Gaussian mixture; scikit-learn's API, toolkit's engine.

    Parameters and fitted attributes are those of ``sklearn.mixture.BayesianGaussianMixture``
    (``weight_concentration_`` is a tuple of two arrays for the Dirichlet process, as
    there; ``degrees_of_freedom_`` a float for "tied"), plus ``shrinkage`` and
    ``shrinkage_target`` as in :class:`GaussianMixture` (None: scikit-learn's model). From the same initial
    responsibilities the ELBO trajectory is scikit-learn's to round-off.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> X = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 8])
      >>> bgm = BayesianGaussianMixture(n_components=5, random_state=0).fit(X)
      >>> int(np.sum(bgm.weights_ > 0.05)), bgm.converged_   # two of five components used
      (2, True)
    """

    def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100,
                 n_init=1, init_params="kmeans", weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None, warm_start=False,
                 verbose=0, verbose_interval=10, shrinkage=None, shrinkage_target="identity"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.shrinkage = shrinkage
        self.shrinkage_target = shrinkage_target

    def _check_parameters(self):
        self._check_common_parameters((("weight_concentration_prior_type", _gmm.PRIOR_TYPES),))

    def _fit(self, X):
        Xj, key, t0 = self._start_fit(X)
        with scoped_x64():
            warm = self.warm_start and hasattr(self, "converged_")
            kw = dict(weight_concentration_prior_type=self.weight_concentration_prior_type,
                      weight_concentration_prior=self.weight_concentration_prior,
                      mean_precision_prior=self.mean_precision_prior, mean_prior=self.mean_prior,
                      degrees_of_freedom_prior=self.degrees_of_freedom_prior, covariance_prior=self.covariance_prior,
                      covariance_type=self.covariance_type, reg_covar=float(self.reg_covar),
                      shrinkage=self.shrinkage, shrinkage_target=self.shrinkage_target)
            init = self._mixture() if warm else _INIT_PARAMS[self.init_params]
            g, info = _gmm.fit_bayesian(key, Xj, self.n_components, **kw, init=init,
                                        n_init=1 if warm else self.n_init, max_iter=max(int(self.max_iter), 1),
                                        tol=float(self.tol), prev_lower_bound=self.lower_bound_ if warm else None)
            if self.max_iter == 0:  # scikit-learn: the initialisation only
                g, info = _gmm.fit_bayesian(key, Xj, self.n_components, **kw, init=init, n_init=1, max_iter=1,
                                            tol=float(self.tol))
                converged, n_iter, lb, lbs = False, 0, -np.inf, np.array([])
            else:
                n_iter, converged, lb = int(info.n_iter), bool(info.converged), float(info.lower_bound)
                lbs = np.asarray(info.history)[:n_iter]
                if self.verbose:
                    self._print_progress(np.asarray(info.lower_bounds), lbs, converged, time.perf_counter() - t0)
        self._end_fit(g, converged, n_iter, lb, lbs)
        return Xj

    def _set(self, g):
        self._gmm = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), g)
        self._to_device()
        f = self._gmm
        with scoped_x64():
            self.weights_ = np.asarray(self._gmm_device.weights, np.float64)
        self.means_ = f.means
        self.covariances_ = f.covariances
        self.precisions_cholesky_ = f.precisions_cholesky
        pc = f.precisions_cholesky
        matrix = self.covariance_type in ("full", "tied")
        self.precisions_ = pc @ np.swapaxes(pc, -1, -2) if matrix else pc ** 2
        wc = f.weight_concentration
        self.weight_concentration_ = (wc[0], wc[1]) if self.weight_concentration_prior_type == "dirichlet_process" \
            else wc
        self.mean_precision_ = f.mean_precision
        self.degrees_of_freedom_ = float(f.degrees_of_freedom[0]) if self.covariance_type == "tied" \
            else f.degrees_of_freedom
        self.weight_concentration_prior_ = float(f.weight_concentration_prior)
        self.mean_precision_prior_ = float(f.mean_precision_prior)
        self.mean_prior_ = f.mean_prior
        self.degrees_of_freedom_prior_ = float(f.degrees_of_freedom_prior)
        self.covariance_prior_ = float(f.covariance_prior) if self.covariance_type == "spherical" \
            else f.covariance_prior
