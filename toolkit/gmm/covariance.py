"""Covariance types and shrinkage rules, each one entry of a table.

:data:`COVARIANCE` maps every ``covariance_type`` to what differs between the types: the
shape of its second-moment statistics, how component scatters become its covariance,
the precision Cholesky factor and log-determinant, the Mahalanobis terms of the E-step,
and its parameter count. :data:`SHRINKAGE` maps the named shrinkage rules to their
intensity estimators. Adding a covariance type or a shrinkage rule is one entry here;
the EM code, the model functions and the estimators read these tables and name no type.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jax.scipy.linalg import solve_triangular

from .._checks import as_float_array
from .types import GMM


def weighted_moments(X: ArrayLike, w: ArrayLike) -> tuple[jax.Array, jax.Array]:
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


def _chol_matrix(cov, floor):
    """``(..., d, d)`` covariances -> precision Cholesky factors ``L`` (``P = L L^T``) by a
    Cholesky factorisation and a triangular solve; a numerically singular matrix gets a
    jitter of 1e-6 times the larger of its mean variance and ``floor``."""
    eps = jnp.finfo(cov.dtype).eps
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


def _chol_variances(cov, scale, floor):
    """Variances -> ``1 / sqrt(var)``, with the same jitter rule as :func:`_chol_matrix`
    (``scale``: the mean variance the rule compares with)."""
    eps = jnp.finfo(cov.dtype).eps
    big = jnp.maximum(scale, floor)
    jitter = 1e-6 * jnp.where(big > 0, big, 1.0)
    return lax.rsqrt(jnp.where(cov > eps * jnp.maximum(scale, 0.0), cov, cov + jitter))


def _maha_full(X, means, pc):
    y = jnp.einsum("nd,kde->nke", X, pc) - jnp.einsum("kd,kde->ke", means, pc)[None]
    return jnp.sum(y * y, -1)


def _maha_tied(X, means, pc):
    y = (X @ pc)[:, None, :] - (means @ pc)[None]
    return jnp.sum(y * y, -1)


def _maha_diag(X, means, pc):
    p = pc * pc
    return (X * X) @ p.T - 2.0 * X @ (means * p).T + jnp.sum(means * means * p, -1)[None]


def _maha_spherical(X, means, pc):
    p = pc * pc
    return (jnp.sum(X * X, -1)[:, None] * p[None] - 2.0 * (X @ means.T) * p[None]
            + (jnp.sum(means * means, -1) * p)[None])


def _pool(nk, S):
    """The shared (tied) covariance: the components' scatters weighted by their counts."""
    return jnp.sum(nk[:, None, None] * S, 0) / jnp.sum(nk)


@dataclasses.dataclass(frozen=True)
class CovarianceType:
    """What one ``covariance_type`` is (shapes with k components in d dimensions).

    matrix: the statistics keep whole ``(k, d, d)`` second moments (else diagonals ``(k, d)``).
    pooled: one covariance shared by every component (its effective count is the total).
    shape: ``(k, d) -> covariances shape``.
    n_params: ``(k, d) ->`` free parameters of the covariances.
    from_scatter: ``(nk (k,), S) ->`` this type's covariance before shrinkage and
      ``reg_covar``, from the component scatters ``S`` ((k, d, d) or (k, d)).
    chol_precision: ``(cov, floor) ->`` precision Cholesky factor (same shape as cov).
    log_det: ``(pc, d) ->`` log-determinant of the precision factor, ``(k,)`` or scalar.
    maha: ``(X (n, d), means (k, d), pc) ->`` squared Mahalanobis distances ``(n, k)``.
    as_full: ``(cov, k, d) ->`` ``(k, d, d)`` covariance matrices.
    finish: the covariance after shrinkage and ``reg_covar`` -> this type's (spherical
      averages the variances over the features).
    features: EM may use the one-GEMM feature path (:mod:`toolkit.gmm.em`).
    """

    matrix: bool
    pooled: bool
    shape: Callable
    n_params: Callable
    from_scatter: Callable
    chol_precision: Callable
    log_det: Callable
    maha: Callable
    as_full: Callable
    finish: Callable = lambda cov: cov
    features: bool = False


COVARIANCE: dict[str, CovarianceType] = {
    "full": CovarianceType(
        matrix=True, pooled=False, features=True,
        shape=lambda k, d: (k, d, d), n_params=lambda k, d: k * d * (d + 1) / 2,
        from_scatter=lambda nk, S: S,
        chol_precision=_chol_matrix,
        log_det=lambda pc, d: jnp.sum(jnp.log(jnp.diagonal(pc, axis1=-2, axis2=-1)), -1),
        maha=_maha_full,
        as_full=lambda cov, k, d: cov),
    "tied": CovarianceType(
        matrix=True, pooled=True,
        shape=lambda k, d: (d, d), n_params=lambda k, d: d * (d + 1) / 2,
        from_scatter=_pool,
        chol_precision=_chol_matrix,
        log_det=lambda pc, d: jnp.sum(jnp.log(jnp.diagonal(pc))),
        maha=_maha_tied,
        as_full=lambda cov, k, d: jnp.broadcast_to(cov, (k, d, d))),
    "diag": CovarianceType(
        matrix=False, pooled=False,
        shape=lambda k, d: (k, d), n_params=lambda k, d: k * d,
        from_scatter=lambda nk, S: S,
        chol_precision=lambda cov, floor: _chol_variances(cov, jnp.mean(cov, -1, keepdims=True), floor),
        log_det=lambda pc, d: jnp.sum(jnp.log(pc), -1),
        maha=_maha_diag,
        as_full=lambda cov, k, d: jax.vmap(jnp.diag)(cov)),
    "spherical": CovarianceType(
        matrix=False, pooled=False,
        shape=lambda k, d: (k,), n_params=lambda k, d: k,
        from_scatter=lambda nk, S: S,
        finish=lambda cov: jnp.mean(cov, -1),
        chol_precision=lambda cov, floor: _chol_variances(cov, cov, floor),
        log_det=lambda pc, d: d * jnp.log(pc),
        maha=_maha_spherical,
        as_full=lambda cov, k, d: cov[:, None, None] * jnp.eye(d, dtype=cov.dtype)),
}


def _chol_precision(cov, covariance_type, floor=None):
    """Cholesky factor of the precision of ``cov`` (shapes in the module table).

    Safety net (documented in the package): a numerically singular covariance (possible
    only with ``reg_covar=0``) gets a jitter of 1e-6 times the larger of its mean
    variance and ``floor`` (the data's mean variance in EM; 1 if neither is positive).
    """
    floor = jnp.zeros((), cov.dtype) if floor is None else floor
    return COVARIANCE[covariance_type].chol_precision(cov, floor)


def _log_det_chol(pc, covariance_type, d):
    return COVARIANCE[covariance_type].log_det(pc, d)


def _log_gaussian(X, means, pc, covariance_type):
    """log N(x_n | mu_k, Sigma_k) for all n, k: ``(n, k)``."""
    d = X.shape[1]
    t = COVARIANCE[covariance_type]
    return -0.5 * (d * jnp.log(2 * jnp.pi) + t.maha(X, means, pc)) + t.log_det(pc, d)


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


def _off_diagonal_sums(S):
    """``(sum_{i != j} s_ij^2, sum_{i != j} s_ii s_jj)`` of covariance(s) ``(..., d, d)``."""
    v = jnp.diagonal(S, axis1=-2, axis2=-1)
    B = jnp.sum(S * S, axis=(-2, -1)) - jnp.sum(v * v, -1)
    C = jnp.sum(v, -1) ** 2 - jnp.sum(v * v, -1)
    return B, C


def _ledoit_wolf_diagonal_alpha(S, m4, m4d, n_eff, d):
    """Ledoit-Wolf intensity for the diagonal target (Schafer & Strimmer 2005, target
    "D"): the estimated variance of the off-diagonal entries over their squared sum,
    ``min(beta, delta) / delta`` with ``delta = sum_{i != j} s_ij^2 / d`` and ``beta =
    sum_n sum_{i != j} (x_ni x_nj - s_ij)^2 / (d n_eff^2)``; ``m4 - m4d`` is
    ``sum_n r_n sum_{i != j} (x_ni - mu_i)^2 (x_nj - mu_j)^2``. The normalisation is the
    identity target's (scikit-learn's), restricted to the entries the target changes."""
    B, _ = _off_diagonal_sums(S)
    delta = B / d
    beta = jnp.minimum(((m4 - m4d) / n_eff - B) / (d * n_eff), delta)
    return jnp.where(delta > 0, jnp.clip(beta / jnp.where(delta > 0, delta, 1.0), 0.0, 1.0), 0.0)


def _oas_diagonal_alpha(S, n_eff, d):
    """OAS-type intensity for the diagonal target: the oracle weight for Gaussian data,
    ``sum Var(s_ij) / sum E[s_ij^2]`` over i != j with ``Var(s_ij) = (s_ij^2 + s_ii s_jj) / n``,
    i.e. ``(B + C) / ((n + 1) B + C)`` with the sample covariance plugged in -- the form of
    scikit-learn's OAS (``(alpha + mu^2) / ((n + 1)(alpha - mu^2 / d))`` for the identity)."""
    B, C = _off_diagonal_sums(S)
    den = (n_eff + 1.0) * B + C
    return jnp.where(den > 0, jnp.clip((B + C) / jnp.where(den > 0, den, 1.0), 0.0, 1.0), 1.0)


class ShrinkageRule(NamedTuple):
    """A named shrinkage rule: ``intensity(S, m4, n_eff, d)`` gives the weight of the
    identity target for scatter(s) ``S (..., d, d)`` from ``n_eff`` samples, and
    ``diagonal(S, m4, m4d, n_eff, d)`` that of the diagonal target; ``m4`` is the fourth
    moment ``sum r |x - mu|^4`` and ``m4d`` its diagonal part ``sum r sum_i (x_i - mu_i)^4``,
    computed (and streamed) only when ``fourth_moment``."""

    intensity: Callable
    diagonal: Callable
    fourth_moment: bool = False


SHRINKAGE: dict[str, ShrinkageRule] = {
    "ledoit_wolf": ShrinkageRule(lambda S, m4, n_eff, d: _ledoit_wolf_alpha(S, m4, n_eff, d),
                                 _ledoit_wolf_diagonal_alpha, fourth_moment=True),
    "oas": ShrinkageRule(lambda S, m4, n_eff, d: _oas_alpha(S, n_eff, d),
                         lambda S, m4, m4d, n_eff, d: _oas_diagonal_alpha(S, n_eff, d)),
}
SHRINKAGE_TARGETS = ("identity", "diagonal")


class Shrinkage(NamedTuple):
    """A checked shrinkage option (hashable: a static argument of the jitted fits).

    amount: a float in [0, 1] or the name of a rule in :data:`SHRINKAGE`.
    target: "identity" (``(tr S / d) I``) or "diagonal" (``diag(S)``: the off-diagonal
      entries shrink toward zero, every feature keeps its own variance).
    """

    amount: Any
    target: str = "identity"


def _needs_fourth_moment(shrinkage) -> bool:
    return shrinkage is not None and isinstance(shrinkage.amount, str) and SHRINKAGE[shrinkage.amount].fourth_moment


def _needs_diagonal_fourth_moment(shrinkage) -> bool:
    return _needs_fourth_moment(shrinkage) and shrinkage.target == "diagonal"


def _shrink_to_diagonal(S, a):
    """(1 - a) S + a diag(S) for covariance(s) S (..., d, d) and weight(s) a."""
    d = S.shape[-1]
    eye = jnp.eye(d, dtype=S.dtype)
    a = jnp.asarray(a, S.dtype)[..., None, None]
    return S * (eye + (1.0 - a) * (1.0 - eye))


def _shrink(S, st, nk, means, shrinkage, t: CovarianceType):
    """Pull covariance(s) ``S`` toward the target of :class:`Shrinkage` ``shrinkage``
    (matrix types) or the mean variance (diagonal types) with a fixed weight or a named
    rule's estimate. The diagonal target leaves diagonal types unchanged (it is them)."""
    d = means.shape[-1]
    amount, target = shrinkage
    if not t.matrix:  # named rules are refused for diagonal types by the option checks
        return S if target == "diagonal" else (1 - amount) * S + amount * jnp.mean(S, -1, keepdims=True)
    shrink = _shrink_to_diagonal if target == "diagonal" else lambda S, a: _shrink_to_identity(S, a, d)
    if not isinstance(amount, str):
        return shrink(S, amount)
    rule = SHRINKAGE[amount]
    m4 = m4d = None
    if rule.fourth_moment:
        m4 = _fourth_moment(st, means)
        m4 = jnp.sum(m4) if t.pooled else m4
        if target == "diagonal":
            m4d = _diagonal_fourth_moment(st, means)
            m4d = jnp.sum(m4d) if t.pooled else m4d
    n_eff = jnp.sum(nk) if t.pooled else nk
    if target == "diagonal":
        return shrink(S, rule.diagonal(S, m4, m4d, n_eff, d))
    return shrink(S, rule.intensity(S, m4, n_eff, d))


class _Stats(NamedTuple):
    """Weighted sufficient statistics of EM over (part of) the data: they add across parts.

    ``resp`` below already includes the sample weights.
    """

    nk: jax.Array        # (k,)       sum_n r_nk
    s1: jax.Array        # (k, d)     sum_n r_nk x_n
    s2: jax.Array        # (k, d, d)  sum r x x^T (full/tied), or (k, d) sum r x*x (diag/spherical)
    s3: Any = None       # (k, d)     sum r |x|^2 x   (Ledoit-Wolf only)
    s4: Any = None       # (k,)       sum r |x|^4     (Ledoit-Wolf only)
    s5: Any = None       # (k, d)     sum r x^3       (Ledoit-Wolf, diagonal target only)
    s6: Any = None       # (k, d)     sum r x^4       (Ledoit-Wolf, diagonal target only)


def _scatter(st, covariance_type):
    """``(nk, means, S)``: S the weighted scatter per component (full/tied: ``(k, d, d)``
    symmetrised; diag/spherical: its diagonal ``(k, d)``), before shrinkage and reg_covar."""
    nk = st.nk + 10 * jnp.finfo(st.s1.dtype).eps
    means = st.s1 / nk[:, None]
    if COVARIANCE[covariance_type].matrix:
        S = st.s2 / nk[:, None, None] - jnp.einsum("ki,kj->kij", means, means)
        return nk, means, 0.5 * (S + jnp.swapaxes(S, -1, -2))
    return nk, means, jnp.maximum(st.s2 / nk[:, None] - means * means, 0.0)


def _fourth_moment(st, means):
    """m4_k = sum_n r_nk |x_n - mu_k|^4, expanded in the streamable sums s1..s4."""
    c = jnp.sum(means * means, -1)
    m4 = (st.s4 - 4 * jnp.sum(means * st.s3, -1) + 4 * jnp.einsum("ki,kij,kj->k", means, st.s2, means)
          + 2 * c * jnp.trace(st.s2, axis1=-2, axis2=-1) - 4 * c * jnp.sum(means * st.s1, -1) + c * c * st.nk)
    return jnp.maximum(m4, 0.0)


def _diagonal_fourth_moment(st, means):
    """m4d_k = sum_n r_nk sum_i (x_ni - mu_ki)^4, expanded in the streamable sums."""
    s2d = jnp.diagonal(st.s2, axis1=-2, axis2=-1) if st.s2.ndim == 3 else st.s2
    m = means
    m4d = st.s6 - 4 * m * st.s5 + 6 * m * m * s2d - 4 * m ** 3 * st.s1 + m ** 4 * st.nk[:, None]
    return jnp.maximum(jnp.sum(m4d, -1), 0.0)


def _params_from_stats(st, reg_covar, covariance_type, shrinkage):
    """M-step from the sufficient statistics :class:`_Stats`."""
    t = COVARIANCE[covariance_type]
    nk, means, S = _scatter(st, covariance_type)
    d = means.shape[-1]
    cov = t.from_scatter(nk, S)
    if shrinkage is not None:
        cov = _shrink(cov, st, nk, means, shrinkage, t)
    cov = t.finish(cov + (reg_covar * jnp.eye(d, dtype=means.dtype) if t.matrix else reg_covar))
    weights = nk / jnp.sum(nk)
    floor = jnp.sum(_second_moments(st)) / (d * jnp.sum(nk))  # mean second moment of the data
    return GMM(weights, means, cov, t.chol_precision(cov, floor), covariance_type)


def _second_moments(st):
    """``(k,)`` sum_n r_nk |x_n|^2 from the statistics."""
    return jnp.trace(st.s2, axis1=-2, axis2=-1) if st.s2.ndim == 3 else jnp.sum(st.s2, -1)


def _rank_deficient(st, covariance_type):
    """``(k,)`` bool: the component's weighted scatter (before shrinkage and reg_covar) has
    an eigenvalue below sqrt(eps) times its largest, so its points span fewer than d
    dims, or its whole scatter is below sqrt(eps) times the data's mean second moment
    (a component that owns a single point, where round-off alone sets the eigenvalues)."""
    t = COVARIANCE[covariance_type]
    nk, _, S = _scatter(st, covariance_type)
    if t.pooled:
        S = _pool(nk, S)
    ev = jnp.linalg.eigvalsh(S) if t.matrix else S
    rtol = jnp.sqrt(jnp.finfo(ev.dtype).eps)
    top = jnp.max(jnp.abs(ev), -1)
    data_scale = jnp.sum(_second_moments(st)) / (ev.shape[-1] * jnp.sum(st.nk))  # fit() centres X: ~ variance
    bad = (jnp.min(ev, -1) <= rtol * top) | (top <= rtol * data_scale)
    return jnp.broadcast_to(bad, nk.shape)
