"""Conic fitting methods: the algebraic solvers, and :data:`METHOD_TABLE`, which says how
each public ``method`` is made from them.

Adding a method is one solver function here plus one entry in each table: ``fit``
dispatches through them and names no method itself.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
from jax import lax

from .linalg3 import _adj3, _cubic_root, _det3, _dot, _matmul3, _null3, _trace_prod
from .moments import _design, _entries


# a^T C a = 4AC - B^2 (Fitzgibbon) and A^2 + B^2/2 + C^2 (Bookstein, Euclidean invariant)
_C_FITZ = ((0.0, 0.0, 2.0), (0.0, -1.0, 0.0), (2.0, 0.0, 0.0))
_C_BOOK = ((1.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 1.0))


def _spread(mom):
    """False for collinear (or identical) points; mom ``(..., 15)``.

    ``S[3:, 3:]`` is the scatter of (x, y, 1); with trace ~ 3 after normalisation its
    determinant vanishes exactly when the points are collinear.
    """
    return _det3(_entries(mom, range(3, 6), range(3, 6))) > 1e2 * jnp.finfo(mom.dtype).eps


def _reduced(mom):
    """Halir & Flusser's reduction of the 6x6 scatter from the moments ``(..., 15)``:
    ``(M, T, well)`` with ``T = -S3^-1 S2^T`` (quadratic -> linear coefficients),
    ``M = S1 + S2 T`` (3x3, PSD) and ``well`` False for collinear points."""
    eps = jnp.finfo(mom.dtype).eps
    S1 = _entries(mom, range(3), range(3))
    S2 = _entries(mom, range(3), range(3, 6))
    S3 = _entries(mom, range(3, 6), range(3, 6))
    d3 = _det3(S3)
    well = d3 > 1e2 * eps  # _spread
    inv_d3 = 1.0 / jnp.where(well, d3, 1.0)
    S3adj = _adj3(S3)
    T = [[-_dot((S3adj[i][k], S2[j][k]) for k in range(3)) * inv_d3 for j in range(3)] for i in range(3)]
    S2T = _matmul3(S2, T)
    M = [[S1[i][j] + 0.5 * (S2T[i][j] + S2T[j][i]) for j in range(3)] for i in range(3)]
    return M, T, well


def _too_few_points(mom):
    """``(...)`` bool: points not all on one line, but fewer than 5 distinct ones with
    positive weight, so no conic is determined. (Collinear sets are ``_spread``'s.)

    Fewer than 5 distinct points leave the 6x6 scatter with rank <= 4, so the reduced
    ``M`` (PSD) has rank <= 1 and the sum of its principal 2x2 minors vanishes. Measured
    against ``tr(M)^2`` it stays below 1e-12 for 4 distinct points (float64, offsets up
    to 1e5 times the spread) and above 1e-6 for 5 points of an ellipse, so sqrt(eps)
    separates them (float32 flags some badly conditioned 5-point sets too). With 3
    distinct points M itself is round-off, hence a floor relative to the
    normalised spread."""
    eps = jnp.finfo(mom.dtype).eps
    M, _, well = _reduced(mom)
    A = _adj3(M)
    e2 = A[0][0] + A[1][1] + A[2][2]
    tr = M[0][0] + M[1][1] + M[2][2]
    noise = 1e3 * eps * (mom[..., 3] + mom[..., 5])  # mean x^2 + y^2: 2 after the normalisation
    return well & ~(e2 > jnp.sqrt(eps) * tr * tr + noise * noise)


def _direct(mom, target):
    """Halir-Flusser reduced constrained fit from the moments ``(..., 15)`` of normalised points.

    Returns ``(theta (..., 6), ok (...))``; ``ok`` is False for collinear points or a
    rank<=1 pencil.
    """
    eps = jnp.finfo(mom.dtype).eps
    M, T, well = _reduced(mom)
    Cm = _C_BOOK if target == "any" else _C_FITZ
    c0 = _det3(M)
    c1 = -_trace_prod(_adj3(M), Cm)
    c2 = _trace_prod(M, _adj3(Cm))
    c3 = -_det3(Cm)
    # Pencil M a = l C a with M PSD: l = a^T M a / a^T C a. For Fitzgibbon's C
    # (inertia +,-,-) exactly one l >= 0 belongs to an ellipse (the largest) and the
    # hyperbola of least cost is the negative l closest to 0 (the middle one).
    # Bookstein's C is positive definite: the least cost is the smallest l.
    lam = _cubic_root(c0, c1, c2, c3, {"ellipse": 0, "hyperbola": 1, "any": 2}[target])
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


def _pencil_max_abs(M, N, eig_M=None, *, signed=False):
    """theta for the largest |mu| (``signed``: the largest mu) of ``N theta = mu M theta``
    (M ``(n, n)`` PSD, possibly singular; n is 6 for conics, 4 for circles).

    ``eig_M``: ``jnp.linalg.eigh(M)`` if the caller has it already. Sharing it matters
    beyond speed: two independent batched LAPACK calls in flight at once have
    deadlocked XLA's CPU worker pool (jaxlib 0.10 on 2 cores).

    Whitening by a floored ``M^-1/2`` and a symmetric eigensolver give a start that is
    right even when M is singular (noise-free data: mu = inf); two Newton steps on the
    bordered system ``[(M - l N) theta; theta0^T theta - 1] = 0`` then restore full
    precision, because that system stays regular when ``M - l N`` is singular.
    """
    dt, n = M.dtype, M.shape[-1]
    eps = jnp.finfo(dt).eps
    s, U = jnp.linalg.eigh(M) if eig_M is None else eig_M
    floor = jnp.maximum(s[-1], jnp.finfo(dt).tiny) * 10 * eps
    Wh = (U / jnp.sqrt(jnp.maximum(s, floor))) @ U.T
    K = Wh @ N @ Wh
    mu, V = jnp.linalg.eigh(0.5 * (K + K.T))
    i = jnp.argmax(mu if signed else jnp.abs(mu))
    theta = Wh @ V[:, i]
    theta = theta / jnp.linalg.norm(theta)
    theta0 = theta

    def newton(carry, _):
        th, _ = carry
        nth = N @ th
        den = th @ nth
        lam = jnp.where(den != 0, (th @ M @ th) / jnp.where(den != 0, den, 1.0), 0.0)
        Jb = jnp.zeros((n + 1, n + 1), dt)
        Jb = Jb.at[:n, :n].set(M - lam * N).at[:n, n].set(-nth).at[n, :n].set(theta0)
        rhs = -jnp.concatenate([(M - lam * N) @ th, (theta0 @ th - 1.0)[None]])
        step = jnp.linalg.solve(Jb, rhs)[:n]
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


# ---------------------------------------------------------------------------------------
# the tables


def _taubin(q, w, S):
    """Taubin's gradient-weighted fit of one normalised point set (``q (N, 2)``)."""
    return _taubin_hyper(q, w, S, hyper=False)


def _hyper(q, w, S):
    """Kanatani & Rangarajan's hyper least squares: Taubin without the second-order bias."""
    return _taubin_hyper(q, w, S, hyper=True)


class Solver(NamedTuple):
    """An algebraic solver. ``from_moments(mom (B, 15), target) -> (theta (B, 6), ok (B,))``
    needs only the 15 moments, so it compiles independently of the number of points;
    otherwise ``per_set(q (N, 2), w (N,), S (6, 6)) -> theta (6,)`` sees one normalised
    point set, is vmapped over the batch, and falls back to the direct fit where its
    unconstrained answer has the wrong kind."""

    from_moments: Callable | None = None
    per_set: Callable | None = None


SOLVERS: dict[str, Solver] = {
    "direct": Solver(from_moments=_direct),
    "taubin": Solver(per_set=_taubin),
    "hyper": Solver(per_set=_hyper),
}


class Method(NamedTuple):
    """A public ``method``: the algebraic solver it starts from, then (if ``refine``)
    Levenberg-Marquardt on the exact orthogonal distances."""

    solver: str
    refine: bool = False


METHOD_TABLE: dict[str, Method] = {
    "direct": Method("direct"),
    "taubin": Method("taubin"),
    "hyper": Method("hyper"),
    "geometric": Method("hyper", refine=True),
    "pratt": Method("pratt"),  # circles only
}
METHODS = tuple(m for m in METHOD_TABLE if m != "pratt")  # for every kind
CIRCLE_METHODS = tuple(METHOD_TABLE)  # kind="circle"
