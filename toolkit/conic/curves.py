"""Geometry of fitted conics, construction from geometry, residuals and sampling."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._buckets import pad_to, padded_size, unpad
from .._checks import as_float_array, check_choice, check_trailing, result_dtype
from .._xla import tuned_jit as _jit
from .distance import _distances, _frame
from .kinds import ConicGeometry, ELLIPSE, HYPERBOLA, _classify, _rtol, _unit
from .moments import _denormalise, _normalised, _poly, _stats


def _coeffs(coeffs, where):
    c = as_float_array(coeffs, "coeffs", where)
    check_trailing(c, (6,), "coeffs", where)
    return c


def classify(coeffs: ArrayLike) -> jax.Array:
    """Kind code(s) ``(...,)`` of conic coefficients ``(..., 6)`` (scale-invariant test).

    >>> from toolkit import conic
    >>> c = jnp.array([[1.0, 0, 1, 0, 0, -1], [1.0, 0, -1, 0, 0, -1], [0.0, 0, 1, -1, 0, 0]])
    >>> conic.kind_name(conic.classify(c))
    ['ellipse', 'hyperbola', 'parabola']
    """
    c = _coeffs(coeffs, "conic.classify")
    return _classify_jit(c)


@jax.jit
def _classify_jit(c):
    return _classify(c, _rtol(c.dtype))


def geometry(coeffs: ArrayLike) -> ConicGeometry:
    """Centre, semi-axes, angle, eccentricity, foci (and asymptotes) of conics.

    Args:
      coeffs: ``(..., 6)`` ``[A, B, C, D, E, F]`` (any scale or sign).

    Returns:
      :class:`ConicGeometry`; fields that do not apply to a kind are NaN.

    Example:
      >>> geometry(jnp.array([4., 0, 9, -8, 0, -32])).semi_axes.round(6).tolist()
      [3.0, 2.0]
    """
    c = _coeffs(coeffs, "conic.geometry")
    return _geometry(c)


@jax.jit
def _geometry(c):
    batch = c.shape[:-1]
    flat = _unit(c.reshape((-1, 6)))
    rtol = _rtol(c.dtype)
    fr = jax.vmap(lambda t: _frame(t, rtol))(flat)
    ell, hyp = fr.kind == ELLIPSE, fr.kind == HYPERBOLA
    proper = ell | hyp
    nan = jnp.nan
    u = jnp.stack([fr.c, fr.s], axis=-1)
    f = jnp.sqrt(jnp.abs(fr.a ** 2 + jnp.where(hyp, 1.0, -1.0) * fr.b ** 2))
    foci = fr.center[:, None, :] + jnp.stack([f, -f], axis=-1)[:, :, None] * u[:, None, :]
    ecc = f / fr.a
    # angle in (-pi/2, pi/2]: turn the axis by pi (flip (c, s)) rather than add -+pi to
    # arctan2's answer, which would round an angle of 1e-17 near pi to exactly 0
    flip = (fr.c < 0) | ((fr.c == 0) & (fr.s < 0))
    angle = jnp.arctan2(jnp.where(flip, -fr.s, fr.s), jnp.where(flip, -fr.c, fr.c))
    # asymptote directions: (a, +-b) in the canonical frame, normalised
    r = jnp.sqrt(fr.a ** 2 + fr.b ** 2)
    ca, sb = fr.a / r, fr.b / r
    asym = jnp.stack([
        jnp.stack([fr.c * ca - fr.s * sb, fr.s * ca + fr.c * sb], axis=-1),
        jnp.stack([fr.c * ca + fr.s * sb, fr.s * ca - fr.c * sb], axis=-1),
    ], axis=1)
    mask = lambda x, m: jnp.where(m.reshape(m.shape + (1,) * (x.ndim - 1)), x, nan)
    geo = ConicGeometry(
        kind=fr.kind,
        center=mask(fr.center, proper),
        semi_axes=mask(jnp.stack([fr.a, fr.b], axis=-1), proper),
        angle=mask(angle, proper),
        eccentricity=mask(ecc, proper),
        foci=mask(foci, proper),
        asymptotes=mask(asym, hyp),
    )
    return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), geo)


def from_geometry(center: ArrayLike, semi_axes: ArrayLike, angle: ArrayLike, *,
                  kind: str = "ellipse") -> jax.Array:
    """Unit-norm coefficients ``(..., 6)`` of the conic with the given geometry.

    Args:
      center: ``(..., 2)``; semi_axes: ``(..., 2)`` positive -- (major-or-first,
        second) for ellipses, (transverse, conjugate) for hyperbolas; angle: ``(...)``
        direction of the first axis in radians; kind: "ellipse" or "hyperbola" (or
        the int codes, also as an array to mix kinds in a batch).

    Example:
      >>> c = from_geometry(jnp.array([1., 0]), jnp.array([3., 2]), 0.0)
      >>> np.asarray(c / c[0] * 4).round(6) + 0.0   # unit norm, proportional to:
      array([  4.,   0.,   9.,  -8.,   0., -32.])
    """
    where = "conic.from_geometry"
    ctr = as_float_array(center, "center", where)
    ax = as_float_array(semi_axes, "semi_axes", where)
    check_trailing(ctr, (2,), "center", where)
    check_trailing(ax, (2,), "semi_axes", where)
    dt = result_dtype(ctr.dtype, ax.dtype)
    ang = as_float_array(angle, "angle", where, dtype=dt)
    if isinstance(kind, str):
        check_choice(kind, ("ellipse", "hyperbola"), "kind", where)
        kind = ELLIPSE if kind == "ellipse" else HYPERBOLA
    code = jnp.asarray(kind)
    return _from_geometry(ctr.astype(dt), ax.astype(dt), ang, code)


@jax.jit
def _from_geometry(ctr, ax, ang, code):
    c, s = jnp.cos(ang), jnp.sin(ang)
    l1 = 1.0 / ax[..., 0] ** 2
    l2 = jnp.where(code == HYPERBOLA, -1.0, 1.0) / ax[..., 1] ** 2
    A = l1 * c * c + l2 * s * s
    B = 2.0 * (l1 - l2) * c * s
    C = l1 * s * s + l2 * c * c
    x0, y0 = ctr[..., 0], ctr[..., 1]
    D = -(2 * A * x0 + B * y0)
    E = -(B * x0 + 2 * C * y0)
    F = A * x0 * x0 + B * x0 * y0 + C * y0 * y0 - 1.0
    theta = jnp.stack(jnp.broadcast_arrays(A, B, C, D, E, F), axis=-1)
    return theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)


def residuals(coeffs: ArrayLike, points: ArrayLike, *, kind: str = "algebraic") -> jax.Array:
    """Residuals of points ``(..., N, 2)`` w.r.t. conics ``(..., 6)`` -> ``(..., N)``.

    kind="algebraic": ``theta . z(p)`` with theta scaled to unit norm.
    kind="geometric": signed orthogonal distance (exact for ellipses and hyperbolas,
    positive where the unit-norm polynomial is positive; Sampson's first-order
    distance for parabolas and degenerate conics).

    >>> from toolkit import conic
    >>> circle = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, -1.0])  # x^2 + y^2 = 1
    >>> conic.residuals(circle, jnp.array([[2.0, 0.0], [0.0, 0.5]]), kind="geometric").round(6).tolist()
    [1.0, -0.5]
    """
    where = "conic.residuals"
    check_choice(kind, ("algebraic", "geometric"), "kind", where)
    c = _coeffs(coeffs, where)
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    dt = jnp.result_type(c.dtype, pts.dtype)
    c, pts = (c if c.dtype == dt else c.astype(dt)), (pts if pts.dtype == dt else pts.astype(dt))
    # points padded to their size bucket (copies of the last one, masked out of the
    # normalisation), so that a new point count rarely compiles anew
    n = pts.shape[-2]
    m = padded_size(pts, axis=-2)
    mask = pad_to(np.ones(pts.shape[:-1], dt), m, axis=-1)
    light = pts.size // 2 <= _LIGHT_POINTS  # small: compile 2-3x faster, the run takes microseconds
    return unpad(_residuals(c, pad_to(pts, m, axis=-2, fill="edge"), mask, kind, light_compile=light), n, axis=-1)


_LIGHT_POINTS = 1 << 15


@_jit(static_argnums=3)
def _residuals(c, pts, mask, kind):
    """``kind`` (static): the measure of distance; ``mask (..., N)``: 1 for real points."""
    batch = jnp.broadcast_shapes(c.shape[:-1], pts.shape[:-2])
    c = jnp.broadcast_to(c, batch + (6,))
    pts = jnp.broadcast_to(pts, batch + pts.shape[-2:])
    c = _unit(c)
    if kind == "algebraic":
        return _poly(c, pts[..., 0], pts[..., 1])
    flat_c = c.reshape((-1, 6))
    flat_p = pts.reshape((-1,) + pts.shape[-2:])
    # normalise so the frame computation is well conditioned at any data scale
    mask = jnp.broadcast_to(mask, pts.shape[:-1]).reshape(flat_p.shape[:-1])
    st = _stats(flat_p, mask)
    x, y, _ = _normalised(flat_p, mask, st)
    T = _denorm_matrix_inv(st.mean, st.scale, flat_c)
    d = _distances(T, x, y, _rtol(c.dtype)) / st.scale[:, None]
    d = jnp.where(jnp.all(jnp.isfinite(flat_p), axis=-1), d, jnp.nan)  # a NaN point has no distance
    return d.reshape(batch + pts.shape[-2:-1])


def _denorm_matrix_inv(m, s, theta):
    """Coefficients in normalised coordinates ``u = s (x - m)`` of a data-frame conic."""
    # x = u / s + m: substitute, i.e. the inverse map of _denormalise.
    return _unit(_denormalise(theta, -m * s[..., None], 1.0 / s))


def sample(coeffs: ArrayLike, n: int, *, t_max: float = 2.0) -> jax.Array:
    """``n`` points on each conic: ``(..., n, 2)``.

    Ellipses: evenly spaced in the parametric angle. Hyperbolas: both branches,
    ``ceil(n/2)`` points on the first and ``floor(n/2)`` on the second, at
    ``(+-a cosh t, b sinh t)`` for t in ``[-t_max, t_max]``. Parabolas and degenerate
    conics give NaN.

    >>> from toolkit import conic
    >>> pts = conic.sample(jnp.array([1.0, 0.0, 4.0, 0.0, 0.0, -4.0]), 8)  # x^2/4 + y^2 = 1
    >>> pts.shape, bool(jnp.allclose(pts[:, 0] ** 2 / 4 + pts[:, 1] ** 2, 1.0))
    ((8, 2), True)
    """
    where = "conic.sample"
    c = _coeffs(coeffs, where)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{where}: n must be a positive int, got {n!r}")
    return _sample(c, n, jnp.asarray(t_max, c.dtype))


@functools.partial(jax.jit, static_argnums=1)
def _sample(c, n, t_max):
    g = _geometry(c)
    dt = c.dtype
    a, b = g.semi_axes[..., 0:1], g.semi_axes[..., 1:2]
    ang = g.angle[..., None]
    phi = jnp.arange(n, dtype=dt) * (2 * jnp.pi / n)
    xe, ye = a * jnp.cos(phi), b * jnp.sin(phi)
    n1 = (n + 1) // 2
    n2 = n - n1
    t1 = jnp.linspace(-1.0, 1.0, n1, dtype=dt) * t_max
    t2 = jnp.linspace(-1.0, 1.0, max(n2, 1), dtype=dt)[:n2] * t_max
    t = jnp.concatenate([t1, t2])
    branch = jnp.concatenate([jnp.ones(n1, dt), -jnp.ones(n2, dt)])
    xh, yh = branch * a * jnp.cosh(t), b * jnp.sinh(t)
    hyp = (g.kind == HYPERBOLA)[..., None]
    x, y = jnp.where(hyp, xh, xe), jnp.where(hyp, yh, ye)
    cs, sn = jnp.cos(ang), jnp.sin(ang)
    px = g.center[..., 0:1] + cs * x - sn * y
    py = g.center[..., 1:2] + sn * x + cs * y
    return jnp.stack([px, py], axis=-1)
