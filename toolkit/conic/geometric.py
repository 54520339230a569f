"""Geometric refinement: Levenberg-Marquardt on exact orthogonal distances."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .circle import _circle_geometric
from .distance import _foot, _grad_q
from .kinds import ELLIPSE, HYPERBOLA, _unit
from .moments import _design


def _kind_ok(kind, target):
    """Whether kind code(s) ``kind`` satisfy the requested ``target`` ("any": a proper conic)."""
    if target in ("ellipse", "circle"):
        return kind == ELLIPSE
    if target == "hyperbola":
        return kind == HYPERBOLA
    return (kind == ELLIPSE) | (kind == HYPERBOLA)


def _geometric(theta0, x, y, w, target, max_iter, tol, rtol):
    """Levenberg-Marquardt on sum w d_i^2 over unit-norm theta, for a batch of fits.

    theta0 ``(..., 6)``; x, y, w ``(..., N)``. d(theta) for a point p with foot point
    x* has gradient z(x*)/|grad Q(x*)|, so the Jacobian needs no differentiation
    through the root finding. Steps that leave the requested kind are rejected like
    steps that increase the cost. Each fit stops on its own; the loop runs until all
    have (or ``max_iter``), written batched rather than vmapped so that the closest-point
    search keeps its fast path (under vmap its ``lax.cond`` would become a select).
    Circles (``target="circle"``) refine their centre and radius instead.
    """
    if target == "circle":
        return _circle_geometric(theta0, x, y, w, max_iter, tol)
    dt = x.dtype
    eye = jnp.eye(6, dtype=dt)

    def cost_of(theta):
        d, fx, fy, fr = _foot(theta, x, y, rtol)
        good = _kind_ok(fr.kind, target) & jnp.all(jnp.isfinite(d), axis=-1)
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 7))
def _geometric_refine(theta0, x, y, w, target, max_iter, tol, rtol):
    """:func:`_geometric` for fits ``theta0 (B, 6)``, ``x, y, w (B, N)``, differentiable in
    both modes. Reverse mode cannot go through the ``while_loop``; the rule below takes
    each fit's Jacobian of the result with respect to its start, points and weights by
    forward mode (through the loop) on the primal values, so the tangent map is a plain
    product with it, which JAX can transpose. Same derivatives as ``jax.jacfwd``."""
    return _geometric(theta0, x, y, w, target, max_iter, tol, rtol)


@_geometric_refine.defjvp
def _geometric_refine_jvp(target, max_iter, rtol, primals, tangents):
    theta0, x, y, w, tol = primals
    out = _geometric(theta0, x, y, w, target, max_iter, tol, rtol)

    def jacobians(th, xx, yy, ww):  # one fit: d theta* / d (theta0, x, y, w)
        refine = lambda *a: _geometric(*(v[None] for v in a), target, max_iter, tol, rtol)[0]  # noqa: E731
        return jax.jacfwd(refine, argnums=(0, 1, 2, 3))(th, xx, yy, ww)

    J = jax.vmap(jacobians)(theta0, x, y, w)
    t_out = sum(jnp.einsum("bij,bj->bi", Ji, ti) for Ji, ti in zip(J, tangents[:4]))
    return out, t_out
