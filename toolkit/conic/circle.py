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

The answer is the generalised eigenvector of ``N a = mu S a`` with the largest ``mu``,
solved per fit by :func:`~toolkit.conic.methods._pencil_max_abs` (exact for noise-free
data, where ``S`` is singular).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .methods import _pencil_max_abs, _spread
from .moments import _MOM_INDEX, _scatter

# b = P z for the conic design vector z = [x^2, xy, y^2, x, y, 1]
_P = np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], float)


def _constraint(method, mom):
    """The normalisation matrix ``N (..., 4, 4)`` of ``method`` from the moments."""
    zbar = mom[..., _MOM_INDEX[(2, 0)]] + mom[..., _MOM_INDEX[(0, 2)]]
    xbar, ybar = mom[..., _MOM_INDEX[(1, 0)]], mom[..., _MOM_INDEX[(0, 1)]]
    one, zero = jnp.ones_like(zbar), jnp.zeros_like(zbar)
    if method == "direct":  # Kasa: A = 1
        rows = [[one, zero, zero, zero], [zero] * 4, [zero] * 4, [zero] * 4]
    elif method == "pratt":
        rows = [[zero, zero, zero, -2 * one], [zero, one, zero, zero], [zero, zero, one, zero],
                [-2 * one, zero, zero, zero]]
    elif method == "taubin":
        rows = [[4 * zbar, 2 * xbar, 2 * ybar, zero], [2 * xbar, one, zero, zero], [2 * ybar, zero, one, zero],
                [zero] * 4]
    else:  # hyper = 2 Taubin - Pratt
        rows = [[8 * zbar, 4 * xbar, 4 * ybar, 2 * one], [4 * xbar, one, zero, zero], [4 * ybar, zero, one, zero],
                [2 * one, zero, zero, zero]]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _to_conic(a):
    """``(A, D, E, F) (..., 4)`` -> conic coefficients ``[A, 0, A, D, E, F] (..., 6)``."""
    A = a[..., 0]
    return jnp.stack([A, jnp.zeros_like(A), A, a[..., 1], a[..., 2], a[..., 3]], axis=-1)


def _circle_from_moments(mom, method):
    """Algebraic circle fit of normalised point sets from their moments ``(B, 15)``:
    ``(theta (B, 6), ok (B,))``; ``ok`` is False for collinear or identical points."""
    S4 = jnp.einsum("ij,...jk,lk->...il", _P, _scatter(mom), _P)
    N = _constraint(method, mom)
    a = jax.vmap(lambda s, n: _pencil_max_abs(s, n, signed=True))(S4, N)
    ok = jnp.all(jnp.isfinite(a), axis=-1) & _spread(mom)
    return _to_conic(a), ok


def _circle_geometric(theta0, x, y, w, max_iter, tol):
    """Levenberg-Marquardt on ``sum w (|p - c| - r)^2`` over ``(cx, cy, r)`` for a batch
    of circles: theta0 ``(B, 6)`` (a circle's coefficients), x, y, w ``(B, N)``.

    Returns the refined coefficients ``(B, 6)``; fits that do not start from a real
    circle (a line, NaN) are returned unchanged. The orthogonal distance of a circle is
    closed-form, so this is plain LM with an analytic Jacobian.
    """
    dt = x.dtype
    A, D, E, F = theta0[:, 0], theta0[:, 3], theta0[:, 4], theta0[:, 5]
    As = jnp.where(A != 0, A, 1.0)
    cx, cy = -0.5 * D / As, -0.5 * E / As
    r2 = cx * cx + cy * cy - F / As
    p0 = jnp.stack([cx, cy, jnp.sqrt(jnp.where(r2 > 0, r2, 0.0))], axis=-1)
    start_ok = (A != 0) & (r2 > 0) & jnp.all(jnp.isfinite(theta0), axis=-1)
    tiny = jnp.finfo(dt).tiny

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
        H = jnp.einsum("bni,bnj->bij", J * w[..., None], J)
        g = jnp.einsum("bni,bn->bi", J, w * d)
        diag = jnp.diagonal(H, axis1=-2, axis2=-1)
        Aug = H + (mu[:, None] * diag + tiny)[..., None] * jnp.eye(3, dtype=dt)
        step = -jnp.linalg.solve(Aug, g[..., None])[..., 0]
        cand = p + step
        new = cost_of(cand)
        better = (new < cost) & ~done
        small = (cost - new <= tol * cost) | (jnp.linalg.norm(step, axis=-1) <= tol * (1.0 + cand[:, 2]))
        mu_n = jnp.where(done, mu, jnp.where(better, mu * 0.3, mu * 10.0))
        done = done | (better & small) | (mu_n > 1e12)
        return (jnp.where(better[:, None], cand, p), jnp.where(better, new, cost), mu_n, it + 1, done)

    cost0 = cost_of(p0)
    state = (p0, cost0, jnp.full(cost0.shape, 1e-3, dt), jnp.asarray(0), ~start_ok | (cost0 == 0))
    p = lax.while_loop(lambda s: (s[3] < max_iter) & ~jnp.all(s[4]), body, state)[0]
    cx, cy, r = p[:, 0], p[:, 1], p[:, 2]
    a = jnp.stack([jnp.ones_like(cx), -2 * cx, -2 * cy, cx * cx + cy * cy - r * r], axis=-1)
    theta = _to_conic(a / jnp.linalg.norm(a, axis=-1, keepdims=True))
    return jnp.where(start_ok[:, None], theta, theta0)
