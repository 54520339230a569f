"""Weighted moments of point sets, Hartley normalisation and scatter matrices."""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._xla import row_sums as _row_sums


# exponents (p, q) of the design vector z = [x^2, xy, y^2, x, y, 1]
_Z_EXP = ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))
_MOM_EXP = tuple((p, d - p) for d in range(5) for p in range(d, -1, -1))
_MOM_INDEX = {e: i for i, e in enumerate(_MOM_EXP)}
# S[i, j] = moment(z_i * z_j): a static gather from the 15 moments of degree <= 4
_S_INDEX = np.array([[_MOM_INDEX[(a[0] + b[0], a[1] + b[1])] for b in _Z_EXP] for a in _Z_EXP])
_MOM_DEGREE = np.array([p + q for p, q in _MOM_EXP])


def _entries(mom, rows, cols):
    """Block of the scatter matrix as a nested list of arrays, read from the moments
    ``(..., 15)``: ``[[S[..., i, j] for j in cols] for i in rows]``."""
    return [[mom[..., int(_S_INDEX[i, j])] for j in cols] for i in rows]


def _design(q):
    """z = [x^2, xy, y^2, x, y, 1] for points ``(N, 2)`` -> ``(N, 6)``."""
    x, y = q[..., 0], q[..., 1]
    return jnp.stack([x * x, x * y, y * y, x, y, jnp.ones_like(x)], axis=-1)


def _poly(theta, x, y):
    """Conic polynomial at points: theta ``(..., 6)``, x, y ``(..., N)`` -> ``(..., N)``.

    Written out elementwise: a matrix-vector product per fit would be a batched
    ``dot_general``, which XLA's CPU backend runs several times slower than this.
    """
    A, B, C, D, E, F = (theta[..., i, None] for i in range(6))
    return (A * x + B * y + D) * x + (C * y + E) * y + F


class _Stats(NamedTuple):
    """Per-fit statistics of point sets, batch shape ``...``.

    mean ``(..., 2)`` weighted mean; scale ``(...)`` Hartley scale (normalised points are
    ``(p - mean) * scale``, RMS radius sqrt(2)); weight ``(...)`` total weight; mom
    ``(..., 15)`` weighted mean monomials of the normalised points in ``_MOM_EXP`` order;
    valid ``(...)`` bool, False if any point or weight is NaN/inf or a weight negative.
    """

    mean: jax.Array
    scale: jax.Array
    weight: jax.Array
    mom: jax.Array
    valid: jax.Array


def _coords(points, weights):
    """x, y and weights ``(..., N)``; ``weights=None`` means all ones.

    Invalid values are not masked point by point (that would make XLA materialise
    cleaned copies of the data): they turn the per-fit sums non-finite, which marks the
    whole fit invalid, as a NaN point should.
    """
    px, py = points[..., 0], points[..., 1]
    return px, py, (jnp.ones_like(px) if weights is None else weights)


def _pivot(px, py, w):
    """A point among the data to shift by before taking moments: the weighted mean of
    three fixed points of each set (the first point if those weigh nothing)."""
    n = px.shape[-1]
    idx = sorted({0, n // 3, (2 * n) // 3})
    tot = sum(w[..., i] for i in idx)
    use = tot > 0
    inv = 1.0 / jnp.where(use, tot, 1.0)
    x0 = jnp.where(use, sum(w[..., i] * px[..., i] for i in idx) * inv, px[..., 0])
    y0 = jnp.where(use, sum(w[..., i] * py[..., i] for i in idx) * inv, py[..., 0])
    return x0, y0


# central moment (a, b) from raw moments about another origin offset by (mx, my):
# mu_ab = sum_ij C(a,i) C(b,j) (-mx)^(a-i) (-my)^(b-j) M_ij
_CENTRAL = tuple(
    tuple((math.comb(a, i) * math.comb(b, j), a - i, b - j, _MOM_INDEX[(i, j)])
          for i in range(a + 1) for j in range(b + 1))
    for a, b in _MOM_EXP)


def _stats(points, weights):
    """Centre on the weighted mean, scale to RMS radius sqrt(2), and take the moments.

    One pass over the points: the 15 moments of the points shifted to a pivot among
    them (so the sums stay well conditioned wherever the data sits), from which the
    mean, the central moments (binomial expansion) and the RMS radius follow; the
    moments of the scaled points then follow by powers of the scale. Identical points
    (zero spread) keep scale 1 so nothing divides by zero; zero total weight gives NaN
    statistics and non-finite or negative values mark the fit invalid.
    """
    px, py, w = _coords(points, weights)
    x0, y0 = _pivot(px, py, w)
    ex, ey = px - x0[..., None], py - y0[..., None]
    x2, y2 = ex * ex, ey * ey
    wx = (w, w * ex, w * x2, w * x2 * ex, w * x2 * x2)
    yp = (None, ey, y2, y2 * ey, y2 * y2)
    *raw, neg = _row_sums(*(wx[a] if b == 0 else wx[a] * yp[b] for a, b in _MOM_EXP), jnp.minimum(w, 0.0))
    W = raw[0]
    valid = jnp.isfinite(W) & (neg == 0) & (W > 0)
    for m in raw:
        valid = valid & jnp.isfinite(m)
    raw = [m / W for m in raw]
    mx, my = raw[_MOM_INDEX[(1, 0)]], raw[_MOM_INDEX[(0, 1)]]
    mx_pow, my_pow = [1.0, -mx], [1.0, -my]
    for _ in range(3):
        mx_pow.append(mx_pow[-1] * -mx)
        my_pow.append(my_pow[-1] * -my)
    mom = [sum(c * mx_pow[i] * my_pow[j] * raw[k] if c != 1 or i or j else raw[k]
               for c, i, j, k in terms) for terms in _CENTRAL]
    mom = [jnp.zeros_like(W) if (a, b) in ((1, 0), (0, 1)) else m for (a, b), m in zip(_MOM_EXP, mom)]
    r2 = mom[_MOM_INDEX[(2, 0)]] + mom[_MOM_INDEX[(0, 2)]]
    tiny = jnp.finfo(px.dtype).tiny * 1e4
    s = jnp.where(r2 > tiny, jnp.sqrt(2.0 / jnp.where(r2 > tiny, r2, 1.0)), 1.0)
    s_pow = [jnp.ones_like(s), s, s * s]
    s_pow += [s_pow[2] * s, s_pow[2] * s_pow[2]]
    mom = jnp.stack([m * s_pow[a + b] for (a, b), m in zip(_MOM_EXP, mom)], axis=-1)
    return _Stats(jnp.stack([x0 + mx, y0 + my], axis=-1), s, W, mom, valid)


def _normalised(points, weights, st):
    """Normalised coordinates ``x, y`` and weights ``w``, all ``(..., N)``."""
    px, py, w = _coords(points, weights)
    s = st.scale[..., None]
    return (px - st.mean[..., 0:1]) * s, (py - st.mean[..., 1:2]) * s, w


def _scatter(mom):
    """Weighted mean scatter ``S = sum w z z^T / sum w`` ``(..., 6, 6)`` from the moments."""
    return mom[..., _S_INDEX]


def _denormalise(theta_n, m, s):
    """Coefficients in data coordinates from those in normalised ones, batched.

    theta_n ``(..., 6)``, m ``(..., 2)``, s ``(...)``. With ``u = s (x - mx)``,
    ``v = s (y - my)`` the normalised design vector is ``z(u, v) = T z(x, y)``, so
    ``theta = T^T theta_n``, written out.
    """
    A, B, C, D, E, F = (theta_n[..., i] for i in range(6))
    p, q = -s * m[..., 0], -s * m[..., 1]
    s2 = s * s
    return jnp.stack([
        s2 * A, s2 * B, s2 * C,
        s * (2 * p * A + q * B + D),
        s * (p * B + 2 * q * C + E),
        p * (p * A + q * B + D) + q * (q * C + E) + F,
    ], axis=-1)
