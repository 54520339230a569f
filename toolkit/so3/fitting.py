"""Rotations from point correspondences: Kabsch (closed form) and robust Levenberg-Marquardt."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from .._buckets import bucket, pad_to, should_pad, unpad
from .._checks import as_float_array, as_scalar, check_choice, check_finite, check_trailing, check_weights, is_concrete
from .._xla import tuned_jit
from .group import _safe_norm, _svd_rotation
from .maps import _exp, _log, _vec


def _points_pair(P, Q, where):
    P = as_float_array(P, "P", where)
    Q = as_float_array(Q, "Q", where)
    check_trailing(P, (None, 3), "P", where)
    check_trailing(Q, (None, 3), "Q", where)
    if P.shape[-2] != Q.shape[-2]:
        raise ValueError(f"{where}: P and Q must hold the same number of points, got P {tuple(P.shape)} "
                         f"and Q {tuple(Q.shape)}")
    if P.shape[-2] == 0:
        raise ValueError(f"{where}: P and Q hold no points (shapes {tuple(P.shape)} and {tuple(Q.shape)})")
    _check_batch(where, P=P.shape[:-2], Q=Q.shape[:-2])
    dt = jnp.result_type(P.dtype, Q.dtype)
    return P.astype(dt), Q.astype(dt)


def _check_batch(where, **shapes):
    """ValueError naming every argument's batch shape unless they broadcast together."""
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        got = ", ".join(f"{name} {tuple(s)}" for name, s in shapes.items())
        raise ValueError(f"{where}: batch shapes do not broadcast: {got}") from None


def _weights(weights, P, where, *, name="P", item_ndim=1):
    """Weights ``(..., N)`` for ``P (..., N, *item)`` with ``item_ndim`` trailing axes per
    item (a point: 1, a rotation matrix: 2): default ones; concrete ones must be finite,
    non-negative and not all zero in any set."""
    lead = P.shape[:P.ndim - item_ndim]
    if weights is None:
        return np.ones(lead, P.dtype)  # on the host: jnp.ones would compile once per shape
    w = as_float_array(weights, "weights", where, dtype=P.dtype)
    if w.shape[-1:] != lead[-1:]:
        raise ValueError(f"{where}: weights must have shape (..., {lead[-1]}) to match {name} {tuple(P.shape)}, "
                         f"got {tuple(w.shape)}")
    _check_batch(where, **{name: lead[:-1], "weights": w.shape[:-1]})
    check_weights(w, "weights", where)
    return w


def _pad_points(arrays, w):
    """Point arrays ``(..., N, *item)`` (each with its item's number of axes and fill) and
    weights ``(..., N)`` padded to the bucket of N, with zero weights: a new point count
    then rarely compiles anew. Left alone inside a caller's trace."""
    if not all(should_pad(a) for a, _, _ in arrays) or not should_pad(w):
        return [a for a, _, _ in arrays], w
    m = bucket(w.shape[-1], fine=w.size > 1 << 15)  # many sets: padding would cost more than it saves
    return [pad_to(a, m, axis=-1 - item, fill=fill) for a, item, fill in arrays], pad_to(w, m, axis=-1)


def kabsch(P: ArrayLike, Q: ArrayLike, weights: ArrayLike | None = None) -> jax.Array:
    """Rotation R minimising ``sum_n w_n |Q_n - R P_n|^2`` (no translation; centre first if needed).

    Reflections are corrected (det R = +1), so planar point sets, whose cross-covariance
    has rank 2, still give the exact rotation.

    Args:
      P, Q: ``(..., N, 3)`` corresponding points.
      weights: ``(..., N)`` non-negative, default ones.
    Returns:
      ``(..., 3, 3)``.
    Raises:
      ValueError: shapes do not end in ``(N, 3)``, N differs between P and Q or is 0,
        batch shapes do not broadcast, weights negative, non-finite or all zero, or
        (concrete input) NaN/inf points, or points of positive weight all on one line
        through the origin (one point, say), which leave the rotation about that line
        undetermined. Under ``jit`` such points give one of the rotations that fit them.

    >>> from toolkit import so3
    >>> R = so3.exp(jnp.array([0.1, 0.2, 0.3])); P = jnp.eye(3)
    >>> bool(jnp.allclose(so3.kabsch(P, so3.apply(R, P)), R, atol=1e-6))
    True
    """
    P, Q = _points_pair(P, Q, "so3.kabsch")
    check_finite(P, "P", "so3.kabsch")
    check_finite(Q, "Q", "so3.kabsch")
    (P, Q), w = _pad_points([(P, 1, 0), (Q, 1, 0)], _weights(weights, P, "so3.kabsch"))
    R, undetermined = _kabsch_checked(P, Q, w)
    undetermined = np.asarray(undetermined) if is_concrete(undetermined) else None  # np.any would compile
    if undetermined is not None and undetermined.any():
        at = np.argwhere(undetermined)[0]
        who = f"point set {tuple(int(i) for i in at)}" if at.size else "the points"
        raise ValueError(f"so3.kabsch: argument 'P': {who} (with positive weight) lie on one line through the "
                         f"origin (or at it), so the rotation about that line is undetermined; it takes 2 "
                         f"independent directions")
    return R


@jax.jit
def _kabsch(P, Q, w):
    H = jnp.einsum("...n,...ni,...nj->...ij", w, Q, P)  # sum w q p^T; R = argmax tr(R^T H)
    return _svd_rotation(H)


@jax.jit
def _kabsch_checked(P, Q, w):
    """``(R, undetermined)``: the rotation is unique iff the weighted points span at least
    2 directions, i.e. the second eigenvalue of ``sum w p p^T`` is not negligible."""
    M = jnp.einsum("...n,...ni,...nj->...ij", w, P, P)
    lam = jnp.linalg.eigvalsh(M)  # ascending
    eps = jnp.finfo(P.dtype).eps
    undetermined = ~(lam[..., 1] > 100 * eps * lam[..., 2])
    batch = jnp.broadcast_shapes(P.shape[:-2], Q.shape[:-2], w.shape[:-1])
    return _kabsch(P, Q, w), jnp.broadcast_to(undetermined, batch)


class FitInfo(NamedTuple):
    """Result details of :func:`fit`.

    Attributes:
      cost: final robust cost ``sum_n w_n rho(|R P_n - Q_n|)``.
      history: ``(max_iter + 1,)`` cost before each iteration; entries after ``n_iter``
        repeat the final cost.
      n_iter: iterations taken.
      converged: True when the relative cost decrease of an accepted step fell below
        ``tol``, the accepted step was below ``sqrt(eps) (1 + |v|)``, or no step could
        decrease the cost any more (a minimum to machine precision).
    """

    cost: jax.Array
    history: jax.Array
    n_iter: jax.Array
    converged: jax.Array


_LOSSES = ("l2", "huber", "cauchy")


def _robust(e2, loss, scale):
    """rho(e) and the IRLS weight rho'(e)/e for residual norms e (given e^2)."""
    c2 = scale * scale
    if loss == "l2":
        return 0.5 * e2, jnp.ones_like(e2)
    if loss == "huber":
        inside = e2 <= c2
        e = jnp.sqrt(jnp.where(inside, c2, e2))
        return jnp.where(inside, 0.5 * e2, scale * (e - 0.5 * scale)), jnp.where(inside, 1.0, scale / e)
    r = e2 / c2  # cauchy
    return 0.5 * c2 * jnp.log1p(r), 1.0 / (1.0 + r)


def _fit_single(P, Q, w, v0, loss, scale, max_iter, tol, hist_len):
    dt = P.dtype

    def cost_of(R):
        r = Q - P @ R.T
        rho, _ = _robust(jnp.sum(r * r, -1), loss, scale)
        return jnp.sum(w * rho)

    def step(state):
        v, lam, cost, it, done, conv, hist = state
        R = _exp(v)
        r = Q - P @ R.T
        _, wi = _robust(jnp.sum(r * r, -1), loss, scale)
        wi = w * wi
        # Right perturbation R exp(d): residual Q - R exp(d) P ~ r + R hat(P) d, so
        # J_n = R hat(P_n) and J^T J = sum w (|P|^2 I - P P^T) (R cancels).
        pp = jnp.sum(P * P, -1)
        H = jnp.einsum("n,n->", wi, pp) * jnp.eye(3, dtype=dt) - jnp.einsum("n,ni,nj->ij", wi, P, P)
        # J_n^T r_n = hat(P_n)^T R^T r_n = -P_n x (R^T r_n); the step solves (H + lam diag H) d = -J^T r.
        g = jnp.einsum("n,ni->i", wi, jnp.cross(P, r @ R))
        Hd = H + lam * jnp.diag(jnp.diag(H)) + jnp.finfo(dt).tiny * jnp.eye(3, dtype=dt)
        d = jnp.linalg.solve(Hd, g)
        v_new = _log(R @ _exp(d))
        new_cost = cost_of(_exp(v_new))
        accept = jnp.isfinite(new_cost) & (new_cost < cost)
        rel = (cost - new_cost) / jnp.maximum(cost, jnp.finfo(dt).tiny)
        small = accept & (rel <= tol)
        # A step below sqrt(eps) changes v by less than the noise-free optimum can be
        # resolved from the cost (which is quadratic in the error): stop there, rather
        # than idling through rejected steps (vmap runs all problems as long as the slowest).
        tiny_step = accept & (_safe_norm(d) <= jnp.sqrt(jnp.finfo(dt).eps) * (1.0 + _safe_norm(v)))
        stuck = lam > 1e12
        v = jnp.where(accept, v_new, v)
        cost = jnp.where(accept, new_cost, cost)
        lam = jnp.where(accept, jnp.maximum(lam * 0.1, 1e-12), lam * 10.0)
        hist = hist.at[it + 1].set(cost)
        conv = small | tiny_step | stuck | (cost == 0)
        return v, lam, cost, it + 1, conv, conv, hist

    def cond(state):
        _, _, _, it, done, _, _ = state
        return (it < max_iter) & ~done

    cost0 = cost_of(_exp(v0))
    hist = jnp.full((hist_len,), cost0, dt)  # hist_len >= max_iter + 1 (static; max_iter traced)
    init = (v0, jnp.asarray(1e-3, dt), cost0, jnp.asarray(0), jnp.asarray(False), jnp.asarray(False), hist)
    v, _, cost, it, _, conv, hist = lax.while_loop(cond, step, init)
    # Entries after the last iteration repeat the final cost (no NaN padding).
    idx = jnp.arange(hist_len)
    hist = jnp.where(idx > it, cost, hist)
    finite = jnp.all(jnp.isfinite(P)) & jnp.all(jnp.isfinite(Q)) & jnp.isfinite(cost)
    return v, FitInfo(cost=cost, history=hist, n_iter=it, converged=conv & finite)


def fit(P: ArrayLike, Q: ArrayLike, *, init: ArrayLike | None = None, loss: str = "l2", scale: float = 1.0,
        weights: ArrayLike | None = None, max_iter: int = 50, tol: float = 1e-12) -> tuple[jax.Array, FitInfo]:
    """Rotation vector v minimising ``sum_n w_n rho(|exp(v) P_n - Q_n|)`` by Levenberg-Marquardt.

    Updates are right perturbations ``R <- R exp(d)``; robust losses use iteratively
    reweighted least squares inside the same jitted ``lax.while_loop``. The start is
    ``init`` or the Kabsch solution. Batched over leading dims.

    Args:
      P, Q: ``(..., N, 3)`` source and target points.
      init: ``(..., 3)`` starting rotation vector, default the Kabsch rotation.
      loss: "l2" | "huber" | "cauchy".
      scale: residual scale of the robust loss (distance beyond which a point counts as
        an outlier); ignored for "l2".
      weights: ``(..., N)`` non-negative point weights.
      max_iter: iteration cap (static).
      tol: stop when the relative cost decrease of an accepted step is <= tol.
    Returns:
      ``(v, FitInfo)`` with ``v (..., 3)``; FitInfo fields carry the batch shape.
    Raises:
      ValueError: bad shapes or options; NaN/inf in concrete P or Q (under ``jit``
        such input gives ``converged=False`` instead).

    >>> from toolkit import so3
    >>> P = jnp.eye(3); v, info = so3.fit(P, so3.apply(so3.exp(jnp.array([0.3, -0.2, 0.1])), P))
    >>> v.round(4).tolist(), bool(info.converged)
    ([0.3, -0.2, 0.1], True)
    """
    where = "so3.fit"
    P, Q = _points_pair(P, Q, where)
    check_choice(loss, _LOSSES, "loss", where)
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"{where}: max_iter must be a positive int, got {max_iter!r}")
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"{where}: scale must be > 0, got {scale!r}")
    check_finite(P, "P", where)
    check_finite(Q, "Q", where)
    (P, Q), w = _pad_points([(P, 1, 0), (Q, 1, 0)], _weights(weights, P, where))
    v0 = None if init is None else _vec(init, "init", where).astype(P.dtype)
    v, info = _fit(P, Q, w, v0, as_scalar(scale, P.dtype), as_scalar(tol, P.dtype), loss, np.int32(max_iter),
                   _history_length(max_iter + 1), light_compile=max(P.size, Q.size) // 3 <= 1 << 15)
    return v, info._replace(history=unpad(info.history, max_iter + 1, axis=-1))


def _history_length(n: int) -> int:
    """The cost history's compiled length: ``n`` rounded up to a power of two, at least 64,
    so that one executable serves every traced ``max_iter`` below it."""
    return max(64, 1 << (n - 1).bit_length())


# small problems compile with light XLA optimisation (2-3x faster; the run takes
# milliseconds anyway); others with XLA's defaults
@tuned_jit(fast_math=False, static_argnums=(6, 8))
def _fit(P, Q, w, v0, scale, tol, loss, max_iter, hist_len):
    batch = jnp.broadcast_shapes(P.shape[:-2], Q.shape[:-2], w.shape[:-1],
                                 () if v0 is None else v0.shape[:-1])
    n = P.shape[-2]
    P = jnp.broadcast_to(P, batch + (n, 3))
    Q = jnp.broadcast_to(Q, batch + (n, 3))
    w = jnp.broadcast_to(w, batch + (n,))
    v0 = _log(_kabsch(P, Q, w)) if v0 is None else jnp.broadcast_to(v0, batch + (3,))
    fn = lambda P_, Q_, w_, v_: _fit_single(P_, Q_, w_, v_, loss, scale, max_iter, tol, hist_len)  # noqa: E731
    for _ in batch:
        fn = jax.vmap(fn)
    return fn(P, Q, w, v0)
