"""What the scikit-learn mixture drop-ins share: validation, the fitted model's device
copy, inference through :mod:`toolkit.gmm.model`'s jitted functions, sampling, pickling.

A subclass implements ``_check_parameters``, ``_fit(X) -> X as used`` (setting the fitted
attributes, and ``self._gmm``: the fitted pytree as numpy float64) and ``_set``.
"""
from __future__ import annotations

import numbers
import time
import warnings

import jax
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import gmm as _gmm
from .._checks import scoped_x64
from ..gmm import model as _model
from ..gmm.model import _call


# scikit-learn's init_params -> toolkit.gmm's init names
_INIT_PARAMS = {"kmeans": "kmeans", "k-means++": "kmeans++", "random": "random",
                "random_from_data": "random_from_data"}


class _Mixture(DensityMixin, BaseEstimator):
    """The shared part of :class:`GaussianMixture` and :class:`BayesianGaussianMixture`."""

    def _check_common_parameters(self, choices=()):
        """scikit-learn's checks (and messages) of the parameters both mixtures have;
        ``choices``: more ``(name, allowed values)`` string options."""
        name = type(self).__name__
        for attr, minimum in (("n_components", 1), ("n_init", 1), ("max_iter", 0)):
            v = getattr(self, attr)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"The '{attr}' parameter of {name} must be an int in the range [{minimum}, inf). "
                                 f"Got {v!r} instead.")
        for attr in ("tol", "reg_covar"):
            v = getattr(self, attr)
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or np.isnan(v) or v < 0:
                raise ValueError(f"The '{attr}' parameter of {name} must be a float in the range [0.0, inf). "
                                 f"Got {v!r} instead.")
        for attr, allowed in (("covariance_type", _gmm.COVARIANCE_TYPES), ("init_params", tuple(_INIT_PARAMS)),
                              *choices):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"The '{attr}' parameter of {name} must be a str among {set(allowed)}. "
                                 f"Got {getattr(self, attr)!r} instead.")

    def _start_fit(self, X):
        """The checks and validation of ``fit``: ``(X as a float64 JAX array, the fit's
        key, start time)``."""
        self._check_parameters()
        X = self._validate(X, reset=True)
        n = X.shape[0]
        if n < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {n}")
        rng = check_random_state(self.random_state)
        with scoped_x64():
            Xj = jax.device_put(np.asarray(X, np.float64))  # jnp.asarray would compile a copy per shape
            key = jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))
        return Xj, key, time.perf_counter()

    def _end_fit(self, g, converged, n_iter, lb, lbs):
        """scikit-learn's ConvergenceWarning, then the fitted attributes."""
        if not converged and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different init parameters, "
                          "or increase max_iter, tol, or check for degenerate data.", ConvergenceWarning)
        self._set(g)
        self.converged_, self.n_iter_, self.lower_bound_, self.lower_bounds_ = converged, n_iter, lb, lbs

    def _validate(self, X, reset):
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=2 if reset
                             else 1)

    def fit(self, X, y=None):
        """Estimate the parameters with EM (best of ``n_init`` vectorised restarts)."""
        self._fit(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the component of every sample, ``(n_samples,)``."""
        Xj = self._fit(X)
        with scoped_x64():  # the fitted mixture as predict() passes it, so both share one executable
            out, n = _call(_model._predict, self._mixture(), Xj, type(self).__name__, host=True)
            return out[:n]

    def _print_progress(self, finals, history, converged, elapsed):
        """scikit-learn's verbose messages, after the fact: the restarts run together in
        one compiled loop, so the iterations shown are the best restart's and the time
        is the whole fit's."""
        best = int(np.argmax(np.where(np.isfinite(finals), finals, -np.inf)))
        for i, final in enumerate(finals):
            print(f"Initialization {i}")
            if i == best:
                for it in range(self.verbose_interval, len(history) + 1, self.verbose_interval):
                    change = history[it - 1] - (history[it - 2] if it >= 2 else -np.inf)
                    print(f"  Iteration {it}" + (f"\t ll change {change:.5f}" if self.verbose >= 2 else ""))
                msg = "converged" if converged else "did not converge"
            else:
                msg = "finished"
            if self.verbose >= 2:
                print(f"Initialization {msg}. time lapse {elapsed:.5f}s\t lower bound {final:.5f}.")
            else:
                print(f"Initialization {msg}.")

    def _data(self, X):
        """``(fitted mixture, validated X)``; NotFittedError before ``fit``."""
        check_is_fitted(self)
        return self._mixture(), np.asarray(self._validate(X, reset=False), np.float64)

    def _mixture(self):
        """The fitted mixture as float64 JAX arrays, converted once per fit (in ``_set``, or
        on first use after unpickling): a conversion per call would cost more than a small
        predict."""
        if "_gmm_device" not in self.__dict__:  # not pickled: see __getstate__
            self._to_device()
        return self._gmm_device

    def _to_device(self):
        with scoped_x64():
            self._gmm_device = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a, np.float64)), self._gmm)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_gmm_device", None)  # device arrays: rebuilt in float64 whatever x64 is there
        return state

    def _infer(self, fn, X):
        """``fn`` (a jitted function of toolkit.gmm.model) on X as a numpy array of
        ``n_samples`` rows: the padding rows are dropped on the host."""
        with scoped_x64():
            out, n = _call(fn, *self._data(X), type(self).__name__, host=True)
            return out[:n]

    def score_samples(self, X):
        """Log density of every sample, ``(n_samples,)``."""
        return self._infer(_model._log_prob, X)

    def score(self, X, y=None):
        """Mean log-likelihood per sample."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X):
        """Most probable component of every sample, ``(n_samples,)``."""
        return self._infer(_model._predict, X)

    def predict_proba(self, X):
        """Posterior probability of each component, ``(n_samples, n_components)``."""
        return self._infer(_model._predict_proba, X)

    def sample(self, n_samples=1):
        """Draw ``n_samples`` points: ``(X (n_samples, n_features), y (n_samples,))``, grouped by component."""
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one "
                             "sample.")
        rng = check_random_state(self.random_state)
        with scoped_x64():
            key = jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))
            X, y = _gmm.sample(key, self._mixture(), int(n_samples))
            X, y = np.asarray(X), np.asarray(y)
        order = np.argsort(y, kind="stable")
        return X[order], y[order]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

