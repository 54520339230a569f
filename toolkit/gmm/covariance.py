"""Covariance types: sufficient statistics to covariances, shrinkage, the precision Cholesky factors, log-determinants and Gaussian log densities."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from .._checks import as_float_array
from .types import GMM


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
    >>> np.asarray(weighted_moments(ij, W.ravel())[0])
    array([0.7, 1.1])
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
