"""Conic fitting: ellipses AND hyperbolas, batched, with geometric refinement.

A conic is ``A x^2 + B xy + C y^2 + D x + E y + F = 0`` with coefficients
``[A, B, C, D, E, F]`` of unit L2 norm. The sign is fixed so that the value at the
centre is negative (for ellipses that is ``A + C > 0``); parabolas, which have no
centre, get ``A + C > 0``.

Every fit runs in Hartley-normalised coordinates (points centred on their weighted
mean and scaled to RMS radius sqrt(2)) and the coefficients are mapped back exactly,
so results do not depend on where the data sits or on its scale (1e-3 ... 1e3).

Methods (``fit(points, kind=..., method=...)``):

* ``"direct"`` -- constrained algebraic least squares in Halir & Flusser's reduced
  3x3 form. ``kind="ellipse"`` uses Fitzgibbon's constraint ``4AC - B^2 = 1``;
  ``kind="hyperbola"`` uses the same pencil and picks the eigenvector with
  ``4AC - B^2 < 0`` and the least cost (the middle eigenvalue), so the result is
  always a hyperbola and a conic through the origin (F = 0) is no special case;
  ``kind="any"`` uses Bookstein's invariant constraint ``A^2 + B^2/2 + C^2 = 1``.
  The 3x3 generalised eigenproblem is solved in closed form (cubic + cross
  products), which is what makes batched fits fast.
* ``"taubin"`` -- Taubin's gradient-weighted algebraic fit.
* ``"hyper"`` -- Kanatani & Rangarajan's hyper least squares: the Taubin constraint
  plus the correction that removes the second-order bias.
* ``"geometric"`` -- Levenberg-Marquardt on the exact orthogonal point-to-conic
  distances (closest points by bracketed Newton in the conic's own frame),
  started from ``"hyper"``. The most accurate on short arcs and noisy data.

``taubin``/``hyper``/``geometric`` with ``kind="ellipse"`` or ``"hyperbola"`` fall
back to the direct constrained fit whenever the unconstrained answer has the wrong
type, so the requested kind is always honoured.

Kinds are reported as integer codes (so they batch and jit): ``ELLIPSE = 0``,
``HYPERBOLA = 1``, ``PARABOLA = 2``, ``DEGENERATE = 3``; ``kind_name`` turns them
into strings.

Degenerate data (collinear or identical points) gives ``ok = False`` with finite
coefficients; it never raises inside ``jit``. Non-finite points raise ValueError
when the values are concrete and give ``ok = False`` under ``jit``.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import as_float_array, check_choice, check_finite, check_trailing, is_concrete, result_dtype
from ._xla import row_sums as _row_sums, tuned_jit as _jit

__all__ = [
    "fit",
    "ConicFit",
    "geometry",
    "ConicGeometry",
    "from_geometry",
    "residuals",
    "sample",
    "classify",
    "kind_name",
    "ELLIPSE",
    "HYPERBOLA",
    "PARABOLA",
    "DEGENERATE",
    "KINDS",
    "METHODS",
]

ELLIPSE, HYPERBOLA, PARABOLA, DEGENERATE = 0, 1, 2, 3
KINDS = ("ellipse", "hyperbola", "parabola", "degenerate")
_FIT_KINDS = ("any", "ellipse", "hyperbola")
METHODS = ("direct", "taubin", "hyper", "geometric")
_RESIDUALS = ("exact", "sampson", "none")
_MIN_POINTS = 5


class ConicFit(NamedTuple):
    """Result of :func:`fit`; every field has the batch shape ``...`` of the input.

    coeffs: ``(..., 6)`` unit-norm ``[A, B, C, D, E, F]``.
    kind: ``(...,)`` int code (``ELLIPSE``, ``HYPERBOLA``, ``PARABOLA``, ``DEGENERATE``).
    residual: ``(...,)`` RMS orthogonal (geometric) distance of the points, in data units.
    ok: ``(...,)`` bool; False for degenerate data (collinear / identical / non-finite
      points) or a conic of the wrong kind, in which case ``coeffs`` are finite but
      meaningless.
    """

    coeffs: jax.Array
    kind: jax.Array
    residual: jax.Array
    ok: jax.Array


class ConicGeometry(NamedTuple):
    """Geometric description of a conic (from :func:`geometry`), batch shape ``...``.

    kind: int code. center: ``(..., 2)``. semi_axes: ``(..., 2)`` -- ellipse
    ``(major, minor)``; hyperbola ``(transverse, conjugate)``. angle: direction of
    the major / transverse axis, radians in ``(-pi/2, pi/2]``. eccentricity: ``< 1``
    ellipse, ``> 1`` hyperbola. foci: ``(..., 2, 2)``. asymptotes: ``(..., 2, 2)``
    unit directions of the two asymptotes through ``center`` (hyperbolas only).
    Fields that do not apply to the kind (asymptotes of an ellipse, everything but
    ``kind`` for parabolas and degenerate conics) are NaN.
    """

    kind: jax.Array
    center: jax.Array
    semi_axes: jax.Array
    angle: jax.Array
    eccentricity: jax.Array
    foci: jax.Array
    asymptotes: jax.Array


def kind_name(kind) -> str | list:
    """String name(s) of integer kind code(s): ``kind_name(0) == "ellipse"``."""
    arr = np.asarray(kind)
    if arr.ndim == 0:
        return KINDS[int(arr)]
    return [kind_name(k) for k in arr]


# ---------------------------------------------------------------------------
# small closed-form linear algebra, elementwise over the batch
# ---------------------------------------------------------------------------
# 3x3 matrices are nested lists of arrays with the batch shape (or Python floats for
# constants, whose zero entries drop out when traced). Batched 3x3 LAPACK calls, and
# even batched 3x3 matrix products, cost XLA's CPU backend far more than these few
# fused elementwise kernels.

def _entries(mom, rows, cols):
    """Block of the scatter matrix as a nested list of arrays, read from the moments
    ``(..., 15)``: ``[[S[..., i, j] for j in cols] for i in rows]``."""
    return [[mom[..., int(_S_INDEX[i, j])] for j in cols] for i in rows]


def _dot(terms):
    """Sum of products over pairs, skipping Python-constant zeros."""
    out = 0.0
    for a, b in terms:
        if not (isinstance(a, float) and a == 0.0) and not (isinstance(b, float) and b == 0.0):
            out = out + a * b
    return out


def _matmul3(A, B):
    return [[_dot((A[i][k], B[k][j]) for k in range(3)) for j in range(3)] for i in range(3)]


def _det3(M):
    return (M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1])
            - M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0])
            + M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]))


def _adj3(M):
    """Adjugate (transposed cofactor matrix) of a 3x3 matrix."""
    c = lambda i, j: (M[(i + 1) % 3][(j + 1) % 3] * M[(i + 2) % 3][(j + 2) % 3]
                      - M[(i + 1) % 3][(j + 2) % 3] * M[(i + 2) % 3][(j + 1) % 3])
    return [[c(j, i) for j in range(3)] for i in range(3)]


def _trace_prod(A, B):
    """trace(A @ B)."""
    return _dot((A[i][j], B[j][i]) for i in range(3) for j in range(3))


def _cross(p, q):
    return [p[1] * q[2] - p[2] * q[1], p[2] * q[0] - p[0] * q[2], p[0] * q[1] - p[1] * q[0]]


def _null3(X):
    """Unit vector spanning the (numerical) null space of a symmetric 3x3 matrix.

    The largest cross product of two rows: exact for a rank-2 matrix and the most
    accurate of the three choices. Returns ``(vector as 3 arrays, norm of that cross
    product)``.
    """
    cands = [_cross(X[0], X[1]), _cross(X[0], X[2]), _cross(X[1], X[2])]
    norms = [c[0] * c[0] + c[1] * c[1] + c[2] * c[2] for c in cands]
    pick01 = norms[0] >= norms[1]
    v = [jnp.where(pick01, c0, c1) for c0, c1 in zip(cands[0], cands[1])]
    n2 = jnp.where(pick01, norms[0], norms[1])
    pick2 = norms[2] > n2
    v = [jnp.where(pick2, c2, c) for c2, c in zip(cands[2], v)]
    n2 = jnp.where(pick2, norms[2], n2)
    n = jnp.sqrt(n2)
    safe = n > 0
    inv = 1.0 / jnp.where(safe, n, 1.0)
    return [jnp.where(safe, v[0] * inv, 1.0), jnp.where(safe, v[1] * inv, 0.0), jnp.where(safe, v[2] * inv, 0.0)], n


def _cubic_root(c0, c1, c2, c3, k):
    """The ``k``-th largest (0, 1 or 2) real root of ``c3 l^3 + c2 l^2 + c1 l + c0`` (all real).

    Trigonometric form, then two Newton steps on the original polynomial to undo
    the cancellation of ``t - a2/3`` for a root near zero (the noise-free case).
    """
    a2, a1, a0 = c2 / c3, c1 / c3, c0 / c3
    p = a1 - a2 * a2 / 3.0
    q = 2.0 * a2 ** 3 / 27.0 - a2 * a1 / 3.0 + a0
    pn = jnp.minimum(p, 0.0)
    r = jnp.sqrt(-pn / 3.0)
    denom = jnp.where(r > 0, 2.0 * r ** 3, 1.0)
    arg = jnp.clip(jnp.where(r > 0, -q / denom, 1.0), -1.0, 1.0)
    phi = jnp.arccos(arg) / 3.0
    x = 2.0 * r * jnp.cos(phi - 2.0 * np.pi * k / 3.0) - a2 / 3.0
    for _ in range(2):
        f = ((x + a2) * x + a1) * x + a0
        df = (3.0 * x + 2.0 * a2) * x + a1
        ok = jnp.abs(df) > 0
        x_new = x - jnp.where(ok, f / jnp.where(ok, df, 1.0), 0.0)
        f_new = ((x_new + a2) * x_new + a1) * x_new + a0
        # keep a step only if it does not make |f| worse (it never should near a simple root)
        x = jnp.where(jnp.abs(f_new) <= jnp.abs(f), x_new, x)
    return x


# ---------------------------------------------------------------------------
# normalisation and scatter matrices
# ---------------------------------------------------------------------------

# exponents (p, q) of the design vector z = [x^2, xy, y^2, x, y, 1]
_Z_EXP = ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))
_MOM_EXP = tuple((p, d - p) for d in range(5) for p in range(d, -1, -1))
_MOM_INDEX = {e: i for i, e in enumerate(_MOM_EXP)}
# S[i, j] = moment(z_i * z_j): a static gather from the 15 moments of degree <= 4
_S_INDEX = np.array([[_MOM_INDEX[(a[0] + b[0], a[1] + b[1])] for b in _Z_EXP] for a in _Z_EXP])
_MOM_DEGREE = np.array([p + q for p, q in _MOM_EXP])


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


# ---------------------------------------------------------------------------
# conic invariants, classification and sign convention
# ---------------------------------------------------------------------------

def _invariants(theta):
    """(J = AC - B^2/4, centre, F' = value at the centre, scale of the terms in F')."""
    A, B, C, D, E, F = (theta[..., i] for i in range(6))
    J = A * C - 0.25 * B * B
    safe = J != 0
    Js = jnp.where(safe, J, 1.0)
    cx = jnp.where(safe, -(C * D - 0.5 * B * E) / (2.0 * Js), 0.0)
    cy = jnp.where(safe, -(A * E - 0.5 * B * D) / (2.0 * Js), 0.0)
    Fp = F + 0.5 * (D * cx + E * cy)
    term = (jnp.abs(F) + jnp.abs(D * cx) + jnp.abs(E * cy)
            + jnp.abs(A) * cx * cx + jnp.abs(B * cx * cy) + jnp.abs(C) * cy * cy)
    return J, jnp.stack([cx, cy], axis=-1), Fp, term


def _classify(theta, rtol, inv=None):
    """Kind codes ``(...)``; ``inv`` is ``_invariants(theta)`` when already computed."""
    J, _, Fp, term = _invariants(theta) if inv is None else inv
    A, B, C = theta[..., 0], theta[..., 1], theta[..., 2]
    quad = A * A + 0.5 * B * B + C * C
    parabolic = jnp.abs(J) <= rtol * quad
    # a parabola has no centre: test the determinant of the 3x3 conic matrix instead
    D, E, F = theta[..., 3], theta[..., 4], theta[..., 5]
    delta = (A * (C * F - 0.25 * E * E) - 0.5 * B * (0.5 * B * F - 0.25 * D * E)
             + 0.5 * D * (0.25 * B * E - 0.5 * C * D))
    norm3 = jnp.sum(theta * theta, axis=-1) ** 1.5
    flat = jnp.where(parabolic, jnp.abs(delta) <= rtol * norm3, jnp.abs(Fp) <= rtol * term)
    degenerate = flat | (quad == 0) | ~jnp.all(jnp.isfinite(theta), axis=-1)
    imaginary = (J > 0) & (Fp * (A + C) > 0)
    kind = jnp.where(J > 0, ELLIPSE, HYPERBOLA)
    kind = jnp.where(parabolic, PARABOLA, kind)
    kind = jnp.where(degenerate | imaginary, DEGENERATE, kind)
    return kind.astype(jnp.int32)


def _rtol(dtype):
    return 1e3 * float(jnp.finfo(dtype).eps)


def _unit(theta):
    """Scale coefficient vectors ``(..., 6)`` to unit norm (all-zero ones stay zero)."""
    n = jnp.linalg.norm(theta, axis=-1, keepdims=True)
    return theta / jnp.where(n > 0, n, 1.0)


def _canonical_sign(theta):
    """Unit norm, sign such that the value at the centre is negative (A + C > 0 if none)."""
    theta = _unit(theta)
    J, _, Fp, _ = _invariants(theta)
    A, C = theta[..., 0], theta[..., 2]
    key = jnp.where(jnp.abs(J) > _rtol(theta.dtype) * (A * A + C * C + theta[..., 1] ** 2), -Fp, A + C)
    return jnp.where((key < 0)[..., None], -theta, theta)


# ---------------------------------------------------------------------------
# algebraic fits (single point set; batching is vmap)
# ---------------------------------------------------------------------------

# a^T C a = 4AC - B^2 (Fitzgibbon) and A^2 + B^2/2 + C^2 (Bookstein, Euclidean invariant)
_C_FITZ = ((0.0, 0.0, 2.0), (0.0, -1.0, 0.0), (2.0, 0.0, 0.0))
_C_BOOK = ((1.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 1.0))


def _spread(mom):
    """False for collinear (or identical) points; mom ``(..., 15)``.

    ``S[3:, 3:]`` is the scatter of (x, y, 1); with trace ~ 3 after normalisation its
    determinant vanishes exactly when the points are collinear.
    """
    return _det3(_entries(mom, range(3, 6), range(3, 6))) > 1e2 * jnp.finfo(mom.dtype).eps


def _direct(mom, kind):
    """Halir-Flusser reduced constrained fit from the moments ``(..., 15)`` of normalised points.

    Returns ``(theta (..., 6), ok (...))``; ``ok`` is False for collinear points or a
    rank<=1 pencil.
    """
    eps = jnp.finfo(mom.dtype).eps
    S1 = _entries(mom, range(3), range(3))
    S2 = _entries(mom, range(3), range(3, 6))
    S3 = _entries(mom, range(3, 6), range(3, 6))
    d3 = _det3(S3)
    well = d3 > 1e2 * eps  # _spread
    inv_d3 = 1.0 / jnp.where(well, d3, 1.0)
    S3adj = _adj3(S3)
    # T = -S3^-1 S2^T maps the quadratic part a to the linear one; M = S1 + S2 T
    T = [[-_dot((S3adj[i][k], S2[j][k]) for k in range(3)) * inv_d3 for j in range(3)] for i in range(3)]
    S2T = _matmul3(S2, T)
    M = [[S1[i][j] + 0.5 * (S2T[i][j] + S2T[j][i]) for j in range(3)] for i in range(3)]
    Cm = _C_BOOK if kind == "any" else _C_FITZ
    c0 = _det3(M)
    c1 = -_trace_prod(_adj3(M), Cm)
    c2 = _trace_prod(M, _adj3(Cm))
    c3 = -_det3(Cm)
    # Pencil M a = l C a with M PSD: l = a^T M a / a^T C a. For Fitzgibbon's C
    # (inertia +,-,-) exactly one l >= 0 belongs to an ellipse (the largest) and the
    # hyperbola of least cost is the negative l closest to 0 (the middle one).
    # Bookstein's C is positive definite: the least cost is the smallest l.
    lam = _cubic_root(c0, c1, c2, c3, {"ellipse": 0, "hyperbola": 1, "any": 2}[kind])
    a, strength = _null3([[M[i][j] - lam * Cm[i][j] if Cm[i][j] else M[i][j] for j in range(3)]
                          for i in range(3)])
    ok = well & (strength > eps * (1.0 + sum(M[i][j] * M[i][j] for i in range(3) for j in range(3))))
    lin = [_dot((T[i][k], a[k]) for k in range(3)) for i in range(3)]
    return jnp.stack(a + lin, axis=-1), ok


def _taubin_n(S):
    """Mean of V0[z] = J J^T, J = dz/d(x, y), from the moments in ``S[:, 5]`` (means of z)."""
    mxx, mxy, myy, mom_x, mom_y = S[0, 5], S[1, 5], S[2, 5], S[3, 5], S[4, 5]
    z = jnp.zeros_like(mxx)
    o = jnp.ones_like(mxx)
    return jnp.array([
        [4 * mxx, 2 * mxy, z, 2 * mom_x, z, z],
        [2 * mxy, mxx + myy, 2 * mxy, mom_y, mom_x, z],
        [z, 2 * mxy, 4 * myy, z, 2 * mom_y, z],
        [2 * mom_x, mom_y, z, o, z, z],
        [z, mom_x, 2 * mom_y, z, o, z],
        [z, z, z, z, z, z],
    ])


def _v0(q):
    """Per-point V0[z] = J J^T, ``(N, 6, 6)``."""
    x, y = q[:, 0], q[:, 1]
    z, o = jnp.zeros_like(x), jnp.ones_like(x)
    Jx = jnp.stack([2 * x, y, z, o, z, z], axis=-1)
    Jy = jnp.stack([z, x, 2 * y, z, o, z], axis=-1)
    return Jx[:, :, None] * Jx[:, None, :] + Jy[:, :, None] * Jy[:, None, :]


def _pencil_max_abs(M, N, eig_M=None):
    """theta for the largest |mu| of ``N theta = mu M theta`` (M PSD, possibly singular).

    ``eig_M``: ``jnp.linalg.eigh(M)`` if the caller has it already. Sharing it matters
    beyond speed: two independent batched LAPACK calls in flight at once have
    deadlocked XLA's CPU worker pool (jaxlib 0.10 on 2 cores).

    Whitening by a floored ``M^-1/2`` and a symmetric eigensolver give a start that is
    right even when M is singular (noise-free data: mu = inf); two Newton steps on the
    bordered system ``[(M - l N) theta; theta0^T theta - 1] = 0`` then restore full
    precision, because that system stays regular when ``M - l N`` is singular.
    """
    dt = M.dtype
    eps = jnp.finfo(dt).eps
    s, U = jnp.linalg.eigh(M) if eig_M is None else eig_M
    floor = jnp.maximum(s[-1], jnp.finfo(dt).tiny) * 10 * eps
    Wh = (U / jnp.sqrt(jnp.maximum(s, floor))) @ U.T
    K = Wh @ N @ Wh
    mu, V = jnp.linalg.eigh(0.5 * (K + K.T))
    i = jnp.argmax(jnp.abs(mu))
    theta = Wh @ V[:, i]
    theta = theta / jnp.linalg.norm(theta)
    theta0 = theta

    def newton(carry, _):
        th, _ = carry
        nth = N @ th
        den = th @ nth
        lam = jnp.where(den != 0, (th @ M @ th) / jnp.where(den != 0, den, 1.0), 0.0)
        Jb = jnp.zeros((7, 7), dt)
        Jb = Jb.at[:6, :6].set(M - lam * N).at[:6, 6].set(-nth).at[6, :6].set(theta0)
        rhs = -jnp.concatenate([(M - lam * N) @ th, (theta0 @ th - 1.0)[None]])
        step = jnp.linalg.solve(Jb, rhs)[:6]
        new = th + step
        new = new / jnp.linalg.norm(new)
        good = jnp.all(jnp.isfinite(new))
        return (jnp.where(good, new, th), None), None

    (theta, _), _ = lax.scan(newton, (theta, None), None, length=2)
    return theta


def _taubin_hyper(q, w, S, hyper):
    N = _taubin_n(S)
    eig_S = None
    if hyper:
        W = jnp.sum(w)
        zc = S[:, 5]  # mean of z
        e = jnp.array([1, 0, 1, 0, 0, 0], q.dtype)
        sym = lambda A: A + A.T
        N = N + sym(jnp.outer(zc, e))
        eig_S = s, U = jnp.linalg.eigh(S)
        inv = jnp.where(jnp.arange(6) >= 1, 1.0 / jnp.where(s > 0, s, 1.0), 0.0)  # rank-5 pseudo-inverse
        M5 = (U * inv) @ U.T
        Z = _design(q)
        V0 = _v0(q)
        MZ = Z @ M5  # (N, 6)
        quad = jnp.sum(MZ * Z, axis=1)
        w2 = w * w / (W * W)
        t1 = jnp.einsum("n,nij->ij", w2 * quad, V0)
        VMZ = jnp.einsum("nij,nj->ni", V0, MZ)
        t2 = jnp.einsum("n,ni,nj->ij", w2, VMZ, Z)
        N = N - (t1 + sym(t2))
    return _pencil_max_abs(S, N, eig_S)


# ---------------------------------------------------------------------------
# orthogonal distances: closest points in the conic's own frame
# ---------------------------------------------------------------------------

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
    h = jnp.sqrt((A - C) ** 2 + B * B)
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


# ---------------------------------------------------------------------------
# geometric refinement
# ---------------------------------------------------------------------------

def _kind_ok(kind_code, kind):
    if kind == "ellipse":
        return kind_code == ELLIPSE
    if kind == "hyperbola":
        return kind_code == HYPERBOLA
    return (kind_code == ELLIPSE) | (kind_code == HYPERBOLA)


def _geometric(theta0, x, y, w, kind, max_iter, tol, rtol):
    """Levenberg-Marquardt on sum w d_i^2 over unit-norm theta, for a batch of fits.

    theta0 ``(..., 6)``; x, y, w ``(..., N)``. d(theta) for a point p with foot point
    x* has gradient z(x*)/|grad Q(x*)|, so the Jacobian needs no differentiation
    through the root finding. Steps that leave the requested kind are rejected like
    steps that increase the cost. Each fit stops on its own; the loop runs until all
    have (or ``max_iter``), written batched rather than vmapped so that the closest-point
    search keeps its fast path (under vmap its ``lax.cond`` would become a select).
    """
    dt = x.dtype
    eye = jnp.eye(6, dtype=dt)

    def cost_of(theta):
        d, fx, fy, fr = _foot(theta, x, y, rtol)
        good = _kind_ok(fr.kind, kind) & jnp.all(jnp.isfinite(d), axis=-1)
        return jnp.where(good, jnp.sum(w * d * d, axis=-1), jnp.inf), d, fx, fy

    def body(state):
        theta, cost, d, fx, fy, mu, it, done = state
        gx, gy = _grad_q(theta, fx, fy)
        gn = jnp.sqrt(gx * gx + gy * gy)
        Jm = _design(jnp.stack([fx, fy], axis=-1)) / jnp.where(gn > 0, gn, 1.0)[..., None]
        H = jnp.einsum("...ni,...nj->...ij", Jm * w[..., None], Jm)
        r = jnp.einsum("...ni,...n->...i", Jm, w * d)
        scale = (jnp.trace(H, axis1=-2, axis2=-1) / 6.0 + jnp.finfo(dt).tiny)[..., None, None]
        # theta is a null direction of H (scale invariance); theta theta^T pins it.
        diag = jnp.diagonal(H, axis1=-2, axis2=-1)[..., None] * eye
        Aug = H + mu[..., None, None] * (diag + 1e-12 * scale * eye) + scale * theta[..., :, None] * theta[..., None, :]
        step = -jnp.linalg.solve(Aug, r[..., None])[..., 0]
        cand = _unit(theta + step)
        new_cost, new_d, new_fx, new_fy = cost_of(cand)
        better = (new_cost < cost) & ~done
        keep = lambda new, old: jnp.where(better.reshape(better.shape + (1,) * (new.ndim - better.ndim)), new, old)
        mu_n = jnp.where(done, mu, jnp.where(better, mu * 0.3, mu * 10.0))
        small = (cost - new_cost <= tol * cost) | (jnp.linalg.norm(step, axis=-1) <= tol)
        done = done | (better & small) | (mu_n > 1e12) | ~jnp.isfinite(cost)
        return (keep(cand, theta), keep(new_cost, cost), keep(new_d, d), keep(new_fx, fx), keep(new_fy, fy),
                mu_n, it + 1, done)

    cost0, d0, fx0, fy0 = cost_of(theta0)
    state = (theta0, cost0, d0, fx0, fy0, jnp.full(cost0.shape, 1e-3, dt), jnp.asarray(0), ~jnp.isfinite(cost0))
    state = lax.while_loop(lambda s: (s[6] < max_iter) & ~jnp.all(s[7]), body, state)
    return state[0]


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

# The fit runs as a few jitted stages so that the per-point ones (moments, residuals)
# compile once for every kind and method.

_stats_jit = _jit(_stats)


@_jit(static_argnames="kind")
def _direct_jit(mom, *, kind):
    return _direct(mom, kind)


@_jit(static_argnames=("kind", "hyper"))
def _taubin_jit(points, weights, st, *, kind, hyper):
    """Taubin / hyper fits ``(theta (B, 6), ok (B,))``, the direct fit where their type is wrong."""
    x, y, w = _normalised(points, weights, st)
    S = _scatter(st.mom)
    theta = jax.vmap(lambda S, q, w: _taubin_hyper(q, w, S, hyper=hyper))(S, jnp.stack([x, y], axis=-1), w)
    ok = jnp.all(jnp.isfinite(theta), axis=-1) & _spread(st.mom)
    if kind != "any":
        # the unconstrained fit may have the wrong type: use the constrained one then
        theta_d, ok_d = _direct(st.mom, kind)
        right = _kind_ok(_classify(theta, _rtol(theta.dtype)), kind)
        theta = jnp.where(right[:, None], theta, theta_d)
        ok = jnp.where(right, ok, ok_d)
    return theta, ok


@_jit(static_argnames=("kind", "max_iter"))
def _geometric_jit(points, weights, st, theta, tol, *, kind, max_iter):
    x, y, w = _normalised(points, weights, st)
    return _geometric(theta, x, y, w, kind, max_iter, tol, _rtol(theta.dtype))


@_jit(static_argnames="residual")
def _finish_jit(points, weights, st, theta, ok, want, *, residual):
    """Kind codes, residuals, and coefficients mapped back to data coordinates.

    ``want`` is the index of the requested kind in ``_FIT_KINDS``, traced so that one
    compilation serves every kind.
    """
    rtol = _rtol(theta.dtype)
    theta = _finite_or_x2(theta)
    fr = _frame(theta, rtol)
    code = fr.kind  # classified in normalised coordinates, where it is well conditioned
    if residual == "none":
        res = jnp.full(code.shape, jnp.nan, theta.dtype)
    else:
        x, y, w = _normalised(points, weights, st)
        d = _distances(theta, x, y, rtol, fr) if residual == "exact" else _sampson(theta, x, y)
        res = jnp.sqrt(jnp.sum(w * d * d, axis=-1) / st.weight) / st.scale
        res = jnp.where(jnp.isfinite(res), res, jnp.inf)
    coeffs = _canonical_sign(_denormalise(theta, st.mean, st.scale))
    proper = (code == ELLIPSE) | (code == HYPERBOLA)
    right = jnp.where(want == 1, code == ELLIPSE, jnp.where(want == 2, code == HYPERBOLA, proper))
    ok = ok & st.valid & right & jnp.all(jnp.isfinite(coeffs), axis=-1)
    return _finite_or_x2(coeffs), code, res, ok


def _finite_or_x2(theta):
    """Coefficients ``(..., 6)`` with non-finite rows replaced by x^2 = 0 (degenerate)."""
    return jnp.where(jnp.all(jnp.isfinite(theta), axis=-1, keepdims=True), theta,
                     jnp.zeros_like(theta).at[..., 0].set(1.0))


def fit(points, *, kind: str = "any", method: str = "direct", weights=None, max_iter: int = 50,
        tol: float = 1e-10, residual: str = "exact") -> ConicFit:
    """Fit a conic to 2-D points, batched over leading axes.

    Args:
      points: ``(..., N, 2)``, N >= 5.
      kind: "any" (best conic of any type), "ellipse" (4AC - B^2 > 0 enforced) or
        "hyperbola" (4AC - B^2 < 0 enforced).
      method: "direct" (constrained algebraic, Halir-Flusser), "taubin", "hyper"
        (hyper least squares) or "geometric" (orthogonal distances, LM from "hyper").
      weights: optional ``(..., N)`` non-negative point weights (broadcastable). Under
        ``jit``, where they cannot raise, negative, NaN or all-zero weights give
        ``ok = False`` for that fit.
      max_iter, tol: iteration limit and relative cost tolerance of "geometric".
      residual: how ``ConicFit.residual`` is computed: "exact" (RMS orthogonal
        distance; on CPU the costliest part of a direct fit), "sampson" (RMS of Sampson's
        first-order distance, one cheap pass; close to exact for points near the
        curve) or "none" (NaN; the fit alone, as scikit-image's ``estimate``).

    Returns:
      :class:`ConicFit` with ``coeffs (..., 6)``, ``kind``, ``residual``, ``ok`` ``(...)``.

    Raises:
      ValueError: last axis not 2, fewer than 5 points, unknown kind/method/residual,
        mis-shaped weights, or (for concrete input) NaN/inf points or negative weights.

    Performance: the fit runs as a few jitted stages (compiled once per shape; the
    per-point stages are shared by every kind). Problems of up to 32k points are padded
    to a few bucket sizes and compiled with light XLA optimisation; larger ones keep
    their shape. Call it directly on arrays; wrapping it in ``jax.jit`` also works (it
    then becomes part of the caller's computation).

    Example:
      >>> t = jnp.linspace(0, 2 * jnp.pi, 20)
      >>> pts = jnp.stack([3 * jnp.cos(t) + 1, 2 * jnp.sin(t)], -1)
      >>> fit(pts, kind="ellipse").coeffs  # proportional to [4, 0, 9, -8, 0, -32]
    """
    where = "conic.fit"
    check_choice(kind, _FIT_KINDS, "kind", where)
    check_choice(method, METHODS, "method", where)
    check_choice(residual, _RESIDUALS, "residual", where)
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    n = pts.shape[-2]
    if n < _MIN_POINTS:
        raise ValueError(f"{where}: argument 'points' needs at least {_MIN_POINTS} points per fit, got {n}")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"{where}: max_iter must be a non-negative int, got {max_iter!r}")
    batch = pts.shape[:-2]
    w = None
    if weights is not None:
        w = as_float_array(weights, "weights", where, dtype=pts.dtype)
        try:
            if np.broadcast_shapes(w.shape, pts.shape[:-1]) != pts.shape[:-1]:
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}: argument 'weights' must have shape {tuple(pts.shape[:-1])}, "
                             f"got {tuple(w.shape)}") from None
    nb = int(np.prod(batch, dtype=np.int64))
    shape = (nb, n)
    if nb * n <= _BUCKET_MAX:  # pad to bucket sizes: few distinct compilations
        shape = (_bucket(nb, 1), _bucket(n, 4))
    if pts.shape != shape + (2,) or (w is not None and w.shape != shape):
        # one small compiled function rather than several eager ops (each compiles too)
        flat, wf = _prepare(pts, w, shape=shape, light_compile=True)
    else:
        flat, wf = pts, w
    light = flat.shape[0] * flat.shape[1] <= _BUCKET_MAX
    st = _stats_jit(flat, wf, light_compile=light)
    if method == "direct":
        theta, ok = _direct_jit(st.mom, kind=kind, light_compile=light)
    else:
        theta, ok = _taubin_jit(flat, wf, st, kind=kind, hyper=method != "taubin", light_compile=light)
    if method == "geometric":
        theta = _geometric_jit(flat, wf, st, theta, jnp.asarray(tol, pts.dtype), kind=kind, max_iter=max_iter,
                               light_compile=light)
    want = np.int32(_FIT_KINDS.index(kind))
    out = ConicFit(*_finish_jit(flat, wf, st, theta, ok, want, residual=residual, light_compile=light))
    # checked last, so that waiting for the device does not hold up dispatching the stages
    if is_concrete(st.valid) and not np.all(np.asarray(st.valid)):
        _raise_invalid(pts, w, where)
    if out.ok.shape != batch:
        out = _unpad(out, batch=batch, light_compile=True)
    return out


def _raise_invalid(pts, w, where):
    """The ValueError for NaN/inf points or bad weights, located on the host."""
    check_finite(pts, "points", where)
    if w is not None:
        check_finite(w, "weights", where)
        if bool(jnp.any(w < 0)):
            raise ValueError(f"{where}: argument 'weights' must be non-negative")
    raise ValueError(f"{where}: invalid points or weights")  # not reached: the checks above name it


# Problems up to this many points are padded to bucket sizes (zero-weight points,
# repeated fits) so that new shapes rarely compile anew; larger ones keep their shape,
# where the copy would cost more than the compilation saves.
_BUCKET_MAX = 1 << 15


def _bucket(n: int, per_octave: int) -> int:
    """Smallest size >= n on a grid with ``per_octave`` steps per power of two."""
    if n <= 8 and per_octave > 1:
        return n
    top = 1 << (n - 1).bit_length()
    step = max(top // (2 * per_octave), 1)
    return -(-n // step) * step


@_jit(static_argnames="shape")
def _prepare(points, weights, *, shape):
    """Points ``(..., N, 2)`` and weights (or None) as ``(B, N, 2)`` / ``(B, N)``, padded
    to ``shape = (B, N)``: extra points are copies of a fit's first point with zero
    weight, extra fits copies of the first fit (dropped by :func:`_unpad`)."""
    nb, n = shape
    n0 = points.shape[-2]
    if weights is not None:
        weights = jnp.broadcast_to(weights, points.shape[:-1]).reshape((-1, n0))
    points = points.reshape((-1, n0, 2))
    b0 = points.shape[0]
    if weights is None and n > n0:
        weights = jnp.ones((b0, n0), points.dtype)
    if n > n0:
        points = jnp.concatenate([points, jnp.broadcast_to(points[:, :1], (b0, n - n0, 2))], axis=1)
        weights = jnp.concatenate([weights, jnp.zeros((b0, n - n0), weights.dtype)], axis=1)
    if nb > b0:
        points = jnp.concatenate([points, jnp.broadcast_to(points[:1], (nb - b0,) + points.shape[1:])])
        if weights is not None:
            weights = jnp.concatenate([weights, jnp.broadcast_to(weights[:1], (nb - b0, n))])
    return points, weights


@_jit(static_argnames="batch")
def _unpad(out, *, batch):
    nb = int(np.prod(batch, dtype=np.int64))
    return ConicFit(*(x[:nb].reshape(batch + x.shape[1:]) for x in out))


# ---------------------------------------------------------------------------
# geometry, construction, residuals, sampling
# ---------------------------------------------------------------------------

def _coeffs(coeffs, where):
    c = as_float_array(coeffs, "coeffs", where)
    check_trailing(c, (6,), "coeffs", where)
    return c


def classify(coeffs):
    """Kind code(s) ``(...,)`` of conic coefficients ``(..., 6)`` (scale-invariant test)."""
    c = _coeffs(coeffs, "conic.classify")
    return _classify_jit(c)


@jax.jit
def _classify_jit(c):
    return _classify(c, _rtol(c.dtype))


def geometry(coeffs) -> ConicGeometry:
    """Centre, semi-axes, angle, eccentricity, foci (and asymptotes) of conics.

    Args:
      coeffs: ``(..., 6)`` ``[A, B, C, D, E, F]`` (any scale or sign).

    Returns:
      :class:`ConicGeometry`; fields that do not apply to a kind are NaN.

    Example:
      >>> geometry(jnp.array([4., 0, 9, -8, 0, -32])).semi_axes  # [3., 2.]
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
    angle = jnp.arctan2(fr.s, fr.c)
    angle = jnp.where(angle > 0.5 * jnp.pi, angle - jnp.pi, angle)
    angle = jnp.where(angle <= -0.5 * jnp.pi, angle + jnp.pi, angle)
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


def from_geometry(center, semi_axes, angle, *, kind="ellipse"):
    """Unit-norm coefficients ``(..., 6)`` of the conic with the given geometry.

    Args:
      center: ``(..., 2)``; semi_axes: ``(..., 2)`` positive -- (major-or-first,
        second) for ellipses, (transverse, conjugate) for hyperbolas; angle: ``(...)``
        direction of the first axis in radians; kind: "ellipse" or "hyperbola" (or
        the int codes, also as an array to mix kinds in a batch).

    Example:
      >>> from_geometry(jnp.array([1., 0]), jnp.array([3., 2]), 0.0)  # ~ [4, 0, 9, -8, 0, -32]/n
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


def residuals(coeffs, points, *, kind: str = "algebraic"):
    """Residuals of points ``(..., N, 2)`` w.r.t. conics ``(..., 6)`` -> ``(..., N)``.

    kind="algebraic": ``theta . z(p)`` with theta scaled to unit norm.
    kind="geometric": signed orthogonal distance (exact for ellipses and hyperbolas,
    positive where the unit-norm polynomial is positive; Sampson's first-order
    distance for parabolas and degenerate conics).
    """
    where = "conic.residuals"
    check_choice(kind, ("algebraic", "geometric"), "kind", where)
    c = _coeffs(coeffs, where)
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    dt = jnp.result_type(c.dtype, pts.dtype)
    return _residuals(c.astype(dt), pts.astype(dt), kind)


@_jit(static_argnums=2)
def _residuals(c, pts, kind):
    batch = jnp.broadcast_shapes(c.shape[:-1], pts.shape[:-2])
    c = jnp.broadcast_to(c, batch + (6,))
    pts = jnp.broadcast_to(pts, batch + pts.shape[-2:])
    c = _unit(c)
    if kind == "algebraic":
        return _poly(c, pts[..., 0], pts[..., 1])
    flat_c = c.reshape((-1, 6))
    flat_p = pts.reshape((-1,) + pts.shape[-2:])
    # normalise so the frame computation is well conditioned at any data scale
    ones = jnp.ones(flat_p.shape[:-1], flat_p.dtype)
    st = _stats(flat_p, ones)
    x, y, _ = _normalised(flat_p, ones, st)
    T = _denorm_matrix_inv(st.mean, st.scale, flat_c)
    d = _distances(T, x, y, _rtol(c.dtype)) / st.scale[:, None]
    d = jnp.where(jnp.all(jnp.isfinite(flat_p), axis=-1), d, jnp.nan)  # a NaN point has no distance
    return d.reshape(batch + pts.shape[-2:-1])


def _denorm_matrix_inv(m, s, theta):
    """Coefficients in normalised coordinates ``u = s (x - m)`` of a data-frame conic."""
    # x = u / s + m: substitute, i.e. the inverse map of _denormalise.
    return _unit(_denormalise(theta, -m * s[..., None], 1.0 / s))


def sample(coeffs, n: int, *, t_max: float = 2.0):
    """``n`` points on each conic: ``(..., n, 2)``.

    Ellipses: evenly spaced in the parametric angle. Hyperbolas: both branches,
    ``ceil(n/2)`` points on the first and ``floor(n/2)`` on the second, at
    ``(+-a cosh t, b sinh t)`` for t in ``[-t_max, t_max]``. Parabolas and degenerate
    conics give NaN.
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
