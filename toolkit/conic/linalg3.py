"""Closed-form 3x3 linear algebra written elementwise over a batch."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


# 3x3 matrices are nested lists of arrays with the batch shape (or Python floats for
# constants, whose zero entries drop out when traced). Batched 3x3 LAPACK calls, and
# even batched 3x3 matrix products, cost XLA's CPU backend far more than these few
# fused elementwise kernels.


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
