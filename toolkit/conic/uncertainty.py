"""``covariance``: first-order (KCR) covariance of a geometric conic or circle fit.

For points with independent isotropic Gaussian noise of standard deviation sigma, the
covariance of the unit-norm coefficients of the maximum-likelihood (geometric) fit is,
to first order, Kanatani's KCR lower bound

    V[theta] = sigma^2 (sum_i z_i z_i^T / (theta^T V0[z_i] theta))^-    (rank 5),

with ``z_i = z(x_i)`` the design vector at the curve point closest to data point
``x_i`` and ``V0[z] = (dz/dx)(dz/dx)^T``; the pseudo-inverse removes the scale
direction theta. Circles have three parameters ``(cx, cy, r)`` and the covariance
``sigma^2 (J^T J)^-1`` of their orthogonal distances. Centre, semi-axes and angle
follow by the Jacobians of the geometry (JAX forward mode). Everything is computed in
Hartley-normalised coordinates and mapped back.

sigma, when not given, is estimated from the orthogonal residuals with
``N - p`` degrees of freedom (p = 5 for conics, 3 for circles).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._buckets import pad_to, padded_size
from .._checks import as_float_array, check_choice, check_trailing, result_dtype
from .._xla import tuned_jit as _jit
from .circle import _circle_coeffs, _circle_params
from .curves import _denorm_matrix_inv
from .distance import _foot, _frame
from .kinds import _FIT_KINDS, _MIN_CIRCLE_POINTS, _MIN_POINTS, _rtol
from .moments import _denormalise, _design, _normalised, _stats


class ConicCovariance(NamedTuple):
    """First-order covariances from :func:`covariance`, batch shape ``...``.

    coeffs ``(..., 6, 6)`` of the unit-norm coefficients (rank 5; rank 3 for circles);
    center ``(..., 2, 2)``; semi_axes ``(..., 2, 2)`` (for circles every entry is the
    radius's variance); angle ``(...)`` variance of the first axis's angle (NaN for
    circles); noise_std ``(...)`` the sigma used (given or estimated).
    """

    coeffs: jax.Array
    center: jax.Array
    semi_axes: jax.Array
    angle: jax.Array
    noise_std: jax.Array


def _geometry_vector(theta, rtol):
    """(cx, cy, a, b, angle) of one conic ``theta (6,)``, differentiably."""
    fr = _frame(theta, rtol)
    angle = jnp.arctan2(fr.s, fr.c)
    angle = jnp.where(angle > 0.5 * jnp.pi, angle - jnp.pi, jnp.where(angle <= -0.5 * jnp.pi, angle + jnp.pi, angle))
    return jnp.stack([fr.center[0], fr.center[1], fr.a, fr.b, angle])


def _conic_cov(theta, x, y, w, rtol):
    """KCR covariance per unit sigma of normalised coefficients ``theta (B, 6)``."""
    d, fx, fy, _ = _foot(theta, x, y, rtol)
    z = _design(jnp.stack([fx, fy], axis=-1))  # (B, N, 6)
    A, B, C, D, E = (theta[:, i, None] for i in range(5))
    gx, gy = 2 * A * fx + B * fy + D, B * fx + 2 * C * fy + E
    g2 = gx * gx + gy * gy
    M = jnp.einsum("bn,bni,bnj->bij", w / jnp.where(g2 > 0, g2, 1.0), z, z)
    tt = theta[:, :, None] * theta[:, None, :]
    # theta spans M's null space (theta . z = 0 on the curve): M^+ = (M + tt)^-1 - tt
    V = jnp.linalg.inv(M + tt) - tt
    return 0.5 * (V + jnp.swapaxes(V, -1, -2)), d


@_jit(static_argnames="kind")
def _covariance(coeffs, pts, mask, sigma, *, kind):
    """coeffs ``(B, 6)``, pts ``(B, N, 2)``, mask ``(B, N)``, sigma ``(B,)`` (NaN: estimate)."""
    dt = pts.dtype
    rtol = _rtol(dt)
    st = _stats(pts, mask)
    x, y, w = _normalised(pts, mask, st)
    s = st.scale
    theta_n = _denorm_matrix_inv(st.mean, s, coeffs)
    n = jnp.sum(mask, axis=-1)
    if kind == "circle":
        p = _circle_params(theta_n)[0]
        dx, dy = x - p[:, 0:1], y - p[:, 1:2]
        rho = jnp.sqrt(dx * dx + dy * dy)
        d = rho - p[:, 2:3]
        inv = 1.0 / jnp.where(rho > 0, rho, 1.0)
        J = jnp.stack([-dx * inv, -dy * inv, -jnp.ones_like(d)], axis=-1)
        Vp = jnp.linalg.inv(jnp.einsum("bni,bnj->bij", J * w[..., None], J))  # per unit sigma_n^2
        dof = n - 3
        G = jax.vmap(jax.jacfwd(_circle_coeffs))(p)  # (B, 6, 3), normalised-frame coefficients
        Vn = G @ Vp @ jnp.swapaxes(G, -1, -2)
        center = Vp[:, :2, :2]
        axes = jnp.broadcast_to(Vp[:, 2:3, 2:3], Vp.shape[:1] + (2, 2))
        angle = jnp.full(n.shape, jnp.nan, dt)
    else:
        Vn, d = _conic_cov(theta_n, x, y, w, rtol)
        dof = n - 5
        G = jax.vmap(jax.jacfwd(lambda t: _geometry_vector(t, rtol)))(theta_n)  # (B, 5, 6)
        Vg = G @ Vn @ jnp.swapaxes(G, -1, -2)
        center, axes, angle = Vg[:, :2, :2], Vg[:, 2:4, 2:4], Vg[:, 4, 4]
    # sigma in data units; the normalised frame scales lengths by s
    est = jnp.sqrt(jnp.sum(w * d * d, axis=-1) / jnp.maximum(dof, 1)) / s
    sigma = jnp.where(jnp.isnan(sigma), est, sigma)
    var_n = (sigma * s) ** 2  # noise variance in the normalised frame
    # coefficients back to data coordinates: theta = unit(T theta_n), T linear
    T = jax.vmap(jax.jacfwd(lambda t, m, sc: _denormalise(t, m, sc)))(theta_n, st.mean, s)  # (B, 6, 6)
    th = T @ theta_n[..., None]
    nrm = jnp.linalg.norm(th[..., 0], axis=-1)[:, None, None]
    u = th / nrm
    P = (jnp.eye(6, dtype=dt) - u @ jnp.swapaxes(u, -1, -2)) @ T / nrm
    Vc = P @ Vn @ jnp.swapaxes(P, -1, -2)
    scale2 = (var_n / (s * s))[:, None, None]  # lengths: normalised / s
    return ConicCovariance(var_n[:, None, None] * Vc, scale2 * center, scale2 * axes, var_n * angle, sigma)


def covariance(coeffs: ArrayLike, points: ArrayLike, *, noise_std: ArrayLike | None = None,
               kind: str = "any") -> ConicCovariance:
    """First-order covariance of a geometric fit of ``coeffs`` to ``points``.

    Args:
      coeffs: ``(..., 6)`` the fitted conic (e.g. ``fit(points, method="geometric").coeffs``).
      points: ``(..., N, 2)`` the points it was fitted to.
      noise_std: the points' noise standard deviation ``(...)``; estimated from the
        orthogonal residuals (``N - 5`` degrees of freedom, ``N - 3`` for circles) when
        None.
      kind: "any", "ellipse" or "hyperbola" (a 5-parameter conic) or "circle" (3).

    Returns:
      :class:`ConicCovariance`. For the geometric fit this is the KCR lower bound,
      which it attains to first order in the noise; the algebraic fits have larger
      covariances.

    Raises:
      ValueError: shapes, too few points (6 for conics, 4 for circles), unknown kind.

    Example:
      >>> from toolkit import conic
      >>> t = jnp.linspace(0, 2 * jnp.pi, 100, endpoint=False)
      >>> pts = jnp.stack([3 * jnp.cos(t), 2 * jnp.sin(t)], -1)
      >>> cov = conic.covariance(conic.fit(pts, kind="ellipse").coeffs, pts, noise_std=0.01)
      >>> np.sqrt(np.diag(cov.center)).round(5).tolist()   # standard deviations of the centre
      [0.00158, 0.00129]
    """
    where = "conic.covariance"
    check_choice(kind, _FIT_KINDS, "kind", where)
    c = as_float_array(coeffs, "coeffs", where)
    check_trailing(c, (6,), "coeffs", where)
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    n = pts.shape[-2]
    least = (_MIN_CIRCLE_POINTS if kind == "circle" else _MIN_POINTS) + 1
    if n < least:
        raise ValueError(f"{where}: argument 'points' needs at least {least} points per fit for kind={kind!r} "
                         f"(one more than the parameters), got {n}")
    dt = result_dtype(c.dtype, pts.dtype)
    batch = jnp.broadcast_shapes(c.shape[:-1], pts.shape[:-2])
    sig = jnp.full(batch, jnp.nan, dt) if noise_std is None else jnp.broadcast_to(
        as_float_array(noise_std, "noise_std", where, dtype=dt), batch)
    c = jnp.broadcast_to(c.astype(dt), batch + (6,)).reshape((-1, 6))
    pts = jnp.broadcast_to(pts.astype(dt), batch + (n, 2)).reshape((-1, n, 2))
    m = padded_size(pts, axis=-2)
    mask = pad_to(np.ones(pts.shape[:-1], dt), m, axis=-1)
    out = _covariance(c, pad_to(pts, m, axis=-2, fill="edge"), mask, sig.reshape(-1), kind=kind)
    return ConicCovariance(*(x.reshape(batch + x.shape[1:]) for x in out))
