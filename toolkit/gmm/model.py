"""Using a fitted mixture: densities, predictions, sampling and information criteria."""
from __future__ import annotations

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .._buckets import unpad
from .._checks import as_float_array, check_choice
from .covariance import COVARIANCE, _chol_precision
from .em import _weighted_log_prob
from .types import COVARIANCE_TYPES, GMM, _check_gmm_X, _raise_for_rows, _row_summary


def from_covariances(weights: ArrayLike, means: ArrayLike, covariances: ArrayLike,
                     covariance_type: str = "full") -> GMM:
    """Build a :class:`GMM` from weights, means and covariances (computes precisions_cholesky)."""
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", "gmm.from_covariances")
    means = as_float_array(means, "means", "gmm.from_covariances")
    cov = as_float_array(covariances, "covariances", "gmm.from_covariances", dtype=means.dtype)
    w = as_float_array(weights, "weights", "gmm.from_covariances", dtype=means.dtype)
    return GMM(w, means, cov, _chol_precision(cov, covariance_type), covariance_type)


# Built once here: a jax.jit made inside each call would compile on every call. X arrives
# padded to its size bucket (zero rows), so a new row count reuses these executables;
# the padding rows' results are sliced off, or masked out of sums by the row count n.
# Each also returns X's _row_summary, checked after the call: one executable per size.
@jax.jit
def _log_prob(g, X):
    return logsumexp(_weighted_log_prob(g, X), axis=1), _row_summary(X)


@jax.jit
def _predict_proba(g, X):
    return jax.nn.softmax(_weighted_log_prob(g, X), axis=1), _row_summary(X)


@jax.jit
def _predict(g, X):
    return jnp.argmax(_weighted_log_prob(g, X), axis=1), _row_summary(X)


@jax.jit
def _score(g, X, n):
    """Mean log density over the first ``n`` rows (``n`` traced: one executable per bucket)."""
    lp = logsumexp(_weighted_log_prob(g, X), axis=1)
    return jnp.sum(jnp.where(jnp.arange(X.shape[0]) < n, lp, 0.0)) / n, _row_summary(X)


def _call(fn, gmm, X, where, *, pass_n=False, host=False):
    """``fn(gmm, padded X[, n])``'s result after checking X's values: ``(result, n)``;
    ``host``: the result as numpy, fetched with the checks' values in one transfer."""
    X, n = _check_gmm_X(gmm, X, where)
    out, summary = fn(gmm, X, n) if pass_n else fn(gmm, X)
    if host:
        out, summary = jax.device_get((out, summary))
    _raise_for_rows(summary, X, where, "X", n=n)
    return out, n


def log_prob(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Log density of the mixture at each point: ``(n,)``."""
    return unpad(*_call(_log_prob, gmm, X, "gmm.log_prob"))


def score(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Mean log-likelihood per sample (scikit-learn's ``score``)."""
    return _call(_score, gmm, X, "gmm.score", pass_n=True)[0]


def predict_proba(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Posterior component probabilities ``(n, k)``."""
    return unpad(*_call(_predict_proba, gmm, X, "gmm.predict_proba"))


def predict(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Most probable component per point ``(n,)``."""
    return unpad(*_call(_predict, gmm, X, "gmm.predict"))


def _full_cov(gmm):
    """``(k, d, d)`` covariance matrices of any covariance type."""
    k, d = gmm.means.shape
    return COVARIANCE[gmm.covariance_type].as_full(gmm.covariances, k, d)


def sample(key: jax.Array, gmm: GMM, n: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``n`` points: ``(X (n, d), labels (n,))``."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"gmm.sample: n must be a positive int, got {n!r}")
    k1, k2 = jax.random.split(key)
    labels = jax.random.categorical(k1, jnp.log(gmm.weights), shape=(int(n),))
    chol = jnp.linalg.cholesky(_full_cov(gmm))
    z = jax.random.normal(k2, (int(n), gmm.means.shape[1]), gmm.means.dtype)
    X = gmm.means[labels] + jnp.einsum("nij,nj->ni", chol[labels], z)
    return X, labels


def n_parameters(gmm: GMM) -> int:
    """Free parameters (as scikit-learn's ``_n_parameters``)."""
    k, d = gmm.means.shape
    return int(COVARIANCE[gmm.covariance_type].n_params(k, d) + k * d + k - 1)


def bic(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Bayesian information criterion (lower is better)."""
    mean_ll, n = _call(_score, gmm, X, "gmm.bic", pass_n=True)
    return -2 * mean_ll * n + n_parameters(gmm) * np.log(n)


def aic(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Akaike information criterion (lower is better)."""
    mean_ll, n = _call(_score, gmm, X, "gmm.aic", pass_n=True)
    return -2 * mean_ll * n + 2 * n_parameters(gmm)
