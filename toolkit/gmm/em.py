"""One EM iteration (E-step, sufficient statistics, M-step) and the convergence loop."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jax.scipy.special import logsumexp

from .._buckets import pad_to, unpad
from .._checks import as_float_array, check_choice
from .._xla import row_sums
from .covariance import (COVARIANCE, _Stats, _log_det_chol, _log_gaussian, _needs_diagonal_fourth_moment,
                         _needs_fourth_moment, _params_from_stats, _rank_deficient)
from .options import _check_shrinkage
from .types import COVARIANCE_TYPES, GMM, _check_X, _check_gmm_X, _raise_for_rows, _row_summary


def _use_features(d, k, dtype, covariance_type, shrinkage):
    # The features take n * (d(d+1)/2 + d + 1) numbers; the direct path's (n, k, d)
    # temporaries take n * k * d. Keep memory in the same range; float64 only (see below).
    # A rule that needs fourth moments (Ledoit-Wolf) cannot use them: the features do
    # not give those.
    return (COVARIANCE[covariance_type].features and dtype == jnp.float64 and not _needs_fourth_moment(shrinkage)
            and d * (d + 1) // 2 + d + 1 <= 2 * k * d)


def _stats_from_resp(X, resp, covariance_type, shrinkage, F=None):
    """Sufficient statistics from ``X (n, d)`` and weighted responsibilities ``resp (n, k)``.

    ``F``: ``_features(X)`` when the feature path is used (one GEMM for nk, s1 and s2).
    """
    d = X.shape[1]
    if F is not None:
        return _stats_from_feature_sums(resp.T @ F, d)
    else:
        nk, s1 = jnp.sum(resp, 0), resp.T @ X
        if COVARIANCE[covariance_type].matrix:
            # Sum r x x^T - n_k mu mu^T: a third of the work of centred (n, k, d) products.
            # fit() centres X first so the subtraction loses nothing in practice.
            s2 = jnp.einsum("nk,ni,nj->kij", resp, X, X)
        else:
            s2 = resp.T @ (X * X)  # (k, d): the diagonal only
    if not _needs_fourth_moment(shrinkage):
        return _Stats(nk, s1, s2)
    x2 = jnp.sum(X * X, -1)
    s3, s4 = resp.T @ (x2[:, None] * X), resp.T @ (x2 * x2)
    if not _needs_diagonal_fourth_moment(shrinkage):
        return _Stats(nk, s1, s2, s3, s4)
    X3 = X * X * X
    return _Stats(nk, s1, s2, s3, s4, resp.T @ X3, resp.T @ (X3 * X))


def _stats_from_feature_sums(sf, d):
    """:class:`_Stats` from ``sf (k, p) = resp^T @ features`` (feature order of ``_features``)."""
    q = d * (d + 1) // 2
    i, j = np.triu_indices(d)
    s2 = jnp.zeros((sf.shape[0], d, d), sf.dtype).at[:, i, j].set(sf[:, :q]).at[:, j, i].set(sf[:, :q])
    return _Stats(sf[:, -1], sf[:, q:q + d], s2)


def _m_step(X, resp, reg_covar, covariance_type, shrinkage):
    """Parameters from responsibilities ``resp (n, k)`` (sample weights already folded in)."""
    return _params_from_stats(_stats_from_resp(X, resp, covariance_type, shrinkage), reg_covar,
                              covariance_type, shrinkage)


# --- float64 "full" EM on precomputed features -------------------------------------
# With F = [x_i x_j (i <= j), x, 1] (fixed during EM), both steps are one GEMM each:
# the E-step's Mahalanobis terms are F @ W (W from P = L L^T, P mu, mu^T P mu) and
# the M-step's sufficient statistics are resp^T @ F. Neither materialises an (n, k, d)
# array, which is what bounds the direct formulation. The expansion
# x^T P x - 2 x^T P mu + mu^T P mu cancels when |x| >> |x - mu|; fit() centres X and
# the path is used in float64 only, where that costs at most a few digits of 16.


def _features(X):
    n, d = X.shape
    i, j = np.triu_indices(d)
    return jnp.concatenate([X[:, i] * X[:, j], X, jnp.ones((n, 1), X.dtype)], axis=1)


def _feature_weights(g):
    """``(p, k)`` such that ``features(X) @ W`` is the weighted log density."""
    d = g.means.shape[-1]
    pc = g.precisions_cholesky
    P = pc @ jnp.swapaxes(pc, -1, -2)
    i, j = np.triu_indices(d)
    quad = P[:, i, j] * jnp.where(i == j, 1.0, 2.0).astype(P.dtype)
    Pm = jnp.einsum("kij,kj->ki", P, g.means)
    const = jnp.sum(Pm * g.means, -1)
    log_det = _log_det_chol(pc, "full", d)
    c0 = -0.5 * (d * jnp.log(2 * jnp.pi) + const) + log_det + jnp.log(g.weights)
    return jnp.concatenate([-0.5 * quad, Pm, c0[:, None]], axis=1).T


def _weighted_log_prob(gmm, X, F=None):
    """``(n, k)`` log(w_k N(x_n | k)); from the features ``F`` when given."""
    if F is not None:
        return F @ _feature_weights(gmm)
    return _log_gaussian(X, gmm.means, gmm.precisions_cholesky, gmm.covariance_type) + jnp.log(gmm.weights)[None]


def _e_step(gmm, X, sw):
    wlp = _weighted_log_prob(gmm, X)
    norm = logsumexp(wlp, axis=1)
    log_resp = wlp - norm[:, None]
    return jnp.sum(jnp.where(sw > 0, sw * norm, 0.0)) / jnp.sum(sw), log_resp


def _resp_from_log(wlp, sw):
    """``(sum_n sw_n log p(x_n), weighted responsibilities (n, k))`` with one exp."""
    m = jnp.max(wlp, axis=1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(wlp - m)
    tot = jnp.sum(e, axis=1, keepdims=True)
    norm = (m + jnp.log(tot))[:, 0]
    resp = e * (sw[:, None] / tot)
    # zero-weight rows (padding) must not bring their NaN/inf into the sum
    return jnp.sum(jnp.where(sw > 0, sw * norm, 0.0)), resp


# Few features x components (d = 2, k = 3: 18): the E-step and the statistics are
# written out elementwise and every sum is one variadic reduction, one pass over the
# data instead of two skinny GEMMs and a softmax (several passes on XLA's CPU backend).
_SMALL_FEATURE_TERMS = 32


def _small(d, k, dtype, covariance_type, shrinkage) -> bool:
    """Whether EM takes the one-pass path of :func:`_em_step_small`."""
    p = d * (d + 1) // 2 + d + 1
    return _use_features(d, k, dtype, covariance_type, shrinkage) and k * p <= _SMALL_FEATURE_TERMS


def _em_step_small(g, X, sw):
    """``(sum sw log p, feature sums (k, p))`` of one EM iteration in one pass.

    The same arithmetic as the feature path (``F @ W``, a max-shifted softmax, then
    ``resp^T @ F``) with the features formed on the fly from the columns of X.
    """
    W = _feature_weights(g)
    p, k = W.shape
    cols = [X[:, a] for a in range(X.shape[1])]
    i, j = np.triu_indices(len(cols))
    feats = [cols[a] * cols[b] for a, b in zip(i, j)] + cols  # the constant feature is implicit
    wlp = [sum(f * W[m, c] for m, f in enumerate(feats)) + W[p - 1, c] for c in range(k)]
    top = functools.reduce(jnp.maximum, wlp)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = [jnp.exp(v - top) for v in wlp]
    tot = sum(e)
    scale = sw / tot
    resp = [ec * scale for ec in e]
    # zero-weight rows (padding) must not bring their NaN/inf into the sum
    ll = jnp.where(sw > 0, sw * (top + jnp.log(tot)), 0.0)
    # per component: the feature sums in the order of _features, the constant one last
    sums = row_sums(ll, *(t for r in resp for t in [r * f for f in feats] + [r]))
    return sums[0], jnp.stack(sums[1:]).reshape(k, p)


def _e_stats(g, X, sw, F, covariance_type, shrinkage, small=False):
    """The E-step over (part of) the data and its sufficient statistics:
    ``(sum sw log p under g, _Stats)``. Every fitting path calls this one function:
    in memory (:func:`_em_step`), streaming (summed over batches) and online.

    ``F``: ``_features(X)`` where the feature path is used, else None; ``small``: the
    one-pass path of :func:`_em_step_small`.
    """
    if small:
        ll, sf = _em_step_small(g, X, sw)
        return ll, _stats_from_feature_sums(sf, X.shape[1])
    ll, resp = _resp_from_log(_weighted_log_prob(g, X, F), sw)
    return ll, _stats_from_resp(X, resp, covariance_type, shrinkage, F)


def _em_step(g, X, sw, F, reg_covar, covariance_type, shrinkage, small=False):
    """One EM iteration: ``(sum sw log p under g, stats, new g)``; the M-step is
    :func:`toolkit.gmm.covariance._params_from_stats`, as in every other path."""
    ll, st = _e_stats(g, X, sw, F, covariance_type, shrinkage, small)
    return ll, st, _params_from_stats(st, reg_covar, covariance_type, shrinkage)


# ----------------------------------------------------------------------------- public API


@jax.jit
def _e_step_jit(gmm, X, sw):
    return _e_step(gmm, X, sw), _row_summary(X)
_m_step_jit = jax.jit(_m_step, static_argnums=(3, 4))


def e_step(gmm: GMM, X: ArrayLike, sample_weight: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
    """E-step: ``(mean log-likelihood, log_resp (n, k))``.

    >>> from toolkit import gmm
    >>> g = gmm.from_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [4.0, 0.0]]),
    ...                          jnp.stack([jnp.eye(2)] * 2))
    >>> mean_ll, log_resp = gmm.e_step(g, jnp.array([[0.0, 0.0], [4.0, 0.0]]))
    >>> jnp.exp(log_resp).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    X, n = _check_gmm_X(gmm, X, "gmm.e_step")
    sw = np.ones(n, X.dtype) if sample_weight is None else as_float_array(sample_weight, "sample_weight",
                                                                          "gmm.e_step", dtype=X.dtype)
    if sw.shape != (n,):
        raise ValueError(f"gmm.e_step: sample_weight must have shape ({n},), got {tuple(sw.shape)}")
    (mean_ll, log_resp), summary = _e_step_jit(gmm, X, pad_to(sw, X.shape[0]))  # padding rows weigh nothing
    _raise_for_rows(summary, X, "gmm.e_step", "X", n=n)
    return mean_ll, unpad(log_resp, n)


def m_step(X: ArrayLike, log_resp: ArrayLike, *, covariance_type: str = "full", reg_covar: float = 1e-6,
           shrinkage: float | str | None = None, shrinkage_target: str = "identity",
           sample_weight: ArrayLike | None = None) -> GMM:
    """M-step: the mixture maximising the expected log-likelihood under ``exp(log_resp) (n, k)``.

    >>> from toolkit import gmm
    >>> X = jnp.array([[0.0, 0.0], [2.0, 0.0], [10.0, 1.0], [12.0, 1.0]])
    >>> log_resp = jnp.where(jnp.array([[1, 0], [1, 0], [0, 1], [0, 1]]) == 1, 0.0, -jnp.inf)
    >>> g = gmm.m_step(X, log_resp, covariance_type="diag", reg_covar=0.0)
    >>> g.weights.round(6).tolist(), g.means.round(6).tolist(), g.covariances.round(6).tolist()
    ([0.5, 0.5], [[1.0, 0.0], [11.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
    """
    X = _check_X(X, "gmm.m_step")
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", "gmm.m_step")
    shrinkage = _check_shrinkage(shrinkage, covariance_type, "gmm.m_step", shrinkage_target)
    resp = jnp.exp(jnp.asarray(log_resp, X.dtype))
    if sample_weight is not None:
        resp = resp * jnp.asarray(sample_weight, X.dtype)[:, None]
    return _m_step_jit(X, resp, reg_covar, covariance_type, shrinkage)


def _converged(new, old, tol):
    """The bound changed by less than ``tol`` -- or, for ``tol > 0``, by less than its own
    round-off (16 eps |bound|): float32 cannot resolve 1e-3 on a total ELBO of 1e4, and
    would otherwise run to max_iter. ``tol = 0`` still means "run max_iter"."""
    floor = jnp.where(tol > 0, 16 * jnp.finfo(new.dtype).eps * jnp.abs(new), 0.0)
    return jnp.abs(new - old) < jnp.maximum(tol, floor)


def _iterate(step, g0, st0, tol, max_iter, lb0, hist_len):
    """The convergence loop every fit shares (EM and variational Bayes), one while_loop:
    ``step(g) -> (bound, stats, new g)``, until the bound changes by < tol (see
    :func:`_converged`) or
    ``max_iter`` steps. ``lb0``: the bound the first step is compared with (-inf, or a
    continued fit's); ``max_iter`` may be traced when the history's static length
    ``hist_len >= max_iter``; entries past the last step repeat its bound.
    Returns ``(g, n_iter, bound, history, converged, last stats)``."""
    dt = st0.s1.dtype

    def cond(s):
        _, it, lb, prev, _, _, _ = s
        return (it < max_iter) & ~_converged(lb, prev, tol)

    def body(s):
        g, it, lb, _, hist, _, _ = s
        new_lb, st, g = step(g)
        return g, it + 1, new_lb, lb, hist.at[it].set(new_lb), _converged(new_lb, lb, tol), st

    s0 = (g0, jnp.asarray(0), jnp.asarray(lb0, dt), jnp.asarray(jnp.inf, dt),
          jnp.full((hist_len,), jnp.nan, dt), jnp.asarray(False), st0)
    g, it, lb, _, hist, conv, st = lax.while_loop(cond, body, s0)
    return g, it, lb, jnp.where(jnp.arange(hist_len) >= it, lb, hist), conv, st


def _em(gmm0, X, sw, reg_covar, tol, covariance_type, shrinkage, max_iter, lb0, hist_len=None):
    """EM from gmm0 (:func:`_iterate`); the lower bound is taken at each E-step (as sklearn)."""
    hist_len = max_iter if hist_len is None else hist_len
    dt = X.dtype
    n, d = X.shape
    k = gmm0.means.shape[0]
    small = _small(d, k, dt, covariance_type, shrinkage)
    F = _features(X) if _use_features(d, k, dt, covariance_type, shrinkage) and not small else None
    wtot = jnp.sum(sw)

    def step(g):
        ll, st, g = _em_step(g, X, sw, F, reg_covar, covariance_type, shrinkage, small)
        return ll / wtot, st, g

    st0 = _stats_from_resp(X, jnp.zeros((n, k), dt), covariance_type, shrinkage)
    g, it, lb, hist, conv, st = _iterate(step, gmm0, st0, tol, max_iter, lb0, hist_len)
    return g, it, lb, hist, conv, _rank_deficient(st, covariance_type)
