"""Using a fitted mixture: densities, predictions, sampling and information criteria."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jax.scipy.special import logsumexp

from .._buckets import unpad
from .._checks import as_float_array, check_choice
from .covariance import COVARIANCE, _chol_precision
from .bayesian import BayesianGMM, _weighted_log_prob as _bayesian_weighted_log_prob
from .em import _weighted_log_prob
from .types import COVARIANCE_TYPES, GMM, _check_gmm_X, _raise_for_rows, _row_summary


def from_covariances(weights: ArrayLike, means: ArrayLike, covariances: ArrayLike,
                     covariance_type: str = "full") -> GMM:
    """Build a :class:`GMM` from weights, means and covariances (computes precisions_cholesky).

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([1.0]), jnp.zeros((1, 2)), 4.0 * jnp.eye(2)[None])
    >>> g.precisions_cholesky[0].tolist()  # Cholesky factor of the precision
    [[0.5, 0.0], [0.0, 0.5]]
    """
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", "gmm.from_covariances")
    means = as_float_array(means, "means", "gmm.from_covariances")
    cov = as_float_array(covariances, "covariances", "gmm.from_covariances", dtype=means.dtype)
    w = as_float_array(weights, "weights", "gmm.from_covariances", dtype=means.dtype)
    return GMM(w, means, cov, _chol_precision(cov, covariance_type), covariance_type)


def _wlp(g, X):
    """``(n, k)`` log weight + log density; a :class:`BayesianGMM` uses the variational
    expectations (scikit-learn's BayesianGaussianMixture scores with them too)."""
    if isinstance(g, BayesianGMM):
        return _bayesian_weighted_log_prob(g, X)
    return _weighted_log_prob(g, X)


# Built once here: a jax.jit made inside each call would compile on every call. X arrives
# padded to its size bucket (zero rows), so a new row count reuses these executables;
# the padding rows' results are sliced off, or masked out of sums by the row count n.
# Each also returns X's _row_summary, checked after the call: one executable per size.
@jax.jit
def _log_prob(g, X):
    return logsumexp(_wlp(g, X), axis=1), _row_summary(X)


@jax.jit
def _predict_proba(g, X):
    return jax.nn.softmax(_wlp(g, X), axis=1), _row_summary(X)


@jax.jit
def _predict(g, X):
    return jnp.argmax(_wlp(g, X), axis=1), _row_summary(X)


@jax.jit
def _score(g, X, n):
    """Mean log density over the first ``n`` rows (``n`` traced: one executable per bucket)."""
    lp = logsumexp(_wlp(g, X), axis=1)
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
    """Log density of the mixture at each point: ``(n,)``.

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [4.0, 0.0]]),
    ...                          jnp.stack([jnp.eye(2)] * 2))
    >>> X = jnp.array([[0.1, 0.0], [3.9, 0.2], [2.0, 0.0]])
    >>> gmm.log_prob(g, X).round(3).tolist()
    [-2.536, -2.556, -3.838]
    """
    return unpad(*_call(_log_prob, gmm, X, "gmm.log_prob"))


def score(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Mean log-likelihood per sample (scikit-learn's ``score``).

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([1.0]), jnp.zeros((1, 2)), jnp.eye(2)[None])
    >>> float(gmm.score(g, jnp.zeros((3, 2)))) == float(-jnp.log(2 * jnp.pi))
    True
    """
    return _call(_score, gmm, X, "gmm.score", pass_n=True)[0]


def predict_proba(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Posterior component probabilities ``(n, k)``.

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [4.0, 0.0]]),
    ...                          jnp.stack([jnp.eye(2)] * 2))
    >>> gmm.predict_proba(g, jnp.array([[2.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    return unpad(*_call(_predict_proba, gmm, X, "gmm.predict_proba"))


def predict(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Most probable component per point ``(n,)``.

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [4.0, 0.0]]),
    ...                          jnp.stack([jnp.eye(2)] * 2))
    >>> gmm.predict(g, jnp.array([[0.1, 0.0], [3.9, 0.2]])).tolist()
    [0, 1]
    """
    return unpad(*_call(_predict, gmm, X, "gmm.predict"))


def _full_cov(gmm):
    """``(k, d, d)`` covariance matrices of any covariance type."""
    k, d = gmm.means.shape
    return COVARIANCE[gmm.covariance_type].as_full(gmm.covariances, k, d)


def sample(key: jax.Array, gmm: GMM, n: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``n`` points: ``(X (n, d), labels (n,))``.

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [4.0, 0.0]]),
    ...                          jnp.stack([jnp.eye(2)] * 2))
    >>> X, labels = gmm.sample(jax.random.key(0), g, 1000)
    >>> X.shape, labels.shape, bool(abs(float(labels.mean()) - 0.5) < 0.1)
    ((1000, 2), (1000,), True)
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"gmm.sample: n must be a positive int, got {n!r}")
    k1, k2 = jax.random.split(key)
    labels = jax.random.categorical(k1, jnp.log(gmm.weights), shape=(int(n),))
    chol = jnp.linalg.cholesky(_full_cov(gmm))
    z = jax.random.normal(k2, (int(n), gmm.means.shape[1]), gmm.means.dtype)
    X = gmm.means[labels] + jnp.einsum("nij,nj->ni", chol[labels], z)
    return X, labels


def n_parameters(gmm: GMM) -> int:
    """Free parameters (as scikit-learn's ``_n_parameters``).

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.zeros((2, 3)), jnp.stack([jnp.eye(3)] * 2))
    >>> gmm.n_parameters(g)  # 2 x 6 covariance + 2 x 3 mean + 1 weight
    19
    """
    k, d = gmm.means.shape
    return int(COVARIANCE[gmm.covariance_type].n_params(k, d) + k * d + k - 1)


def bic(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Bayesian information criterion (lower is better).

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([1.0]), jnp.zeros((1, 2)), jnp.eye(2)[None])
    >>> X = jax.random.normal(jax.random.key(0), (100, 2))
    >>> bool(gmm.bic(g, X) > gmm.aic(g, X))  # log(100) > 2 per parameter
    True
    """
    mean_ll, n = _call(_score, gmm, X, "gmm.bic", pass_n=True)
    return -2 * mean_ll * n + n_parameters(gmm) * np.log(n)


def aic(gmm: GMM, X: ArrayLike) -> jax.Array:
    """Akaike information criterion (lower is better).

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([1.0]), jnp.zeros((1, 2)), jnp.eye(2)[None])
    >>> X = jax.random.normal(jax.random.key(0), (100, 2))
    >>> float(gmm.aic(g, X) - (-2 * gmm.score(g, X) * 100)) == 2 * gmm.n_parameters(g)
    True
    """
    mean_ll, n = _call(_score, gmm, X, "gmm.aic", pass_n=True)
    return -2 * mean_ll * n + 2 * n_parameters(gmm)
