"""Orthogonal point-to-conic distances: closest points in the conic's own frame."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .kinds import ELLIPSE, HYPERBOLA, _classify, _invariants
from .moments import _poly


class _Frame(NamedTuple):
    """Canonical frame of conics, batch shape ``...`` (one value per conic)."""

    center: jax.Array  # (..., 2)
    c: jax.Array  # cos of first-axis angle
    s: jax.Array
    a: jax.Array  # semi-axis along the first axis (major / transverse)
    b: jax.Array
    kind: jax.Array


def _frame(theta, rtol):
    """Canonical frame: ellipses have the major axis first, hyperbolas the transverse one.

    The axis direction comes from half-angle formulas on ``(A - C, B)`` (square roots
    only: cheaper to compile and run than arctan2, cos and sin).
    """
    A, B, C = theta[..., 0], theta[..., 1], theta[..., 2]
    inv = _invariants(theta)
    _, center, Fp, _ = inv
    kind = _classify(theta, rtol, inv)
    # (c, s) = (cos phi, sin phi), phi = atan2(B, A - C) / 2: the eigenvector of
    # [[A, B/2], [B/2, C]] with eigenvalue l1 below; a circle (h = 0) takes phi = 0.
    h2 = (A - C) ** 2 + B * B
    # a circle (h = 0) has no axis direction: a safe square root keeps its derivatives finite
    h = jnp.where(h2 > 0, jnp.sqrt(jnp.where(h2 > 0, h2, 1.0)), 0.0)
    hs = jnp.where(h > 0, h, 1.0)
    cos2 = jnp.where(h > 0, (A - C) / hs, 1.0)
    sin2 = jnp.where(h > 0, B / hs, 0.0)
    big = jnp.sqrt(0.5 * (1.0 + jnp.abs(cos2)))  # the larger of |cos phi|, |sin phi|
    small = 0.5 * sin2 / big
    pos = cos2 >= 0
    c = jnp.where(pos, big, jnp.abs(small))
    s = jnp.where(pos, small, jnp.where(sin2 >= 0, big, -big))
    l1, l2 = 0.5 * (A + C + h), 0.5 * (A + C - h)  # eigenvalues along phi, phi + pi/2
    g1, g2 = -Fp / jnp.where(l1 != 0, l1, 1.0), -Fp / jnp.where(l2 != 0, l2, 1.0)
    # ellipse: g1, g2 > 0 and l1 >= l2 means axis 1 is the minor one -> swap.
    # hyperbola: exactly one of g1, g2 is positive -> that axis is transverse.
    first_is_1 = jnp.where(kind == ELLIPSE, g1 >= g2, g1 > 0)
    a2 = jnp.where(first_is_1, g1, g2)
    b2 = jnp.abs(jnp.where(first_is_1, g2, g1))
    proper = (kind == ELLIPSE) | (kind == HYPERBOLA)
    safe = lambda v: jnp.where(proper & (v > 0), v, 1.0)
    # the second axis is the first turned by +90 degrees: (c, s) -> (-s, c)
    return _Frame(center, jnp.where(first_is_1, c, -s), jnp.where(first_is_1, s, c),
                  jnp.sqrt(safe(a2)), jnp.sqrt(safe(b2)), kind)


def _root_newton(g, lo, hi, t0, max_iter):
    """Roots of decreasing functions on brackets (lo, hi), elementwise.

    ``g(t)`` returns ``(f, df, converged)``. Newton steps that would leave the
    bracket, and after the first eight iterations every fourth step, are bisections,
    so the bracket keeps halving whatever the function looks like; near the root
    Newton is quadratic. The loop stops once every element reports convergence or
    after ``max_iter``.
    """
    def body(state):
        t, lo, hi, it, _ = state
        f, df, conv = g(t)
        lo = jnp.where(f > 0, t, lo)
        hi = jnp.where(f > 0, hi, t)
        nt = t - f / jnp.where(df < 0, df, -1.0)
        newton = (nt > lo) & (nt < hi) & (df < 0) & ((it < 8) | (it % 4 != 3))
        mid = 0.5 * (lo + hi)
        collapsed = (mid <= lo) | (mid >= hi)
        conv = conv | collapsed
        nt = jnp.where(conv, t, jnp.where(newton, nt, mid))
        return nt, lo, hi, it + 1, jnp.all(conv)

    state = (jnp.clip(t0, lo, hi), lo, hi, 0, False)
    return lax.while_loop(lambda s: (s[3] < max_iter) & ~s[4], body, state)[0]


# Halley steps every point takes before the convergence test: from t = 0 the worst
# point of 2000 noisy (1%) ellipses has |r - 1| = 0.24, then 5e-3, 1e-6, 1e-16.
_FAST_STEPS = 3


def _closest_canonical(u, v, a, b, hyperbola, n_iter):
    """Closest point to (u, v) on x^2/a^2 + y^2/b^2 = 1 (ellipse, a >= b) or
    x^2/a^2 - y^2/b^2 = 1 (hyperbola), in the canonical frame.

    u, v: ``(..., N)``; a, b, hyperbola: broadcastable to them. The foot point is
    ``x = a^2 u / (a^2 + t)``, ``y = b^2 v / (b^2 + sigma t)`` for the root t of
    ``1 - r(t)^(-1/2)`` with ``r = x^2/a^2 + sigma y^2/b^2``, a function that is
    decreasing on the bracket below (Eberly's approach) and exactly linear for a circle.
    Every point first takes ``_FAST_STEPS`` Halley steps from t = 0 in one fused pass
    (two divisions and a square root each); only if some point has not converged
    inside its bracket does the bracketed, bisection-safeguarded Newton loop run. The
    coordinate with the better-conditioned formula is taken from t and the other from
    the curve equation: the point lies exactly on the curve and any error is along it,
    which moves the distance only to second order.
    """
    au, av = jnp.abs(u), jnp.abs(v)
    a2, b2 = a * a, b * b
    sig = jnp.where(hyperbola, -1.0, 1.0).astype(u.dtype)
    eps = jnp.finfo(u.dtype).eps
    tiny = jnp.finfo(u.dtype).tiny

    def terms(t):
        """r(t) and its first two derivatives; inf or NaN outside the bracket."""
        da, db = a2 + t, b2 + sig * t
        inv = 1.0 / (da * db)
        ia, ib = db * inv, da * inv
        x2, y2 = (a * au * ia) ** 2, (b * av * ib) ** 2
        r = x2 + sig * y2
        return r, -2.0 * (x2 * ia + y2 * ib), 6.0 * (x2 * ia * ia + sig * y2 * ib * ib)

    def g(t):
        da, db = a2 + t, b2 + sig * t
        da = jnp.where(da > 0, da, tiny)
        db = jnp.where(db > 0, db, tiny)
        x = a * au / da
        y = b * av / db
        r = x * x + sig * y * y
        dr = -2.0 * (x * x / da + y * y / db)
        # x(t), y(t) is always on the normal through (u, v); only r = 1 remains, so
        # |r - 1| at rounding level means the foot point is found.
        conv = (jnp.abs(r - 1.0) <= 16 * eps) | jnp.isnan(r)
        # far from the curve r ~ K / t^2, so 1 - r^(-1/2) is nearly linear in t and
        # Newton on it converges in a few steps; it has the sign of r - 1.
        pos = r > 0
        inv = lax.rsqrt(jnp.where(pos, r, 1.0))
        return jnp.where(pos, 1.0 - inv, r - 1.0), jnp.where(pos, 0.5 * inv * inv * inv * dr, dr), conv

    lo = jnp.where(hyperbola, -a2, -b2)
    hi = jnp.where(hyperbola, b2, jnp.sqrt(a2 * au * au + b2 * av * av))
    lo, hi = jnp.broadcast_arrays(lo, hi)
    t = jnp.zeros_like(lo)
    for _ in range(_FAST_STEPS):
        # Halley on 1 - 1/s, s = sqrt(r), with the powers of s multiplied out
        r, dr, d2r = terms(t)
        sm1 = jnp.sqrt(r) - 1.0
        t = t - 4.0 * sm1 * dr * r / (2.0 * dr * dr - sm1 * (2.0 * r * d2r - 3.0 * dr * dr))
    r, _, _ = terms(t)
    # a NaN point stays NaN and must not keep the loops below running
    fast_ok = ((jnp.abs(r - 1.0) <= 16 * eps) & (t > lo) & (t < hi)) | jnp.isnan(au + av)
    t = lax.cond(jnp.all(fast_ok), lambda t: t,
                 lambda t: _root_newton(g, lo, hi, jnp.where(fast_ok, t, 0.0), n_iter), t)
    dx = a2 + t
    dy = b2 + sig * t
    x_f = a2 * au / jnp.where(dx > 0, dx, 1.0)
    y_f = b2 * av / jnp.where(dy > 0, dy, 1.0)
    x_f = jnp.where(dx > 0, x_f, a)
    y_f = jnp.where(dy > 0, y_f, 0.0)
    # ellipse: x from its formula (a >= b makes a^2 + t the larger denominator)
    y_e = b * jnp.sqrt(jnp.maximum(1.0 - (x_f / a) ** 2, 0.0))
    x_e = jnp.minimum(x_f, a)
    # hyperbola: whichever denominator is larger
    use_x = dx >= dy
    x_h = jnp.where(use_x, jnp.maximum(x_f, a), a * jnp.sqrt(1.0 + (y_f / b) ** 2))
    y_h = jnp.where(use_x, b * jnp.sqrt(jnp.maximum((x_f / a) ** 2 - 1.0, 0.0)), y_f)
    x = jnp.where(hyperbola, x_h, x_e)
    y = jnp.where(hyperbola, y_h, y_e)
    return jnp.where(u < 0, -x, x), jnp.where(v < 0, -y, y)


def _n_newton(dtype) -> int:
    # worst case (far points, bisection steps) needs about the mantissa length
    return 400 if jnp.dtype(dtype) == jnp.float64 else 200


def _foot(theta, px, py, rtol, fr=None):
    """Signed orthogonal distances ``(..., N)``, foot points ``fx, fy (..., N)`` and the frame.

    theta ``(..., 6)``; px, py ``(..., N)``. Positive where the conic polynomial is
    positive (outside an ellipse with the library's sign convention).
    """
    fr = _frame(theta, rtol) if fr is None else fr
    col = lambda v: v[..., None]
    c, s, a, b = col(fr.c), col(fr.s), col(fr.a), col(fr.b)
    dx, dy = px - col(fr.center[..., 0]), py - col(fr.center[..., 1])
    u = c * dx + s * dy
    v = -s * dx + c * dy
    hyp = col(fr.kind == HYPERBOLA)
    x, y = _closest_canonical(u, v, a, b, hyp, _n_newton(px.dtype))
    fx = col(fr.center[..., 0]) + c * x - s * y
    fy = col(fr.center[..., 1]) + s * x + c * y
    # Distance along the normal at the foot point rather than |p - foot|: an error of
    # the foot point along the curve then changes it only to second order, which
    # matters for points on (or very near) the curve.
    nx, ny = x / (a * a), jnp.where(hyp, -y, y) / (b * b)
    nn = jnp.sqrt(nx * nx + ny * ny)
    dist = jnp.abs(nx * (u - x) + ny * (v - y)) / jnp.where(nn > 0, nn, 1.0)
    return jnp.sign(_poly(theta, px, py)) * dist, fx, fy, fr


def _grad_q(theta, x, y):
    """Gradient of the conic polynomial at points ``(..., N)`` -> two ``(..., N)`` arrays."""
    A, B, C, D, E = (theta[..., i, None] for i in range(5))
    return 2 * A * x + B * y + D, B * x + 2 * C * y + E


def _sampson(theta, x, y):
    gx, gy = _grad_q(theta, x, y)
    gn = jnp.sqrt(gx * gx + gy * gy)
    return jnp.where(gn > 0, _poly(theta, x, y) / jnp.where(gn > 0, gn, 1.0), 0.0)


def _distances(theta, x, y, rtol, fr=None):
    """Signed distances ``(..., N)``; exact for ellipses and hyperbolas, Sampson's
    first-order approximation for parabolas and degenerate conics (no canonical frame)."""
    d, _, _, fr = _foot(theta, x, y, rtol, fr)
    proper = (fr.kind == ELLIPSE) | (fr.kind == HYPERBOLA)
    return jnp.where(proper[..., None], d, _sampson(theta, x, y))
