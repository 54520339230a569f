"""Circles: algebraic fits from the moments (Kasa, Pratt, Taubin, hyper) and geometric LM.

A circle is the conic ``A (x^2 + y^2) + D x + E y + F = 0``: the fits work on
``b = [x^2 + y^2, x, y, 1]`` and the 4-vector ``(A, D, E, F)``, which becomes
``[A, 0, A, D, E, F]``. Every algebraic fit minimises ``a^T S a`` (``S`` the weighted
mean scatter of ``b``, read from the 15 moments the conic fits already take) under a
quadratic normalisation ``a^T N a = 1``:

* Kasa (``method="direct"``): ``A = 1``. Cheapest; biased towards small circles on
  short arcs.
* Pratt: ``D^2 + E^2 - 4 A F = 1`` (``= 4 A^2 r^2``, so radius-invariant).
* Taubin: the mean squared gradient of the polynomial at the points.
* hyper (Al-Sharadqah & Chernov 2009, "hyperaccurate"): ``2 Taubin - Pratt``, which
  removes the essential second-order bias; the start of ``"geometric"``.

The answer is the generalised eigenvector of ``S a = eta N a`` with the smallest
non-negative ``eta``, found elementwise over the batch (see :func:`_circle_from_moments`).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from .kinds import _unit
from .linalg3 import _adj3, _det3
from .methods import _spread
from .moments import _MOM_INDEX, _scatter

# b = P z for the conic design vector z = [x^2, xy, y^2, x, y, 1]
_P = np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], float)


def _constraint(method, mom):
    """The normalisation matrix of ``method`` from the moments: a 4x4 nested list of
    arrays (Python zeros drop out of the elementwise algebra)."""
    zbar = mom[..., _MOM_INDEX[(2, 0)]] + mom[..., _MOM_INDEX[(0, 2)]]
    xbar, ybar = mom[..., _MOM_INDEX[(1, 0)]], mom[..., _MOM_INDEX[(0, 1)]]
    o = 0.0
    if method == "direct":  # Kasa: A = 1
        return [[1.0, o, o, o], [o, o, o, o], [o, o, o, o], [o, o, o, o]]
    if method == "pratt":
        return [[o, o, o, -2.0], [o, 1.0, o, o], [o, o, 1.0, o], [-2.0, o, o, o]]
    if method == "taubin":
        return [[4 * zbar, 2 * xbar, 2 * ybar, o], [2 * xbar, 1.0, o, o], [2 * ybar, o, 1.0, o], [o, o, o, o]]
    # hyper = 2 Taubin - Pratt
    return [[8 * zbar, 4 * xbar, 4 * ybar, 2.0], [4 * xbar, 1.0, o, o], [4 * ybar, o, 1.0, o], [2.0, o, o, o]]


def _to_conic(a):
    """``(A, D, E, F) (..., 4)`` -> conic coefficients ``[A, 0, A, D, E, F] (..., 6)``."""
    A = a[..., 0]
    return jnp.stack([A, jnp.zeros_like(A), A, a[..., 1], a[..., 2], a[..., 3]], axis=-1)


def _minor(M, i, j):
    """The 3x3 minor of a 4x4 nested list without row i and column j."""
    return [[M[r][c] for c in range(4) if c != j] for r in range(4) if r != i]


def _cofactors4(M):
    """All 16 cofactors ``C[i][j] = (-1)^(i+j) det(minor(i, j))`` of a symmetric 4x4."""
    return [[(-1.0) ** (i + j) * _det3(_minor(M, i, j)) for j in range(4)] for i in range(4)]


def _circle_from_moments(mom, method):
    """Algebraic circle fit of normalised point sets from their moments ``(..., 15)``:
    ``(theta (..., 6), ok (...))``; ``ok`` is False for collinear or identical points.

    The answer is the null vector of ``S - eta N`` at the smallest non-negative root
    eta of ``p(eta) = det(S - eta N)`` (degree <= 4). Newton's method from 0, as in
    Chernov's circle fits, reaches it monotonically; the null vector is the largest
    column of the adjugate (rank one there). All elementwise over the batch: no small
    batched LAPACK calls, which XLA's CPU backend runs slowly.
    """
    S6 = _scatter(mom)
    S = [[sum(_P[i, k] * _P[j, l] * S6[..., k, l] for k in range(6) for l in range(6) if _P[i, k] and _P[j, l])
          for j in range(4)] for i in range(4)]
    N = _constraint(method, mom)
    shifted = lambda eta: [[S[i][j] - eta * N[i][j] if not (isinstance(N[i][j], float) and N[i][j] == 0.0)  # noqa: E731
                            else S[i][j] for j in range(4)] for i in range(4)]

    def newton(eta, _):
        M = shifted(eta)
        C = _cofactors4(M)
        p = sum(M[0][j] * C[0][j] for j in range(4))
        dp = -sum(C[i][j] * N[i][j] for i in range(4) for j in range(4)
                  if not (isinstance(N[i][j], float) and N[i][j] == 0.0))
        step = jnp.where(dp != 0, p / jnp.where(dp != 0, dp, 1.0), 0.0)
        new = eta - step
        return jnp.where(jnp.isfinite(new) & (new >= 0), new, eta), None

    eta0 = jnp.zeros_like(mom[..., 0])
    eta, _ = lax.scan(newton, eta0, None, length=_NEWTON_STEPS)
    C = _cofactors4(shifted(eta))
    diag = jnp.stack([jnp.abs(C[i][i]) for i in range(4)], axis=-1)
    k = jnp.argmax(diag, axis=-1)
    cols = jnp.stack([jnp.stack([C[i][j] for i in range(4)], axis=-1) for j in range(4)], axis=-2)  # (..., 4, 4)
    a = jnp.take_along_axis(cols, k[..., None, None], axis=-2)[..., 0, :]
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    ok = jnp.all(jnp.isfinite(a), axis=-1) & _spread(mom)
    return _to_conic(a), ok


# Newton steps on the characteristic polynomial: from 0 it converges monotonically and,
# near the root, quadratically; 12 reach round-off from every start seen in the tests.
_NEWTON_STEPS = 12


def _circle_params(theta):
    """Centre and radius ``(cx, cy, r) (..., 3)`` of circles ``theta (..., 6)``, and
    ``(...)`` whether each is a real circle (``A != 0``, ``r^2 > 0``; else r = 0)."""
    A = theta[..., 0]
    As = jnp.where(A != 0, A, 1.0)
    cx, cy = -0.5 * theta[..., 3] / As, -0.5 * theta[..., 4] / As
    r2 = cx * cx + cy * cy - theta[..., 5] / As
    return jnp.stack([cx, cy, jnp.sqrt(jnp.where(r2 > 0, r2, 0.0))], axis=-1), (A != 0) & (r2 > 0)


def _circle_coeffs(p):
    """Unit-norm conic coefficients ``(..., 6)`` of circles ``(cx, cy, r) (..., 3)``."""
    cx, cy, r = p[..., 0], p[..., 1], p[..., 2]
    one = jnp.ones_like(cx)
    return _unit(jnp.stack([one, jnp.zeros_like(cx), one, -2 * cx, -2 * cy, cx * cx + cy * cy - r * r], axis=-1))


def _circle_distance(theta, x, y):
    """Exact signed distances of points ``(..., N)`` to circles ``theta (..., 6)``."""
    p = _circle_params(theta)[0][..., None, :]
    return jnp.sqrt((x - p[..., 0]) ** 2 + (y - p[..., 1]) ** 2) - p[..., 2]


def _circle_geometric(theta0, x, y, w, max_iter, tol):
    """Levenberg-Marquardt on ``sum w (|p - c| - r)^2`` over ``(cx, cy, r)`` for a batch
    of circles: theta0 ``(B, 6)`` (a circle's coefficients), x, y, w ``(B, N)``.

    Returns the refined coefficients ``(B, 6)``; fits that do not start from a real
    circle (a line, NaN) are returned unchanged. The orthogonal distance of a circle is
    closed-form, so this is plain LM with an analytic Jacobian.
    """
    dt = x.dtype
    p0, real = _circle_params(theta0)
    start_ok = real & jnp.all(jnp.isfinite(theta0), axis=-1)
    tiny, eps = jnp.finfo(dt).tiny, jnp.finfo(dt).eps

    def residuals(p):
        dx, dy = x - p[:, 0:1], y - p[:, 1:2]
        rho = jnp.sqrt(dx * dx + dy * dy)
        return rho - p[:, 2:3], dx, dy, rho

    def cost_of(p):
        d = residuals(p)[0]
        c = jnp.sum(w * d * d, axis=-1)
        return jnp.where(jnp.isfinite(c), c, jnp.inf)

    def body(state):
        p, cost, mu, it, done = state
        d, dx, dy, rho = residuals(p)
        inv = 1.0 / jnp.where(rho > 0, rho, 1.0)
        J = jnp.stack([-dx * inv, -dy * inv, -jnp.ones_like(d)], axis=-1)  # (B, N, 3)
        # normal equations written out over the batch (3x3: no batched LAPACK calls)
        H = [[jnp.sum(w * J[..., i] * J[..., j], axis=-1) for j in range(3)] for i in range(3)]
        g = [jnp.sum(w * d * J[..., i], axis=-1) for i in range(3)]
        Aug = [[H[i][j] + (mu * H[i][i] + tiny if i == j else 0.0) for j in range(3)] for i in range(3)]
        adj, det = _adj3(Aug), _det3(Aug)
        det = jnp.where(det != 0, det, tiny)
        step = -jnp.stack([sum(adj[i][k] * g[k] for k in range(3)) / det for i in range(3)], axis=-1)
        cand = p + step
        new = cost_of(cand)
        better = (new < cost) & ~done
        # converged when the step is tol of the radius, or the cost stalls at round-off: a
        # cost-decrease test alone (as for conics) stops with the centre ~sqrt(tol) off
        small = (jnp.linalg.norm(step, axis=-1) <= tol * (1.0 + cand[:, 2])) | (cost - new <= 4 * eps * cost)
        mu_n = jnp.where(done, mu, jnp.where(better, mu * 0.3, mu * 10.0))
        done = done | (better & small) | (mu_n > 1e12)
        return (jnp.where(better[:, None], cand, p), jnp.where(better, new, cost), mu_n, it + 1, done)

    cost0 = cost_of(p0)
    state = (p0, cost0, jnp.full(cost0.shape, 1e-3, dt), jnp.asarray(0), ~start_ok | (cost0 == 0))
    p = lax.while_loop(lambda s: (s[3] < max_iter) & ~jnp.all(s[4]), body, state)[0]
    return jnp.where(start_ok[:, None], _circle_coeffs(p), theta0)
