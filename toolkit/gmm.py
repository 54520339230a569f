"""Gaussian-mixture EM as pure functions over a :class:`GMM` pytree.

Covariance shapes follow scikit-learn:

==============  ===================  ==========================
covariance_type  covariances          precisions_cholesky
==============  ===================  ==========================
"full"          ``(k, d, d)``        ``(k, d, d)``
"tied"          ``(d, d)``           ``(d, d)``
"diag"          ``(k, d)``           ``(k, d)``
"spherical"     ``(k,)``             ``(k,)``
==============  ===================  ==========================

Everything runs in Cholesky-of-precision form (triangular solves, log-sum-exp), never
with explicit inverses or determinants. ``reg_covar`` is added to every variance, and
``shrinkage`` pulls each covariance toward a scaled identity; if a covariance is still
numerically singular (``reg_covar=0`` on rank-deficient data) a jitter of 1e-6 times
its mean variance is added before factorising, so EM never produces NaN.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from ._checks import as_float_array, check_choice
from ._xla import row_sums, tuned_jit

__all__ = [
    "GMM",
    "FitInfo",
    "fit",
    "e_step",
    "m_step",
    "log_prob",
    "score",
    "predict",
    "predict_proba",
    "sample",
    "bic",
    "aic",
    "weighted_moments",
    "n_parameters",
    "from_covariances",
    "shard_rows",
    "fit_batches",
    "fit_online",
    "NpyBatches",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INITS = ("kmeans++", "kmeans", "random", "random_from_data")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weights", "means", "covariances", "precisions_cholesky"],
                   meta_fields=["covariance_type"])
@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture (a pytree; ``covariance_type`` is static metadata).

    Attributes:
      weights: ``(k,)`` mixing weights summing to 1.
      means: ``(k, d)``.
      covariances: see the module table.
      precisions_cholesky: ``L`` with ``precision = L L^T`` (module table).
      covariance_type: "full" | "tied" | "diag" | "spherical".
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    covariance_type: str = "full"


class FitInfo(NamedTuple):
    """Details of :func:`fit`.

    Attributes:
      converged: the lower bound changed by less than ``tol`` (False also for NaN/inf data
        under jit).
      n_iter: EM iterations run.
      lower_bound: mean per-sample log-likelihood at the last E-step (scikit-learn's
        ``lower_bound_``), of the best restart.
      history: ``(max_iter,)`` lower bound per iteration; after ``n_iter`` it repeats
        the last value.
      lower_bounds: ``(n_init,)`` final lower bound of every restart.
      rank_deficient: ``(k,)`` bool, True where a component's weighted scatter (before
        ``shrinkage`` and ``reg_covar``) is numerically singular (smallest eigenvalue
        below sqrt(eps) times the largest): its points span fewer than d dimensions,
        and only the regularisation keeps its covariance invertible. "tied" repeats
        the one flag.
    """

    converged: jax.Array
    n_iter: jax.Array
    lower_bound: jax.Array
    history: jax.Array
    lower_bounds: jax.Array
    rank_deficient: jax.Array


# ----------------------------------------------------------------------------- maths


def weighted_moments(X, w):
    """Weighted mean and population covariance.

    Args:
      X: ``(n, d)`` points.
      w: ``(..., n)`` non-negative weights (a batch of weightings gives batched moments).
    Returns:
      ``(mean (..., d), cov (..., d, d))`` with ``cov = sum w (x - mean)(x - mean)^T / sum w``.

    >>> W = jnp.array([[0.2, 0.1, 0.0], [0.1, 0.2, 0.4]])   # an image as weights on its grid
    >>> ij = jnp.stack(jnp.meshgrid(jnp.arange(2.), jnp.arange(3.), indexing="ij"), -1).reshape(-1, 2)
    >>> weighted_moments(ij, W.ravel())[0]
    Array([0.7, 1.1], dtype=float32)
    """
    X = as_float_array(X, "X", "gmm.weighted_moments")
    w = as_float_array(w, "w", "gmm.weighted_moments", dtype=X.dtype)
    if X.ndim != 2 or w.shape[-1:] != X.shape[:1]:
        raise ValueError(f"gmm.weighted_moments: X must be (n, d) and w (..., n); got X {tuple(X.shape)} "
                         f"and w {tuple(w.shape)}")
    return _weighted_moments(X, w)


@jax.jit
def _weighted_moments(X, w):
    tot = jnp.sum(w, -1)
    mean = (w @ X) / tot[..., None]
    diff = X - mean[..., None, :]
    cov = jnp.einsum("...n,...ni,...nj->...ij", w, diff, diff) / tot[..., None, None]
    return mean, cov


def _chol_precision(cov, covariance_type, floor=None):
    """Cholesky factor of the precision: L = (chol(cov))^{-T}, via a triangular solve.

    Safety net (documented in the module): a numerically singular covariance (possible
    only with ``reg_covar=0``) gets a jitter of 1e-6 times the larger of its mean
    variance and ``floor`` (the data's mean variance in EM; 1 if neither is positive).
    """
    eps = jnp.finfo(cov.dtype).eps
    floor = jnp.zeros((), cov.dtype) if floor is None else floor
    if covariance_type in ("diag", "spherical"):
        scale = jnp.mean(cov, -1, keepdims=True) if covariance_type == "diag" else cov
        big = jnp.maximum(scale, floor)
        jitter = 1e-6 * jnp.where(big > 0, big, 1.0)
        return lax.rsqrt(jnp.where(cov > eps * jnp.maximum(scale, 0.0), cov, cov + jitter))
    d = cov.shape[-1]
    eye = jnp.eye(d, dtype=cov.dtype)
    scale = jnp.trace(cov, axis1=-2, axis2=-1)[..., None, None] / d
    c = jnp.linalg.cholesky(cov)
    diag = jnp.diagonal(c, axis1=-2, axis2=-1)[..., None, :]
    bad = jnp.any(~jnp.isfinite(c), axis=(-2, -1), keepdims=True) | \
        jnp.any(diag <= eps * jnp.sqrt(jnp.maximum(scale, 0.0)), axis=(-2, -1), keepdims=True)
    big = jnp.maximum(scale, floor)
    jitter = 1e-6 * jnp.where(big > 0, big, 1.0)
    # The jittered factorisation takes its input from the first one's verdict, so the
    # two batched LAPACK calls never run at once (independent ones deadlocked XLA's CPU
    # worker pool on 2 cores with jaxlib 0.10), and it is skipped when nothing is bad.
    c = lax.cond(jnp.any(bad), lambda: jnp.linalg.cholesky(cov + jnp.where(bad, jitter, 0.0) * eye),
                 lambda: c)
    return jnp.swapaxes(solve_triangular(c, jnp.broadcast_to(eye, c.shape), lower=True), -1, -2)


def _log_det_chol(pc, covariance_type, d):
    if covariance_type == "full":
        return jnp.sum(jnp.log(jnp.diagonal(pc, axis1=-2, axis2=-1)), -1)
    if covariance_type == "tied":
        return jnp.sum(jnp.log(jnp.diagonal(pc)))
    if covariance_type == "diag":
        return jnp.sum(jnp.log(pc), -1)
    return d * jnp.log(pc)


def _log_gaussian(X, means, pc, covariance_type):
    """log N(x_n | mu_k, Sigma_k) for all n, k: ``(n, k)``."""
    n, d = X.shape
    log_det = _log_det_chol(pc, covariance_type, d)
    if covariance_type == "full":
        y = jnp.einsum("nd,kde->nke", X, pc) - jnp.einsum("kd,kde->ke", means, pc)[None]
        maha = jnp.sum(y * y, -1)
    elif covariance_type == "tied":
        y = (X @ pc)[:, None, :] - (means @ pc)[None]
        maha = jnp.sum(y * y, -1)
    elif covariance_type == "diag":
        p = pc * pc
        maha = (X * X) @ p.T - 2.0 * X @ (means * p).T + jnp.sum(means * means * p, -1)[None]
    else:
        p = pc * pc
        maha = jnp.sum(X * X, -1)[:, None] * p[None] - 2.0 * (X @ means.T) * p[None] \
            + (jnp.sum(means * means, -1) * p)[None]
    return -0.5 * (d * jnp.log(2 * jnp.pi) + maha) + log_det  # log_det: (k,) or scalar (tied)


def _shrink_to_identity(S, a, d):
    """(1 - a) S + a (tr S / d) I for covariance(s) S (..., d, d) and weight(s) a."""
    mu = jnp.trace(S, axis1=-2, axis2=-1) / d
    a = jnp.broadcast_to(jnp.asarray(a, S.dtype), mu.shape)
    return (1.0 - a)[..., None, None] * S + (a * mu)[..., None, None] * jnp.eye(d, dtype=S.dtype)


def _oas_alpha(S, n_eff, d):
    """Chen et al. (2010) OAS shrinkage, as sklearn.covariance.oas with n -> n_eff."""
    mu = jnp.trace(S, axis1=-2, axis2=-1) / d
    alpha = jnp.sum(S * S, axis=(-2, -1)) / d ** 2
    num = alpha + mu ** 2
    den = (n_eff + 1.0) * (alpha - mu ** 2 / d)
    return jnp.where(den > 0, jnp.minimum(num / jnp.where(den > 0, den, 1.0), 1.0), 1.0)


def _ledoit_wolf_alpha(S, m4, n_eff, d):
    """Ledoit & Wolf (2004) shrinkage with weighted samples (sklearn's formula, n -> n_eff).

    m4 = sum_n r_n |x_n - mu|^4 (the fourth-moment term).
    """
    tr = jnp.trace(S, axis1=-2, axis2=-1)
    mu = tr / d
    fro2 = jnp.sum(S * S, axis=(-2, -1))
    beta = (m4 / n_eff - fro2) / (d * n_eff)
    delta = (fro2 - 2 * mu * tr + d * mu ** 2) / d
    beta = jnp.minimum(beta, delta)
    return jnp.where(delta > 0, jnp.clip(beta / jnp.where(delta > 0, delta, 1.0), 0.0, 1.0), 0.0)


class _Stats(NamedTuple):
    """Weighted sufficient statistics of EM over (part of) the data: they add across parts.

    ``resp`` below already includes the sample weights.
    """

    nk: jax.Array        # (k,)       sum_n r_nk
    s1: jax.Array        # (k, d)     sum_n r_nk x_n
    s2: jax.Array        # (k, d, d)  sum r x x^T (full/tied), or (k, d) sum r x*x (diag/spherical)
    s3: Any = None       # (k, d)     sum r |x|^2 x   (Ledoit-Wolf only)
    s4: Any = None       # (k,)       sum r |x|^4     (Ledoit-Wolf only)


def _use_features(d, k, dtype, covariance_type, shrinkage):
    # The features take n * (d(d+1)/2 + d + 1) numbers; the direct path's (n, k, d)
    # temporaries take n * k * d. Keep memory in the same range; float64 only (see below).
    # Ledoit-Wolf needs fourth moments, which the features do not give.
    return (covariance_type == "full" and dtype == jnp.float64 and shrinkage != "ledoit_wolf"
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
        if covariance_type in ("full", "tied"):
            # Sum r x x^T - n_k mu mu^T: a third of the work of centred (n, k, d) products.
            # fit() centres X first so the subtraction loses nothing in practice.
            s2 = jnp.einsum("nk,ni,nj->kij", resp, X, X)
        else:
            s2 = resp.T @ (X * X)  # (k, d): the diagonal only
    if shrinkage != "ledoit_wolf":
        return _Stats(nk, s1, s2)
    x2 = jnp.sum(X * X, -1)
    return _Stats(nk, s1, s2, resp.T @ (x2[:, None] * X), resp.T @ (x2 * x2))


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


def _scatter(st, covariance_type):
    """``(nk, means, S)``: S the weighted scatter per component (full/tied: ``(k, d, d)``
    symmetrised; diag/spherical: its diagonal ``(k, d)``), before shrinkage and reg_covar."""
    nk = st.nk + 10 * jnp.finfo(st.s1.dtype).eps
    means = st.s1 / nk[:, None]
    if covariance_type in ("full", "tied"):
        S = st.s2 / nk[:, None, None] - jnp.einsum("ki,kj->kij", means, means)
        return nk, means, 0.5 * (S + jnp.swapaxes(S, -1, -2))
    return nk, means, jnp.maximum(st.s2 / nk[:, None] - means * means, 0.0)


def _fourth_moment(st, means):
    """m4_k = sum_n r_nk |x_n - mu_k|^4, expanded in the streamable sums s1..s4."""
    c = jnp.sum(means * means, -1)
    m4 = (st.s4 - 4 * jnp.sum(means * st.s3, -1) + 4 * jnp.einsum("ki,kij,kj->k", means, st.s2, means)
          + 2 * c * jnp.trace(st.s2, axis1=-2, axis2=-1) - 4 * c * jnp.sum(means * st.s1, -1) + c * c * st.nk)
    return jnp.maximum(m4, 0.0)


def _params_from_stats(st, reg_covar, covariance_type, shrinkage):
    """M-step from the sufficient statistics :class:`_Stats`."""
    nk, means, S = _scatter(st, covariance_type)
    d = means.shape[-1]
    if covariance_type in ("full", "tied"):
        if covariance_type == "tied":
            S = jnp.sum(nk[:, None, None] * S, 0) / jnp.sum(nk)
        if shrinkage is not None:
            n_eff = nk if covariance_type == "full" else jnp.sum(nk)
            if shrinkage == "ledoit_wolf":
                m4 = _fourth_moment(st, means)
                a = _ledoit_wolf_alpha(S, m4 if covariance_type == "full" else jnp.sum(m4), n_eff, d)
            elif shrinkage == "oas":
                a = _oas_alpha(S, n_eff, d)
            else:
                a = shrinkage
            S = _shrink_to_identity(S, a, d)
        cov = S + reg_covar * jnp.eye(d, dtype=means.dtype)
        total_second = jnp.trace(st.s2, axis1=-2, axis2=-1)
    else:
        var = S
        if shrinkage is not None and not isinstance(shrinkage, str):
            var = (1 - shrinkage) * var + shrinkage * jnp.mean(var, -1, keepdims=True)
        cov = var + reg_covar
        if covariance_type == "spherical":
            cov = jnp.mean(cov, -1)
        total_second = jnp.sum(st.s2, -1)
    weights = nk / jnp.sum(nk)
    floor = jnp.sum(total_second) / (d * jnp.sum(nk))  # mean second moment of the data
    return GMM(weights, means, cov, _chol_precision(cov, covariance_type, floor), covariance_type)


def _rank_deficient(st, covariance_type):
    """``(k,)`` bool: the component's weighted scatter (before shrinkage and reg_covar) has
    an eigenvalue below sqrt(eps) times its largest, so its points span fewer than d
    dims, or its whole scatter is below sqrt(eps) times the data's mean second moment
    (a component that owns a single point, where round-off alone sets the eigenvalues)."""
    nk, _, S = _scatter(st, covariance_type)
    if covariance_type == "tied":
        S = jnp.sum(nk[:, None, None] * S, 0) / jnp.sum(nk)
    ev = jnp.linalg.eigvalsh(S) if covariance_type in ("full", "tied") else S
    rtol = jnp.sqrt(jnp.finfo(ev.dtype).eps)
    top = jnp.max(jnp.abs(ev), -1)
    second = jnp.trace(st.s2, axis1=-2, axis2=-1) if st.s2.ndim == 3 else jnp.sum(st.s2, -1)
    data_scale = jnp.sum(second) / (ev.shape[-1] * jnp.sum(st.nk))  # fit() centres X: ~ the variance
    bad = (jnp.min(ev, -1) <= rtol * top) | (top <= rtol * data_scale)
    return jnp.broadcast_to(bad, nk.shape)


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
    return jnp.sum(sw * norm) / jnp.sum(sw), log_resp


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


def _em_step(g, X, sw, F, reg_covar, covariance_type, shrinkage, small=False):
    """One EM iteration: ``(sum sw log p under g, stats, new g)``."""
    if small:
        ll, sf = _em_step_small(g, X, sw)
        st = _stats_from_feature_sums(sf, X.shape[1])
    else:
        ll, resp = _resp_from_log(_weighted_log_prob(g, X, F), sw)
        st = _stats_from_resp(X, resp, covariance_type, shrinkage, F)
    return ll, st, _params_from_stats(st, reg_covar, covariance_type, shrinkage)


# ----------------------------------------------------------------------------- validation


def _check_X(X, where, dtype=None):
    X = as_float_array(X, "X", where, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    return X


def _check_gmm_X(gmm, X, where):
    X = _check_X(X, where, dtype=jnp.result_type(gmm.means.dtype, jnp.result_type(X)))
    if X.shape[1] != gmm.means.shape[-1]:
        raise ValueError(f"{where}: X has {X.shape[1]} features but the mixture has {gmm.means.shape[-1]}")
    return X


@jax.jit
def _first_bad_row(X):
    """Index of the first row holding NaN/inf, or -1 (works on sharded arrays on device)."""
    bad = ~jnp.all(jnp.isfinite(X), axis=1)
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)


def _check_finite_rows(X, where, name, what=""):
    """ValueError naming the first non-finite row of concrete ``X``; traced X is left alone
    (NaN/inf then shows in the results, see ``FitInfo.converged``)."""
    if isinstance(X, jax.core.Tracer):
        return
    row = int(_first_bad_row(X))
    if row >= 0:
        raise ValueError(f"{where}: {what}{name} contains NaN or inf (first at row {row})")


def from_covariances(weights, means, covariances, covariance_type: str = "full") -> GMM:
    """Build a :class:`GMM` from weights, means and covariances (computes precisions_cholesky)."""
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", "gmm.from_covariances")
    means = as_float_array(means, "means", "gmm.from_covariances")
    cov = as_float_array(covariances, "covariances", "gmm.from_covariances", dtype=means.dtype)
    w = as_float_array(weights, "weights", "gmm.from_covariances", dtype=means.dtype)
    return GMM(w, means, cov, _chol_precision(cov, covariance_type), covariance_type)


# ----------------------------------------------------------------------------- public API


def e_step(gmm: GMM, X, sample_weight=None):
    """E-step: ``(mean log-likelihood, log_resp (n, k))``."""
    X = _check_gmm_X(gmm, X, "gmm.e_step")
    sw = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    return jax.jit(_e_step)(gmm, X, sw)


def m_step(X, log_resp, *, covariance_type: str = "full", reg_covar: float = 1e-6, shrinkage=None,
           sample_weight=None) -> GMM:
    """M-step: the mixture maximising the expected log-likelihood under ``exp(log_resp) (n, k)``."""
    X = _check_X(X, "gmm.m_step")
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", "gmm.m_step")
    shrinkage = _check_shrinkage(shrinkage, covariance_type, "gmm.m_step")
    resp = jnp.exp(jnp.asarray(log_resp, X.dtype))
    if sample_weight is not None:
        resp = resp * jnp.asarray(sample_weight, X.dtype)[:, None]
    return jax.jit(_m_step, static_argnums=(3, 4))(X, resp, reg_covar, covariance_type, shrinkage)


def log_prob(gmm: GMM, X):
    """Log density of the mixture at each point: ``(n,)``."""
    X = _check_gmm_X(gmm, X, "gmm.log_prob")
    return jax.jit(lambda g, X: logsumexp(_weighted_log_prob(g, X), axis=1))(gmm, X)


def score(gmm: GMM, X):
    """Mean log-likelihood per sample (scikit-learn's ``score``)."""
    return jnp.mean(log_prob(gmm, X))


def predict_proba(gmm: GMM, X):
    """Posterior component probabilities ``(n, k)``."""
    X = _check_gmm_X(gmm, X, "gmm.predict_proba")
    return jax.jit(lambda g, X: jax.nn.softmax(_weighted_log_prob(g, X), axis=1))(gmm, X)


def predict(gmm: GMM, X):
    """Most probable component per point ``(n,)``."""
    X = _check_gmm_X(gmm, X, "gmm.predict")
    return jax.jit(lambda g, X: jnp.argmax(_weighted_log_prob(g, X), axis=1))(gmm, X)


def _full_cov(gmm):
    k, d = gmm.means.shape
    t = gmm.covariance_type
    if t == "full":
        return gmm.covariances
    if t == "tied":
        return jnp.broadcast_to(gmm.covariances, (k, d, d))
    if t == "diag":
        return jax.vmap(jnp.diag)(gmm.covariances)
    return gmm.covariances[:, None, None] * jnp.eye(d, dtype=gmm.means.dtype)


def sample(key, gmm: GMM, n: int):
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
    cov = {"full": k * d * (d + 1) / 2, "tied": d * (d + 1) / 2, "diag": k * d, "spherical": k}[gmm.covariance_type]
    return int(cov + k * d + k - 1)


def bic(gmm: GMM, X):
    """Bayesian information criterion (lower is better)."""
    X = _check_gmm_X(gmm, X, "gmm.bic")
    return -2 * score(gmm, X) * X.shape[0] + n_parameters(gmm) * np.log(X.shape[0])


def aic(gmm: GMM, X):
    """Akaike information criterion (lower is better)."""
    X = _check_gmm_X(gmm, X, "gmm.aic")
    return -2 * score(gmm, X) * X.shape[0] + 2 * n_parameters(gmm)


# ----------------------------------------------------------------------------- initialisation


def _draw(key, p, block=1024):
    """One index drawn with probability proportional to ``p (n,) >= 0`` by inverting the CDF.

    Zero-weight rows never change the draw, wherever they are, so a padded or sharded
    array gives the same index as the original. The CDF is taken in two levels (sums of
    ``block`` rows, then one block) rather than by a cumsum over all rows: XLA
    partitions a long cumsum over sharded rows very badly (seconds for 1e5 rows).
    """
    n = p.shape[0]
    B = -(-n // block)
    q = jnp.pad(p, (0, B * block - n)).reshape(B, block)
    c = jnp.cumsum(jnp.sum(q, 1))
    u = jax.random.uniform(key, (), p.dtype) * c[-1]
    b = jnp.minimum(jnp.sum(c <= u), B - 1)
    u = u - jnp.where(b > 0, c[jnp.maximum(b - 1, 0)], 0.0)
    within = jnp.cumsum(jax.nn.one_hot(b, B, dtype=p.dtype) @ q)  # the chosen block's rows
    i = b * block + jnp.minimum(jnp.sum(within <= u), block - 1)
    last = jnp.max(jnp.where(p > 0, jnp.arange(n), 0))
    return jnp.minimum(i, last)


def _row_uniform(key, rows, k):
    """``(len(rows), k)`` uniforms, row r from ``fold_in(key, r)``: the same numbers for a
    row whether it is drawn in memory, in a batch or on a shard."""
    return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(key, r), (k,)))(rows)


def _kmeans_pp(key, X, sw, k):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant), weighted.

    Each step draws ``2 + floor(log k)`` candidates by D^2 sampling and keeps the one that
    lowers the potential most: plain k-means++ often leaves a cluster unseeded in
    higher dimensions, where within-cluster distances are not small next to the gaps.
    """
    n_cand = 2 + int(np.log(k))
    k0, key = jax.random.split(key)
    first = _draw(k0, sw)
    centers = jnp.zeros((k, X.shape[1]), X.dtype).at[0].set(X[first])
    d2 = jnp.sum((X - X[first]) ** 2, -1)

    def body(i, s):
        centers, d2, key = s
        key, sub = jax.random.split(key)
        p = sw * d2
        p = jnp.where(jnp.sum(p) > 0, p, sw)
        cand = jax.vmap(lambda kk: _draw(kk, p))(jax.random.split(sub, n_cand))
        new_d2 = jnp.minimum(d2[None], jnp.sum((X[None] - X[cand][:, None]) ** 2, -1))  # (n_cand, n)
        best = jnp.argmin(new_d2 @ sw)
        return centers.at[i].set(X[cand[best]]), new_d2[best], key

    centers, _, _ = lax.fori_loop(1, k, body, (centers, d2, key))
    return centers


def _choose_rows(key, sw, k):
    """``k`` distinct rows drawn with probability proportional to ``sw``, without replacement."""
    def body(i, s):
        idx, p = s
        j = _draw(jax.random.fold_in(key, i), p)
        return idx.at[i].set(j.astype(idx.dtype)), p.at[j].set(0.0)

    idx, _ = lax.fori_loop(0, k, body, (jnp.zeros(k, jnp.int32), sw))
    return idx


def _assign(X, c):
    """Nearest centre of each row: ``(n,)``."""
    d2 = jnp.sum(X * X, -1)[:, None] - 2 * X @ c.T + jnp.sum(c * c, -1)[None]
    return jnp.argmin(d2, axis=1)


def _lloyd_sums(X, sw, c):
    """``(sum of the weighted rows per centre (k, d), their weight (k,))``."""
    onehot = jax.nn.one_hot(_assign(X, c), c.shape[0], dtype=X.dtype) * sw[:, None]
    return onehot.T @ X, jnp.sum(onehot, 0)


def _lloyd_update(c, sums, cnt):
    new = sums / jnp.where(cnt > 0, cnt, 1.0)[:, None]
    return jnp.where((cnt > 0)[:, None], new, c)  # an empty cluster keeps its centre


def _lloyd_iters(init):
    return 5 if init == "kmeans++" else 100


def _lloyd_centers(X, sw, centers, n_iter):
    return lax.fori_loop(0, n_iter, lambda _, c: _lloyd_update(c, *_lloyd_sums(X, sw, c)), centers)


def _lloyd(X, sw, centers, n_iter):
    c = _lloyd_centers(X, sw, centers, n_iter)
    return jax.nn.one_hot(_assign(X, c), c.shape[0], dtype=X.dtype)


def _init_resp(key, X, sw, k, init, rows=None):
    """Initial responsibilities ``(n, k)`` (before sample weights). ``rows``: the rows'
    global indices (default ``arange(n)``), so that random draws do not depend on
    how the data is split."""
    n = X.shape[0]
    if init == "random":
        r = _row_uniform(key, jnp.arange(n) if rows is None else rows, k).astype(X.dtype)
        return r / jnp.sum(r, 1, keepdims=True)
    if init == "random_from_data":
        idx = _choose_rows(key, sw, k)
        return jnp.zeros((n, k), X.dtype).at[idx, jnp.arange(k)].set(1.0)
    centers = _kmeans_pp(key, X, sw, k)
    return _lloyd(X, sw, centers, _lloyd_iters(init))


# ----------------------------------------------------------------------------- fit


def _check_shrinkage(shrinkage, covariance_type, where):
    if shrinkage is None:
        return None
    if isinstance(shrinkage, str):
        check_choice(shrinkage, ("ledoit_wolf", "oas"), "shrinkage", where)
        if covariance_type not in ("full", "tied"):
            raise ValueError(f"{where}: shrinkage={shrinkage!r} needs covariance_type 'full' or 'tied', "
                             f"got {covariance_type!r} (use a float shrinkage for 'diag')")
        return shrinkage
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1:
        raise ValueError(f"{where}: shrinkage must be None, 'ledoit_wolf', 'oas' or a float in [0, 1], "
                         f"got {shrinkage!r}")
    return float(shrinkage)


def _check_fit_options(where, d, dtype, n_components, covariance_type, reg_covar, shrinkage, init, n_init,
                       max_iter):
    """Validate fit's options; returns ``(shrinkage, gmm_init or None)``."""
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"{where}: n_components must be a positive int, got {n_components!r}")
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", where)
    shrinkage = _check_shrinkage(shrinkage, covariance_type, where)
    if not isinstance(reg_covar, (int, float)) or reg_covar < 0:
        raise ValueError(f"{where}: reg_covar must be a float >= 0, got {reg_covar!r}")
    if not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(f"{where}: n_init must be a positive int, got {n_init!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"{where}: max_iter must be a positive int, got {max_iter!r}")
    if isinstance(init, GMM):
        if init.covariance_type != covariance_type or init.means.shape != (n_components, d):
            raise ValueError(f"{where}: init GMM has covariance_type {init.covariance_type!r} and means "
                             f"{tuple(init.means.shape)}; expected {covariance_type!r} and {(n_components, d)}")
        return shrinkage, jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), init)
    check_choice(init, INITS, "init", where)
    return shrinkage, None


def _em(gmm0, X, sw, reg_covar, tol, covariance_type, shrinkage, max_iter, lb0):
    """EM from gmm0 in one while_loop; the lower bound is taken at each E-step (as sklearn).

    ``lb0``: the lower bound the first iteration is compared with (-inf, or the previous
    fit's when continuing one, as scikit-learn's warm_start)."""
    dt = X.dtype
    n, d = X.shape
    k = gmm0.means.shape[0]
    small = _small(d, k, dt, covariance_type, shrinkage)
    F = _features(X) if _use_features(d, k, dt, covariance_type, shrinkage) and not small else None
    wtot = jnp.sum(sw)

    def cond(s):
        _, it, lb, prev, _, _, _ = s
        return (it < max_iter) & ~(jnp.abs(lb - prev) < tol)

    def body(s):
        g, it, lb, _, hist, _, _ = s
        ll, st, g = _em_step(g, X, sw, F, reg_covar, covariance_type, shrinkage, small)
        new_lb = ll / wtot
        return g, it + 1, new_lb, lb, hist.at[it].set(new_lb), jnp.abs(new_lb - lb) < tol, st

    st0 = _stats_from_resp(X, jnp.zeros((n, k), dt), covariance_type, shrinkage)
    s0 = (gmm0, jnp.asarray(0), jnp.asarray(lb0, dt), jnp.asarray(jnp.inf, dt),
          jnp.full((max_iter,), jnp.nan, dt), jnp.asarray(False), st0)
    g, it, lb, _, hist, conv, st = lax.while_loop(cond, body, s0)
    hist = jnp.where(jnp.arange(max_iter) >= it, lb, hist)
    return g, it, lb, hist, conv, _rank_deficient(st, covariance_type)


def _best_restart(gs, its, lbs, hists, convs, deficient, center, data_ok):
    """The restart with the highest finite lower bound, moved back to the data's frame."""
    finite = jnp.isfinite(lbs)
    best = jnp.argmax(jnp.where(finite, lbs, -jnp.inf))
    g = jax.tree_util.tree_map(lambda a: a[best], gs)
    g = dataclasses.replace(g, means=g.means + center)
    info = FitInfo(converged=convs[best] & data_ok & finite[best], n_iter=its[best], lower_bound=lbs[best],
                   history=hists[best], lower_bounds=lbs, rank_deficient=deficient[best])
    return g, info


def _fit_impl(keys, X, sw, gmm_init, reg_covar, tol, k, covariance_type, shrinkage, init, max_iter, lb0):
    center = jnp.sum(sw[:, None] * X, 0) / jnp.sum(sw)
    Xc = X - center  # centring keeps the uncentred second-moment formulas accurate

    def one(key):
        if gmm_init is not None:
            g0 = dataclasses.replace(gmm_init, means=gmm_init.means - center)
        else:
            resp = _init_resp(key, Xc, sw, k, init)
            g0 = _m_step(Xc, resp * sw[:, None], reg_covar, covariance_type, shrinkage)
        return _em(g0, Xc, sw, reg_covar, tol, covariance_type, shrinkage, max_iter, lb0)

    return _best_restart(*jax.vmap(one)(keys), center, jnp.all(jnp.isfinite(X)))


_fit = jax.jit(_fit_impl, static_argnums=(6, 7, 8, 9, 10))
# the one-pass small path gains from XLA's fast-math reductions (and only it: the GEMM
# path runs slower with those options)
_fit_small = tuned_jit(_fit_impl, static_argnums=(6, 7, 8, 9, 10))


def fit(key, X, n_components: int, *, covariance_type: str = "full", reg_covar: float = 1e-6, shrinkage=None,
        init: Any = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3, sample_weight=None,
        prev_lower_bound: float | None = None):
    """Fit a Gaussian mixture by EM (one jitted ``lax.while_loop``; restarts vmapped).

    Args:
      key: ``jax.random`` key (initialisation).
      X: ``(n, d)`` data.
      n_components: k.
      covariance_type: "full" | "tied" | "diag" | "spherical".
      reg_covar: added to the diagonal of every covariance (>= 0).
      shrinkage: None, a float in [0, 1], "ledoit_wolf" or "oas": shrink each covariance
        toward ``(tr S / d) I`` (estimated per component from its weighted scatter).
      init: "kmeans++" (seeding + 5 Lloyd steps), "kmeans" (100 Lloyd steps),
        "random", "random_from_data", or a :class:`GMM` to warm-start from.
      n_init: restarts (vectorised); the best final lower bound wins.
      max_iter: EM iterations at most. tol: stop when the lower bound changes by < tol.
      sample_weight: ``(n,)`` non-negative weights.
      prev_lower_bound: when continuing an earlier fit (``init`` its mixture), its lower
        bound: the first iteration's change is measured from it, so a converged fit stops
        after one iteration (scikit-learn's ``warm_start``). Default: -inf.
    Returns:
      ``(GMM, FitInfo)``.
    Raises:
      ValueError: X not 2-D, fewer samples than components, NaN/inf in concrete X, bad
        options. Under jit, NaN/inf data gives ``info.converged == False`` instead.

    >>> X = jax.random.normal(jax.random.key(0), (500, 2))
    >>> g, info = fit(jax.random.key(1), X, 2)
    >>> g.means.shape, bool(info.converged)
    ((2, 2), True)
    """
    where = "gmm.fit"
    X = _check_X(X, where)
    n, d = X.shape
    shrinkage, gmm_init = _check_fit_options(where, d, X.dtype, n_components, covariance_type, reg_covar,
                                             shrinkage, init, n_init, max_iter)
    if n < n_components:
        raise ValueError(f"{where}: n_samples={n} should be >= n_components={n_components}")
    _check_finite_rows(X, where, "X")
    if sample_weight is None:
        sw = jnp.ones(n, X.dtype)
    else:
        sw = as_float_array(sample_weight, "sample_weight", where, dtype=X.dtype)
        if sw.shape != (n,):
            raise ValueError(f"{where}: sample_weight must have shape ({n},), got {tuple(sw.shape)}")
    # restart i's key does not depend on n_init, so more restarts never give a worse fit
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(int(n_init)))
    run = _fit_small if _small(d, int(n_components), X.dtype, covariance_type, shrinkage) else _fit
    return run(keys, X, sw, gmm_init, jnp.asarray(reg_covar, X.dtype), jnp.asarray(tol, X.dtype), int(n_components),
               covariance_type, shrinkage, init if gmm_init is None else "warm", int(max_iter),
               jnp.asarray(-np.inf if prev_lower_bound is None else prev_lower_bound, X.dtype))


# Scale-out (sharded rows, streaming and online EM) lives in its own module; it builds
# on the private pieces above, so it is imported last.
from ._gmm_scale import NpyBatches, fit_batches, fit_online, shard_rows  # noqa: E402
