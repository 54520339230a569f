"""Geometric refinement: Levenberg-Marquardt on exact orthogonal distances."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .circle import _circle_geometric
from .distance import _foot, _grad_q
from .kinds import ELLIPSE, HYPERBOLA, _unit
from .moments import _design, _poly


def _kind_ok(kind, target):
    """Whether kind code(s) ``kind`` satisfy the requested ``target`` ("any": a proper conic)."""
    if target in ("ellipse", "circle"):
        return kind == ELLIPSE
    if target == "hyperbola":
        return kind == HYPERBOLA
    return (kind == ELLIPSE) | (kind == HYPERBOLA)


def _geometric(theta0, x, y, w, target, max_iter, tol, rtol):
    """Levenberg-Marquardt on sum w d_i^2 over unit-norm theta, for a batch of fits:
    ``(theta (..., 6), fx, fy (..., N))``, the fits and their foot points (None for circles).

    theta0 ``(..., 6)``; x, y, w ``(..., N)``. d(theta) for a point p with foot point
    x* has gradient z(x*)/|grad Q(x*)|, so the Jacobian needs no differentiation
    through the root finding. Steps that leave the requested kind are rejected like
    steps that increase the cost. Each fit stops on its own; the loop runs until all
    have (or ``max_iter``), written batched rather than vmapped so that the closest-point
    search keeps its fast path (under vmap its ``lax.cond`` would become a select).
    Circles (``target="circle"``) refine their centre and radius instead.
    """
    if target == "circle":
        return _circle_geometric(theta0, x, y, w, max_iter, tol), None, None
    dt = x.dtype
    eye = jnp.eye(6, dtype=dt)

    def cost_of(theta):
        d, fx, fy, fr = _foot(theta, x, y, rtol)
        good = _kind_ok(fr.kind, target) & jnp.all(jnp.isfinite(d), axis=-1)
        return jnp.where(good, jnp.sum(w * d * d, axis=-1), jnp.inf), d, fx, fy

    def step_from(theta, d, fx, fy, mu):
        """The LM step's candidate and the step's length, from a fit and its foot points."""
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
        return _unit(theta + step), jnp.linalg.norm(step, axis=-1)

    # Each pass evaluates a candidate, keeps it or not, and proposes the next: the
    # closest-point search (the bulk of the graph) is traced once. Pass 0 evaluates the
    # start itself, which is always kept (a start of the wrong kind costs inf: done).
    def body(state):
        theta, cost, d, fx, fy, mu, it, done, cand, step_len = state
        new_cost, new_d, new_fx, new_fy = cost_of(cand)
        first = it == 0
        better = first | ((new_cost < cost) & ~done)
        keep = lambda new, old: jnp.where(better.reshape(better.shape + (1,) * (new.ndim - better.ndim)), new, old)
        mu_n = jnp.where(first | done, mu, jnp.where(better, mu * 0.3, mu * 10.0))
        small = (cost - new_cost <= tol * cost) | (step_len <= tol)
        done = jnp.where(first, ~jnp.isfinite(new_cost),
                         done | (better & small) | (mu_n > 1e12) | ~jnp.isfinite(cost))
        theta, cost, d, fx, fy = (keep(cand, theta), keep(new_cost, cost), keep(new_d, d), keep(new_fx, fx),
                                  keep(new_fy, fy))
        cand, step_len = step_from(theta, d, fx, fy, mu_n)
        return theta, cost, d, fx, fy, mu_n, it + 1, done, cand, step_len

    zero = jnp.zeros_like(x)
    batch = theta0.shape[:-1]
    state = (theta0, jnp.full(batch, jnp.inf, dt), zero, zero, zero, jnp.full(batch, 1e-3, dt), jnp.asarray(0),
             jnp.zeros(batch, bool), theta0, jnp.zeros(batch, dt))
    state = lax.while_loop(lambda s: (s[6] <= max_iter) & ~jnp.all(s[7]), body, state)
    return state[0], state[3], state[4]


@jax.custom_jvp
def _foot_at(theta, px, py, fx, fy):
    """The foot points ``fx, fy (..., N)`` of points on conics ``theta (..., 6)``, given
    (computed by the fit at this very theta), with the implicit-function derivative of
    the foot point: no root finding is traced, let alone differentiated."""
    return fx, fy


@_foot_at.defjvp
def _foot_at_jvp(primals, tangents):
    theta, px, py, fx0, fy0 = primals
    # through _foot_at again, so that a second derivative sees f depend on theta and p
    fx, fy = _foot_at(theta, px, py, fx0, fy0)

    def F(f_x, f_y, th, p_x, p_y):  # zero at the foot point: on the curve, p - f along the normal
        gx, gy = _grad_q(th, f_x, f_y)
        return _poly(th, f_x, f_y), (p_x - f_x) * gy - (p_y - f_y) * gx

    one, zero = jnp.ones_like(fx), jnp.zeros_like(fx)
    rest = (theta, px, py)
    _, (a, c) = jax.jvp(lambda u: F(u, fy, *rest), (fx,), (one,))  # dF/dfx: F is pointwise in f
    _, (b, d) = jax.jvp(lambda u: F(fx, u, *rest), (fy,), (one,))
    _, (r1, r2) = jax.jvp(lambda *q: F(fx, fy, *q), rest, tangents[:3])
    det = a * d - b * c
    ok = (det != 0) & jnp.isfinite(det)
    inv = jnp.where(ok, 1.0 / jnp.where(ok, det, 1.0), zero)
    return (fx, fy), (-(d * r1 - b * r2) * inv, -(a * r2 - c * r1) * inv)


def _stationarity(theta, x, y, w, fx, fy):
    """Gradient ``(B, 6)`` of each fit's cost sum w d^2 at the fit ``theta (B, 6)`` whose
    foot points are ``fx, fy``, with d the signed distance along the normal there."""
    def cost(th):
        fx_, fy_ = _foot_at(th, x, y, fx, fy)
        gx, gy = _grad_q(th, fx_, fy_)
        gn = jnp.sqrt(gx * gx + gy * gy)
        d = (gx * (x - fx_) + gy * (y - fy_)) / jnp.where(gn > 0, gn, 1.0)
        return jnp.sum(w * d * d)  # fits are independent: the gradient of the sum is each fit's

    return jax.grad(cost)(theta)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 7))
def _geometric_refine(theta0, x, y, w, target, max_iter, tol, rtol):
    """:func:`_geometric` for fits ``theta0 (B, 6)``, ``x, y, w (B, N)``, differentiable in
    both modes. Reverse mode cannot go through the ``while_loop``, and forward mode
    through it compiles the loop's derivative (15 s on 2 cores). The rule below
    differentiates the optimum instead (implicit function theorem): the cost gradient
    g(theta; x, y, w) vanishes at the fit (tangentially to the unit sphere, and g is
    orthogonal to theta by scale invariance), so ``(H + s theta theta^T) dtheta =
    -dg/d(x, y, w) . t`` with H = dg/dtheta. Only the cost's derivatives at the fit are
    compiled, never the loops'; the start ``theta0`` has no influence on an optimum.
    Circles keep forward mode through their (small) loop."""
    return _geometric(theta0, x, y, w, target, max_iter, tol, rtol)[0]


@_geometric_refine.defjvp
def _geometric_refine_jvp(target, max_iter, rtol, primals, tangents):
    theta0, x, y, w, tol = primals
    out, fx, fy = _geometric(theta0, x, y, w, target, max_iter, tol, rtol)
    if target == "circle":
        def jacobians(th, xx, yy, ww):  # one fit: d theta* / d (theta0, x, y, w)
            refine = lambda *a: _geometric(*(v[None] for v in a), target, max_iter, tol, rtol)[0][0]  # noqa: E731
            return jax.jacfwd(refine, argnums=(0, 1, 2, 3))(th, xx, yy, ww)

        J = jax.vmap(jacobians)(theta0, x, y, w)
        return out, sum(jnp.einsum("bij,bj->bi", Ji, ti) for Ji, ti in zip(J, tangents[:4]))
    theta = lax.stop_gradient(out)
    fx, fy = lax.stop_gradient(fx), lax.stop_gradient(fy)
    g = lambda th, xx, yy, ww: _stationarity(th, xx, yy, ww, fx, fy)  # noqa: E731
    eye = jnp.eye(6, dtype=theta.dtype)
    # H[b, :, i] = dg_b / dtheta_i: six JVPs with the same direction for every fit
    H = jax.vmap(lambda e: jax.jvp(lambda th: g(th, x, y, w), (theta,), (jnp.broadcast_to(e, theta.shape),))[1],
                 out_axes=-1)(eye)
    rhs = jax.jvp(lambda xx, yy, ww: g(theta, xx, yy, ww), (x, y, w), tangents[1:4])[1]
    scale = (jnp.trace(H, axis1=-2, axis2=-1) / 6.0)[..., None, None]
    A = H + jnp.abs(scale) * theta[..., :, None] * theta[..., None, :]
    # a fit without a finite system (a failed fit) gets a zero derivative; the test is on
    # primal values only, so the rule stays linear (transposable) in the tangents
    ok = jnp.all(jnp.isfinite(A), axis=(-2, -1))
    A = jnp.where(ok[..., None, None], A, eye)
    return out, jnp.where(ok[..., None], -jnp.linalg.solve(A, rhs[..., None])[..., 0], 0.0)
