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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import as_float_array, check_choice, check_finite, check_trailing, is_concrete, result_dtype

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
# small closed-form linear algebra (batched LAPACK calls on 3x3 would dominate)
# ---------------------------------------------------------------------------

def _det3(M):
    return (M[0, 0] * (M[1, 1] * M[2, 2] - M[1, 2] * M[2, 1])
            - M[0, 1] * (M[1, 0] * M[2, 2] - M[1, 2] * M[2, 0])
            + M[0, 2] * (M[1, 0] * M[2, 1] - M[1, 1] * M[2, 0]))


def _adj3(M):
    """Adjugate (transposed cofactor matrix) of a 3x3 matrix."""
    c = lambda i, j: (M[(i + 1) % 3, (j + 1) % 3] * M[(i + 2) % 3, (j + 2) % 3]
                      - M[(i + 1) % 3, (j + 2) % 3] * M[(i + 2) % 3, (j + 1) % 3])
    return jnp.stack([jnp.stack([c(j, i) for j in range(3)]) for i in range(3)])


def _null3(X):
    """Unit vector spanning the (numerical) null space of a symmetric 3x3 matrix.

    The largest cross product of two rows: exact for a rank-2 matrix and the most
    accurate of the three choices. Returns ``(vector, norm of that cross product)``.
    """
    r0, r1, r2 = X[0], X[1], X[2]
    cands = jnp.stack([jnp.cross(r0, r1), jnp.cross(r0, r2), jnp.cross(r1, r2)])
    norms = jnp.sum(cands * cands, axis=1)
    i = jnp.argmax(norms)
    v = cands[i]
    n = jnp.sqrt(norms[i])
    safe = n > 0
    return jnp.where(safe, v / jnp.where(safe, n, 1.0), jnp.array([1.0, 0.0, 0.0], X.dtype)), n


def _cubic_roots(c0, c1, c2, c3):
    """Real roots of ``c3 l^3 + c2 l^2 + c1 l + c0`` (all real), descending.

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
    k = jnp.arange(3, dtype=c0.dtype)
    roots = 2.0 * r * jnp.cos(phi - 2.0 * jnp.pi * k / 3.0) - a2 / 3.0

    def newton(x, _):
        f = ((x + a2) * x + a1) * x + a0
        df = (3.0 * x + 2.0 * a2) * x + a1
        ok = jnp.abs(df) > 0
        step = jnp.where(ok, f / jnp.where(ok, df, 1.0), 0.0)
        # keep a step only if it does not make |f| worse (it never should near a simple root)
        x_new = x - step
        f_new = ((x_new + a2) * x_new + a1) * x_new + a0
        return jnp.where(jnp.abs(f_new) <= jnp.abs(f), x_new, x), None

    roots, _ = lax.scan(newton, roots, None, length=2)
    return roots


# ---------------------------------------------------------------------------
# normalisation and scatter matrices
# ---------------------------------------------------------------------------

# exponents (p, q) of the design vector z = [x^2, xy, y^2, x, y, 1]
_Z_EXP = ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))
_MOM_EXP = tuple((p, d - p) for d in range(5) for p in range(d, -1, -1))
_MOM_INDEX = {e: i for i, e in enumerate(_MOM_EXP)}
# S[i, j] = moment(z_i * z_j): a static gather from the 15 moments of degree <= 4
_S_INDEX = np.array([[_MOM_INDEX[(a[0] + b[0], a[1] + b[1])] for b in _Z_EXP] for a in _Z_EXP])


def _design(q):
    """z = [x^2, xy, y^2, x, y, 1] for points ``(N, 2)`` -> ``(N, 6)``."""
    x, y = q[..., 0], q[..., 1]
    return jnp.stack([x * x, x * y, y * y, x, y, jnp.ones_like(x)], axis=-1)


def _normalise(p, w):
    """Centre on the weighted mean and scale to RMS radius sqrt(2).

    Returns ``(q, mean, scale)`` with ``q = (p - mean) * scale``. Identical points
    (zero spread) keep scale 1 so nothing divides by zero.
    """
    W = jnp.sum(w)
    m = jnp.sum(w[:, None] * p, axis=0) / W
    d = p - m
    r2 = jnp.sum(w * jnp.sum(d * d, axis=1)) / W
    tiny = jnp.finfo(p.dtype).tiny * 1e4
    s = jnp.where(r2 > tiny, jnp.sqrt(2.0 / jnp.where(r2 > tiny, r2, 1.0)), 1.0)
    return d * s, m, s


def _scatter(q, w):
    """Weighted mean scatter ``S = sum w z z^T / sum w`` (6x6) from its 15 distinct moments.

    Each moment is its own fused multiply-reduce: on CPU that is several times faster
    than reducing a stacked ``(N, 15)`` monomial array or a batched matrix product.
    """
    x, y = q[:, 0], q[:, 1]
    x2, y2 = x * x, y * y
    wx = [w, w * x, w * x2, w * x2 * x, w * x2 * x2]
    yp = [None, y, y2, y2 * y, y2 * y2]
    mom = jnp.stack([jnp.sum(wx[a] if b == 0 else wx[a] * yp[b]) for a, b in _MOM_EXP]) / jnp.sum(w)
    return mom[_S_INDEX]


def _denormalise(theta_n, m, s):
    """Coefficients in data coordinates from those in normalised ones.

    With ``u = s (x - mx)``, ``v = s (y - my)`` the normalised design vector is
    ``z(u, v) = T z(x, y)``, so ``theta = T^T theta_n``.
    """
    dt = theta_n.dtype
    p, q = -s * m[0], -s * m[1]
    z = jnp.zeros((), dt)
    T = jnp.array([
        [s * s, z, z, 2 * s * p, z, p * p],
        [z, s * s, z, s * q, s * p, p * q],
        [z, z, s * s, z, 2 * s * q, q * q],
        [z, z, z, s, z, p],
        [z, z, z, z, s, q],
        [z, z, z, z, z, jnp.ones((), dt)],
    ], dtype=dt)
    return T.T @ theta_n


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


def _classify(theta, rtol):
    J, _, Fp, term = _invariants(theta)
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

_C_FITZ = np.array([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0], [2.0, 0.0, 0.0]])  # a^T C a = 4AC - B^2
_C_BOOK = np.diag([1.0, 0.5, 1.0])  # a^T C a = A^2 + B^2/2 + C^2 (Euclidean invariant)


def _spread(S):
    """False for collinear (or identical) points.

    ``S[3:, 3:]`` is the scatter of (x, y, 1); with trace ~ 3 after normalisation its
    determinant vanishes exactly when the points are collinear.
    """
    return _det3(S[3:, 3:]) > 1e2 * jnp.finfo(S.dtype).eps


def _direct(S, kind):
    """Halir-Flusser reduced constrained fit on a normalised scatter matrix.

    Returns ``(theta (6,), ok)``; ``ok`` is False for collinear points or a rank<=1 pencil.
    """
    dt = S.dtype
    eps = jnp.finfo(dt).eps
    S1, S2, S3 = S[:3, :3], S[:3, 3:], S[3:, 3:]
    d3 = _det3(S3)
    well = _spread(S)
    S3inv = _adj3(S3) / jnp.where(well, d3, 1.0)
    T = -S3inv @ S2.T
    M = S1 + S2 @ T
    M = 0.5 * (M + M.T)
    Cm = jnp.asarray(_C_BOOK if kind == "any" else _C_FITZ, dt)
    c0 = _det3(M)
    c1 = -jnp.trace(_adj3(M) @ Cm)
    c2 = jnp.trace(M @ _adj3(Cm))
    c3 = -_det3(Cm)
    roots = _cubic_roots(c0, c1, c2, c3)  # descending
    # Pencil M a = l C a with M PSD: l = a^T M a / a^T C a. For Fitzgibbon's C
    # (inertia +,-,-) exactly one l >= 0 belongs to an ellipse (the largest) and the
    # hyperbola of least cost is the negative l closest to 0 (the middle one).
    # Bookstein's C is positive definite: the least cost is the smallest l.
    lam = {"ellipse": roots[0], "hyperbola": roots[1], "any": roots[2]}[kind]
    a, strength = _null3(M - lam * Cm)
    ok = well & (strength > eps * (1.0 + jnp.sum(M * M)))
    return jnp.concatenate([a, T @ a]), ok


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


def _pencil_max_abs(M, N):
    """theta for the largest |mu| of ``N theta = mu M theta`` (M PSD, possibly singular).

    Whitening by a floored ``M^-1/2`` and a symmetric eigensolver give a start that is
    right even when M is singular (noise-free data: mu = inf); two Newton steps on the
    bordered system ``[(M - l N) theta; theta0^T theta - 1] = 0`` then restore full
    precision, because that system stays regular when ``M - l N`` is singular.
    """
    dt = M.dtype
    eps = jnp.finfo(dt).eps
    s, U = jnp.linalg.eigh(M)
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
    if hyper:
        W = jnp.sum(w)
        zc = S[:, 5]  # mean of z
        e = jnp.array([1, 0, 1, 0, 0, 0], q.dtype)
        sym = lambda A: A + A.T
        N = N + sym(jnp.outer(zc, e))
        s, U = jnp.linalg.eigh(S)
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
    return _pencil_max_abs(S, N)


# ---------------------------------------------------------------------------
# orthogonal distances: closest points in the conic's own frame
# ---------------------------------------------------------------------------

class _Frame(NamedTuple):
    center: jax.Array  # (2,)
    c: jax.Array  # cos of first-axis angle
    s: jax.Array
    a: jax.Array  # semi-axis along the first axis (major / transverse)
    b: jax.Array
    kind: jax.Array


def _frame(theta, rtol):
    """Canonical frame: ellipses have the major axis first, hyperbolas the transverse one."""
    A, B, C = theta[0], theta[1], theta[2]
    J, center, Fp, _ = _invariants(theta)
    kind = _classify(theta, rtol)
    phi = 0.5 * jnp.arctan2(B, A - C)
    h = jnp.sqrt(0.25 * (A - C) ** 2 + 0.25 * B * B)
    l1, l2 = 0.5 * (A + C) + h, 0.5 * (A + C) - h  # eigenvalues along phi, phi + pi/2
    safe = lambda v: jnp.where(v > 0, v, 1.0)
    g1, g2 = -Fp / jnp.where(l1 != 0, l1, 1.0), -Fp / jnp.where(l2 != 0, l2, 1.0)
    # ellipse: g1, g2 > 0 and l1 >= l2 means axis 1 is the minor one -> swap.
    # hyperbola: exactly one of g1, g2 is positive -> that axis is transverse.
    first_is_1 = jnp.where(kind == ELLIPSE, g1 >= g2, g1 > 0)
    a2 = jnp.where(first_is_1, g1, g2)
    b2 = jnp.abs(jnp.where(first_is_1, g2, g1))
    ang = jnp.where(first_is_1, phi, phi + 0.5 * jnp.pi)
    proper = (kind == ELLIPSE) | (kind == HYPERBOLA)
    a = jnp.sqrt(safe(jnp.where(proper, a2, 1.0)))
    b = jnp.sqrt(safe(jnp.where(proper, b2, 1.0)))
    return _Frame(center, jnp.cos(ang), jnp.sin(ang), a, b, kind)


def _root_newton(g, lo, hi, t0, max_iter):
    """Roots of decreasing functions on brackets (lo, hi), elementwise.

    ``g(t)`` returns ``(f, df, converged)``. Newton steps that would leave the
    bracket, and after the first eight iterations every fourth step, are bisections,
    so the bracket keeps halving whatever the function looks like; near the root
    Newton is quadratic. The loop stops once every element reports convergence (a handful of
    iterations for points near the curve) or after ``max_iter``.
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


def _closest_canonical(u, v, a, b, hyperbola, n_iter):
    """Closest point to (u, v) on x^2/a^2 + y^2/b^2 = 1 (ellipse, a >= b) or
    x^2/a^2 - y^2/b^2 = 1 (hyperbola), in the canonical frame.

    The foot point is ``x = a^2 u / (a^2 + t)``, ``y = b^2 v / (b^2 + sigma t)`` for the
    root t of a function that is decreasing on the bracket below (Eberly's approach),
    found by bracketed Newton. The coordinate with the better-conditioned formula is
    taken from it and the other from the curve equation: the point lies exactly on the
    curve and any error is along it, which moves the distance only to second order.
    """
    au, av = jnp.abs(u), jnp.abs(v)
    a2, b2 = a * a, b * b
    sig = jnp.where(hyperbola, -1.0, 1.0).astype(u.dtype)
    eps = jnp.finfo(u.dtype).eps

    def g(t):
        da, db = a2 + t, b2 + sig * t
        da = jnp.where(da > 0, da, jnp.finfo(u.dtype).tiny)
        db = jnp.where(db > 0, db, jnp.finfo(u.dtype).tiny)
        x = a * au / da
        y = b * av / db
        r = x * x + sig * y * y
        dr = -2.0 * (x * x / da + y * y / db)
        # x(t), y(t) is always on the normal through (u, v); only r = 1 remains, so
        # |r - 1| at rounding level means the foot point is found.
        conv = jnp.abs(r - 1.0) <= 16 * eps
        # far from the curve r ~ K / t^2, so 1 - r^(-1/2) is nearly linear in t and
        # Newton on it converges in a few steps; it has the sign of r - 1.
        pos = r > 0
        rs = jnp.where(pos, r, 1.0)
        inv = 1.0 / jnp.sqrt(rs)
        return jnp.where(pos, 1.0 - inv, r - 1.0), jnp.where(pos, 0.5 * inv / rs * dr, dr), conv

    lo = jnp.where(hyperbola, -a2, -b2)
    hi = jnp.where(hyperbola, b2, jnp.sqrt(a2 * au * au + b2 * av * av))
    lo, hi = jnp.broadcast_arrays(lo, hi)
    t = _root_newton(g, lo, hi, jnp.zeros_like(lo), n_iter)
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


def _foot(theta, pts, rtol):
    """Signed orthogonal distances ``(N,)``, foot points ``(N, 2)`` and the frame.

    Positive where the conic polynomial is positive (outside an ellipse with the
    library's sign convention).
    """
    fr = _frame(theta, rtol)
    d = pts - fr.center
    u = fr.c * d[:, 0] + fr.s * d[:, 1]
    v = -fr.s * d[:, 0] + fr.c * d[:, 1]
    hyp = fr.kind == HYPERBOLA
    x, y = _closest_canonical(u, v, fr.a, fr.b, hyp, _n_newton(pts.dtype))
    foot = fr.center + jnp.stack([fr.c * x - fr.s * y, fr.s * x + fr.c * y], axis=-1)
    # Distance along the normal at the foot point rather than |p - foot|: an error of
    # the foot point along the curve then changes it only to second order, which
    # matters for points on (or very near) the curve.
    nx, ny = x / (fr.a * fr.a), jnp.where(hyp, -y, y) / (fr.b * fr.b)
    nn = jnp.sqrt(nx * nx + ny * ny)
    dist = jnp.abs(nx * (u - x) + ny * (v - y)) / jnp.where(nn > 0, nn, 1.0)
    sign = jnp.sign(_design(pts) @ theta)
    return sign * dist, foot, fr


def _grad_q(theta, p):
    A, B, C, D, E = theta[0], theta[1], theta[2], theta[3], theta[4]
    x, y = p[..., 0], p[..., 1]
    return jnp.stack([2 * A * x + B * y + D, B * x + 2 * C * y + E], axis=-1)


def _sampson(theta, pts):
    g = _grad_q(theta, pts)
    gn = jnp.sqrt(jnp.sum(g * g, axis=-1))
    val = _design(pts) @ theta
    return jnp.where(gn > 0, val / jnp.where(gn > 0, gn, 1.0), 0.0)


def _distances(theta, pts, rtol):
    """Signed distances; exact for ellipses and hyperbolas, Sampson's first-order
    approximation for parabolas and degenerate conics (no canonical frame)."""
    d, _, fr = _foot(theta, pts, rtol)
    proper = (fr.kind == ELLIPSE) | (fr.kind == HYPERBOLA)
    return jnp.where(proper, d, _sampson(theta, pts))


# ---------------------------------------------------------------------------
# geometric refinement
# ---------------------------------------------------------------------------

def _kind_ok(kind_code, kind):
    if kind == "ellipse":
        return kind_code == ELLIPSE
    if kind == "hyperbola":
        return kind_code == HYPERBOLA
    return (kind_code == ELLIPSE) | (kind_code == HYPERBOLA)


def _geometric(theta0, q, w, kind, max_iter, tol, rtol):
    """Levenberg-Marquardt on sum w d_i^2 over unit-norm theta.

    d(theta) for a point p with foot point x* has gradient z(x*)/|grad Q(x*)|, so the
    Jacobian needs no differentiation through the bisection. Steps that leave the
    requested kind are rejected like steps that increase the cost.
    """
    dt = q.dtype

    def cost_of(theta):
        d, foot, fr = _foot(theta, q, rtol)
        good = _kind_ok(fr.kind, kind) & jnp.all(jnp.isfinite(d))
        return jnp.where(good, jnp.sum(w * d * d), jnp.inf), d, foot

    def body(state):
        theta, cost, d, foot, mu, it, _ = state
        g = _grad_q(theta, foot)
        gn = jnp.sqrt(jnp.sum(g * g, axis=-1))
        Jm = _design(foot) / jnp.where(gn > 0, gn, 1.0)[:, None]
        H = (Jm * w[:, None]).T @ Jm
        r = Jm.T @ (w * d)
        scale = jnp.trace(H) / 6.0 + jnp.finfo(dt).tiny
        # theta is a null direction of H (scale invariance); theta theta^T pins it.
        Aug = H + mu * (jnp.diag(jnp.diag(H)) + 1e-12 * scale * jnp.eye(6, dtype=dt)) + scale * jnp.outer(theta, theta)
        step = -jnp.linalg.solve(Aug, r)
        cand = theta + step
        cand = cand / jnp.linalg.norm(cand)
        new_cost, new_d, new_foot = cost_of(cand)
        better = new_cost < cost
        keep = lambda new, old: jnp.where(better, new, old)
        mu_n = jnp.where(better, mu * 0.3, mu * 10.0)
        small = (cost - new_cost <= tol * cost) | (jnp.linalg.norm(step) <= tol)
        done = (better & small) | (mu_n > 1e12) | ~jnp.isfinite(cost)
        return (keep(cand, theta), keep(new_cost, cost), keep(new_d, d), keep(new_foot, foot), mu_n, it + 1,
                done)

    cost0, d0, foot0 = cost_of(theta0)
    state = (theta0, cost0, d0, foot0, jnp.asarray(1e-3, dt), jnp.asarray(0), ~jnp.isfinite(cost0))
    state = lax.while_loop(lambda s: (s[5] < max_iter) & ~s[6], body, state)
    return state[0]


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

def _fit_one(p, w, kind, method, max_iter, tol):
    dt = p.dtype
    rtol = _rtol(dt)
    finite = jnp.all(jnp.isfinite(p)) & jnp.all(jnp.isfinite(w))
    p = jnp.where(jnp.isfinite(p), p, 0.0)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    w = jnp.where(jnp.sum(w) > 0, w, jnp.ones_like(w))
    q, m, s = _normalise(p, w)
    S = _scatter(q, w)
    if method == "direct":
        theta, ok = _direct(S, kind)
    else:
        theta = _taubin_hyper(q, w, S, hyper=method != "taubin")
        ok = jnp.all(jnp.isfinite(theta)) & _spread(S)
        if kind != "any":
            # the unconstrained fit may have the wrong type: use the constrained one then
            theta_d, ok_d = _direct(S, kind)
            right = _kind_ok(_classify(theta, rtol), kind)
            theta = jnp.where(right, theta, theta_d)
            ok = jnp.where(right, ok, ok_d)
        if method == "geometric":
            theta = _geometric(theta, q, w, kind, max_iter, tol, rtol)
    theta = jnp.where(jnp.all(jnp.isfinite(theta)), theta, jnp.zeros_like(theta).at[0].set(1.0))
    code = _classify(theta, rtol)  # in normalised coordinates, where it is well conditioned
    d = _distances(theta, q, rtol)
    residual = jnp.sqrt(jnp.sum(w * d * d) / jnp.sum(w)) / s
    theta = _canonical_sign(_denormalise(theta, m, s))
    ok = ok & finite & _kind_ok(code, kind) & jnp.all(jnp.isfinite(theta))
    residual = jnp.where(jnp.isfinite(residual), residual, jnp.inf)
    return theta, code, residual, ok


@functools.partial(jax.jit, static_argnames=("kind", "method", "max_iter"))
def _fit_batch(points, weights, tol, *, kind, method, max_iter):
    fn = functools.partial(_fit_one, kind=kind, method=method, max_iter=max_iter, tol=tol)
    return jax.vmap(fn)(points, weights)


def fit(points, *, kind: str = "any", method: str = "direct", weights=None, max_iter: int = 50,
        tol: float = 1e-10) -> ConicFit:
    """Fit a conic to 2-D points, batched over leading axes.

    Args:
      points: ``(..., N, 2)``, N >= 5.
      kind: "any" (best conic of any type), "ellipse" (4AC - B^2 > 0 enforced) or
        "hyperbola" (4AC - B^2 < 0 enforced).
      method: "direct" (constrained algebraic, Halir-Flusser), "taubin", "hyper"
        (hyper least squares) or "geometric" (orthogonal distances, LM from "hyper").
      weights: optional ``(..., N)`` non-negative point weights.
      max_iter, tol: iteration limit and relative cost tolerance of "geometric".

    Returns:
      :class:`ConicFit` with ``coeffs (..., 6)``, ``kind``, ``residual``, ``ok`` ``(...)``.

    Raises:
      ValueError: last axis not 2, fewer than 5 points, unknown kind/method, negative or
        mis-shaped weights, or (for concrete input) NaN/inf points.

    Example:
      >>> t = jnp.linspace(0, 2 * jnp.pi, 20)
      >>> pts = jnp.stack([3 * jnp.cos(t) + 1, 2 * jnp.sin(t)], -1)
      >>> fit(pts, kind="ellipse").coeffs  # proportional to [4, 0, 9, -8, 0, -32]
    """
    where = "conic.fit"
    check_choice(kind, _FIT_KINDS, "kind", where)
    check_choice(method, METHODS, "method", where)
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    n = pts.shape[-2]
    if n < _MIN_POINTS:
        raise ValueError(f"{where}: argument 'points' needs at least {_MIN_POINTS} points per fit, got {n}")
    check_finite(pts, "points", where)
    batch = pts.shape[:-2]
    if weights is None:
        w = jnp.ones(pts.shape[:-1], pts.dtype)
    else:
        w = as_float_array(weights, "weights", where, dtype=pts.dtype)
        if w.shape != pts.shape[:-1]:
            try:
                w = jnp.broadcast_to(w, pts.shape[:-1])
            except ValueError:
                raise ValueError(f"{where}: argument 'weights' must have shape {tuple(pts.shape[:-1])}, "
                                 f"got {tuple(w.shape)}") from None
        check_finite(w, "weights", where)
        if is_concrete(w) and bool(jnp.any(w < 0)):
            raise ValueError(f"{where}: argument 'weights' must be non-negative")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"{where}: max_iter must be a non-negative int, got {max_iter!r}")
    flat = pts.reshape((-1, n, 2))
    wf = w.reshape((-1, n))
    nb = flat.shape[0]
    # Pad to a few bucket sizes (zero-weight points, repeated fits) so that new
    # shapes rarely trigger a new compilation.
    flat, wf = _pad(flat, wf, _bucket(nb, 1), _bucket(n, 4))
    theta, code, res, ok = _fit_batch(flat, wf, jnp.asarray(tol, pts.dtype), kind=kind, method=method,
                                      max_iter=max_iter)
    out = ConicFit(theta[:nb], code[:nb], res[:nb], ok[:nb])
    return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), out)


def _bucket(n: int, per_octave: int) -> int:
    """Smallest size >= n on a grid with ``per_octave`` steps per power of two."""
    if n <= 8 and per_octave > 1:
        return n
    top = 1 << (n - 1).bit_length()
    step = max(top // (2 * per_octave), 1)
    return -(-n // step) * step


def _pad(points, weights, nb, n):
    b0, n0 = weights.shape
    if n > n0:  # extra points: copies of the first one with zero weight
        points = jnp.concatenate([points, jnp.broadcast_to(points[:, :1], (b0, n - n0, 2))], axis=1)
        weights = jnp.concatenate([weights, jnp.zeros((b0, n - n0), weights.dtype)], axis=1)
    if nb > b0:  # extra fits: copies of the first one, dropped afterwards
        points = jnp.concatenate([points, jnp.broadcast_to(points[:1], (nb - b0,) + points.shape[1:])])
        weights = jnp.concatenate([weights, jnp.broadcast_to(weights[:1], (nb - b0, n))])
    return points, weights


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


@functools.partial(jax.jit, static_argnums=2)
def _residuals(c, pts, kind):
    batch = jnp.broadcast_shapes(c.shape[:-1], pts.shape[:-2])
    c = jnp.broadcast_to(c, batch + (6,))
    pts = jnp.broadcast_to(pts, batch + pts.shape[-2:])
    c = _unit(c)
    if kind == "algebraic":
        return jnp.einsum("...nk,...k->...n", _design(pts), c)
    rtol = _rtol(c.dtype)

    def one(theta, p):
        # normalise so the frame computation is well conditioned at any data scale
        q, m, s = _normalise(p, jnp.ones(p.shape[0], p.dtype))
        T = _denorm_matrix_inv(m, s, theta)
        return _distances(T, q, rtol) / s

    flat = jax.vmap(one)(c.reshape((-1, 6)), pts.reshape((-1,) + pts.shape[-2:]))
    return flat.reshape(batch + pts.shape[-2:-1])


def _denorm_matrix_inv(m, s, theta):
    """Coefficients in normalised coordinates ``u = s (x - m)`` of a data-frame conic."""
    # x = u / s + m: substitute, i.e. the inverse map of _denormalise.
    return _unit(_denormalise(theta, -m * s, 1.0 / s))


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
