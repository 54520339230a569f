"""``fit``: staged, bucketed jitted fitting of conics to point sets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._buckets import bucket, should_pad
from .._checks import as_float_array, as_scalar, check_choice, check_finite, check_trailing, check_weights, is_concrete
from .._xla import tuned_jit as _jit
from .distance import _distances, _frame, _sampson
from .circle import _circle_distance, _circle_from_moments
from .geometric import _geometric_refine, _kind_ok
from .kinds import (ELLIPSE, HYPERBOLA, _FIT_KINDS, _MIN_CIRCLE_POINTS, _MIN_POINTS, _RESIDUALS, ConicFit,
                    _canonical_sign, _classify, _rtol)
from .methods import CIRCLE_METHODS, METHOD_TABLE, SOLVERS, _direct, _spread, _too_few_points
from .moments import _denormalise, _normalised, _scatter, _stats


# The fit runs as a few jitted stages so that the per-point ones (moments, residuals)
# compile once for every kind and method.

@_jit
def _stats_jit(points, weights):
    """The moments, and where there are fewer than 5 distinct weighted points."""
    st = _stats(points, weights)
    return st, _too_few_points(st.mom)


# ``target``: the kind of conic the caller asked for ("any", "ellipse" or "hyperbola").

@_jit(static_argnames=("solver", "target"))
def _moments_solver_jit(mom, *, solver, target):
    """A solver that needs only the moments ``(B, 15)``: ``(theta (B, 6), ok (B,))``.
    Every circle solver is one."""
    if target == "circle":
        return _circle_from_moments(mom, solver)
    return SOLVERS[solver].from_moments(mom, target)


@_jit(static_argnames=("solver", "target"))
def _per_set_solver_jit(points, weights, st, *, solver, target):
    """A per-point-set solver, vmapped over the batch: ``(theta (B, 6), ok (B,))``, with
    the direct constrained fit wherever its answer is not of the requested kind."""
    x, y, w = _normalised(points, weights, st)
    S = _scatter(st.mom)
    theta = jax.vmap(SOLVERS[solver].per_set)(jnp.stack([x, y], axis=-1), w, S)
    ok = jnp.all(jnp.isfinite(theta), axis=-1) & _spread(st.mom)
    if target != "any":
        theta_d, ok_d = _direct(st.mom, target)
        right = _kind_ok(_classify(theta, _rtol(theta.dtype)), target)
        theta = jnp.where(right[:, None], theta, theta_d)
        ok = jnp.where(right, ok, ok_d)
    return theta, ok


@_jit(static_argnames=("target", "max_iter"))
def _geometric_jit(points, weights, st, theta, tol, *, target, max_iter):
    x, y, w = _normalised(points, weights, st)
    return _geometric_refine(theta, x, y, w, target, max_iter, tol, _rtol(theta.dtype))


@_jit(static_argnames="residual")
def _finish_jit(points, weights, st, theta, ok, want, *, residual):
    """Kind codes, residuals, and coefficients mapped back to data coordinates.

    ``want`` is the index of the requested kind in ``_FIT_KINDS``, traced so that one
    compilation serves every kind (a circle is an ellipse here).
    """
    rtol = _rtol(theta.dtype)
    theta = _finite_or_x2(theta)
    fr = _frame(theta, rtol)
    code = fr.kind  # classified in normalised coordinates, where it is well conditioned
    if residual == "none":
        res = jnp.full(code.shape, jnp.nan, theta.dtype)
    else:
        x, y, w = _normalised(points, weights, st)
        if residual == "circle":  # closed form
            d = _circle_distance(theta, x, y)
        else:
            d = _distances(theta, x, y, rtol, fr) if residual == "exact" else _sampson(theta, x, y)
        res = jnp.sqrt(jnp.sum(w * d * d, axis=-1) / st.weight) / st.scale
        res = jnp.where(jnp.isfinite(res), res, jnp.inf)
    coeffs = _canonical_sign(_denormalise(theta, st.mean, st.scale))
    proper = (code == ELLIPSE) | (code == HYPERBOLA)
    right = jnp.where((want == 1) | (want == 3), code == ELLIPSE, jnp.where(want == 2, code == HYPERBOLA, proper))
    # Unit-norm coefficients in data coordinates hold the conic only while the offset of
    # the points is not too large against their spread: the constant term carries
    # (offset / spread)^2 times the curve's own scale, and loses that much precision.
    far = jnp.finfo(theta.dtype).eps * jnp.sum(st.mean * st.mean, axis=-1) * st.scale * st.scale
    ok = ok & st.valid & right & jnp.all(jnp.isfinite(coeffs), axis=-1) & (far < 1e-3)
    return _finite_or_x2(coeffs), code, res, ok


def _finite_or_x2(theta):
    """Coefficients ``(..., 6)`` with non-finite rows replaced by x^2 = 0 (degenerate)."""
    return jnp.where(jnp.all(jnp.isfinite(theta), axis=-1, keepdims=True), theta,
                     jnp.zeros_like(theta).at[..., 0].set(1.0))


def fit(points: ArrayLike, *, kind: str = "any", method: str = "direct", weights: ArrayLike | None = None,
        max_iter: int = 50,
        tol: float = 1e-10, residual: str = "exact") -> ConicFit:
    """Fit a conic to 2-D points, batched over leading axes.

    Args:
      points: ``(..., N, 2)``, N >= 5 (N >= 3 for circles).
      kind: "any" (best conic of any type), "ellipse" (4AC - B^2 > 0 enforced),
        "hyperbola" (4AC - B^2 < 0 enforced) or "circle" (A = C, B = 0: see
        :mod:`toolkit.conic.circle`; ``geometry`` gives the centre and, as both
        semi-axes, the radius).
      method: "direct" (constrained algebraic, Halir-Flusser; Kasa for circles),
        "taubin", "hyper" (hyper least squares; hyperaccurate for circles),
        "geometric" (orthogonal distances, LM from "hyper") or, for circles only,
        "pratt".
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
      ValueError: last axis not 2, fewer than 5 points (or, for concrete input, fewer
        than 5 distinct points with positive weight; under ``jit`` that gives
        ``ok = False``), unknown kind/method/residual,
        mis-shaped weights, or (for concrete input) NaN/inf points or negative weights.

    Derivatives: ``jax.grad`` and ``jax.jacfwd`` work with respect to the points and
    weights for every method ("geometric" differentiates through its iterations: its
    reverse mode goes through a custom JVP rule, since a ``while_loop`` has none).

    Performance: the fit runs as a few jitted stages (compiled once per shape; the
    per-point stages are shared by every kind). The fit and point counts are padded to
    size buckets (:mod:`toolkit._buckets`), so a new count rarely compiles anew; problems
    of up to 32k points compile with light XLA optimisation. Call it directly on arrays;
    wrapping it in ``jax.jit`` also works (it
    then becomes part of the caller's computation).

    Example:
      >>> t = jnp.linspace(0, 2 * jnp.pi, 20)
      >>> pts = jnp.stack([3 * jnp.cos(t) + 1, 2 * jnp.sin(t)], -1)
      >>> c = fit(pts, kind="ellipse").coeffs
      >>> np.asarray(c / c[0] * 4).round(6) + 0.0   # unit norm, proportional to:
      array([  4.,   0.,   9.,  -8.,   0., -32.])
    """
    where = "conic.fit"
    check_choice(kind, _FIT_KINDS, "kind", where)
    check_choice(method, CIRCLE_METHODS, "method", where)
    check_choice(residual, _RESIDUALS, "residual", where)
    circle = kind == "circle"
    if method == "pratt" and not circle:
        raise ValueError(f"{where}: method='pratt' fits circles only (kind='circle'), got kind={kind!r}")
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    n = pts.shape[-2]
    least = _MIN_CIRCLE_POINTS if circle else _MIN_POINTS
    if n < least:
        raise ValueError(f"{where}: argument 'points' needs at least {least} points per fit, got {n}")
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
    # Padded to size buckets, so that a new size rarely compiles anew: on the host (any JAX
    # operation would itself compile per shape), except large batches already on a device,
    # where copying them through the host would cost more per call than one small pad
    # executable per shape. Inside a caller's trace nothing is padded.
    pad = should_pad(pts) and (w is None or should_pad(w))
    host = pad and not (nb * n > _LIGHT_MAX and isinstance(pts, jax.Array))
    if host:
        flat, wf = _pad_host(pts, w, nb, n)
    elif pad or pts.shape != (nb, n, 2) or (w is not None and w.shape != (nb, n)):
        to = (bucket(nb), bucket(n, fine=True)) if pad else (nb, n)
        flat, wf = _prepare(pts, w, shape=(nb, n), padded=to)
    else:
        flat, wf = pts, w
    concrete = is_concrete(flat) and (wf is None or is_concrete(wf))
    out, st, few = _staged_fit(flat, wf, kind=kind, method=method, max_iter=max_iter, tol=as_scalar(tol, pts.dtype),
                               residual=residual, screen_few=not concrete)
    # checked last, so that waiting for the device does not hold up dispatching the stages
    if concrete:
        if not np.all(np.asarray(st.valid)):
            _raise_invalid(pts, w, where)
        _raise_if_too_few(pts, w, np.asarray(few)[:nb], batch, where)
    if out.ok.shape != batch:
        out = ConicFit(*(_unpad_host(x, nb, batch) for x in out)) if host else _unpad(out, batch=batch)
    return out


def _staged_fit(flat, wf, *, kind, method, max_iter, tol, residual, screen_few):
    """The fit's jitted stages on points ``flat (B, N, 2)`` and weights ``wf (B, N)`` or
    None, already checked and padded: ``(ConicFit, stats, few)``. Raises nothing.

    ``screen_few``: take the moment test's word for "fewer than 5 distinct points"
    (ok = False there). Otherwise the caller confirms it exactly on the host and raises,
    as ``fit`` does for concrete input.
    """
    light = flat.shape[0] * flat.shape[1] <= _LIGHT_MAX
    st, few = _stats_jit(flat, wf, light_compile=light)
    how = METHOD_TABLE[method]
    if kind == "circle" or SOLVERS[how.solver].from_moments is not None:
        theta, ok = _moments_solver_jit(st.mom, solver=how.solver, target=kind, light_compile=light)
    else:
        theta, ok = _per_set_solver_jit(flat, wf, st, solver=how.solver, target=kind, light_compile=light)
    if how.refine:
        theta = _geometric_jit(flat, wf, st, theta, tol, target=kind, max_iter=max_iter, light_compile=light)
    if kind == "circle":  # any 3 points not on one line (the solvers' own test) determine a circle
        few = np.zeros(few.shape, bool)
    want = np.int32(_FIT_KINDS.index(kind))
    if kind == "circle" and residual == "exact":
        residual = "circle"
    out = ConicFit(*_finish_jit(flat, wf, st, theta, ok & ~few if screen_few else ok, want, residual=residual,
                                light_compile=light))
    return out, st, few


def _pad_host(pts, w, nb, n):
    """Points and weights as ``(B, M, 2)`` / ``(B, M)`` JAX arrays with B, M the size
    buckets of the fit count ``nb`` and point count ``n``: extra points are copies of a
    fit's last point with zero weight, extra fits copies of the last fit (sliced off by
    :func:`_unpad_host`). Done on the host: any JAX operation would compile per shape."""
    P = np.asarray(pts).reshape(nb, n, 2)
    W = None if w is None else np.broadcast_to(np.asarray(w), pts.shape[:-1]).reshape(nb, n)
    b, m = bucket(nb), bucket(n, fine=nb * n > _LIGHT_MAX)
    if W is None:  # always weights: an exact bucket size then shares the padded sizes' executables
        W = np.ones((nb, n), P.dtype)
    P = np.pad(P, ((0, b - nb), (0, m - n), (0, 0)), mode="edge")
    W = np.pad(np.pad(W, ((0, 0), (0, m - n))), ((0, b - nb), (0, 0)), mode="edge")
    W = jax.device_put(W, next(iter(w.devices())) if isinstance(w, jax.Array) else None)
    return jax.device_put(P, next(iter(pts.devices()))), W


def _unpad_host(x, nb, batch):
    """The first ``nb`` fits of a result field, with the caller's batch shape."""
    return jax.device_put(np.ascontiguousarray(np.asarray(x)[:nb]).reshape(batch + x.shape[1:]),
                          next(iter(x.devices())))


def _raise_invalid(pts, w, where):
    """The ValueError for NaN/inf points or bad weights, located on the host."""
    check_finite(pts, "points", where)
    if w is not None:
        check_weights(jnp.broadcast_to(w, pts.shape[:-1]), "weights", where)
    raise ValueError(f"{where}: invalid points or weights")  # not reached: the checks above name it


def _raise_if_too_few(pts, w, flagged, batch, where):
    """ValueError for the first point set with fewer than 5 distinct points of positive
    weight, counted exactly on the host among the sets the moment test flagged (that
    test is a screen: near-degenerate 5-point sets can trip it in float32)."""
    if not np.any(flagged):
        return
    P = np.asarray(pts).reshape((-1,) + pts.shape[-2:])
    W = None if w is None else np.broadcast_to(np.asarray(w), pts.shape[:-1]).reshape(P.shape[:2])
    for i in np.flatnonzero(flagged):
        kept = P[i] if W is None else P[i][W[i] > 0]
        if len(np.unique(kept, axis=0)) < 5:
            at = np.unravel_index(int(i), batch) if batch else ()
            who = f"point set {tuple(int(j) for j in at)} has" if batch else "the points have"
            raise ValueError(f"{where}: {who} fewer than 5 distinct points with positive weight; a conic needs 5")


# Problems up to this many points compile with light XLA optimisation: their run takes
# microseconds anyway, and compilation is 2-3x faster.
_LIGHT_MAX = 1 << 15


@jax.jit(static_argnames=("shape", "padded"))
def _prepare(points, weights, *, shape, padded):
    """Points ``(..., N, 2)`` and weights (or None) as ``(B, N, 2)`` / ``(B, N)`` with
    ``shape = (B, N)``, padded on the device to ``padded`` as :func:`_pad_host` pads."""
    (nb, n), (b, m) = shape, padded
    if weights is not None:
        weights = jnp.broadcast_to(weights, points.shape[:-1]).reshape((nb, n))
    points = points.reshape((nb, n, 2))
    if weights is None and (b, m) != (nb, n):
        weights = jnp.ones((nb, n), points.dtype)
    if (b, m) != (nb, n):
        points = jnp.pad(points, ((0, b - nb), (0, m - n), (0, 0)), mode="edge")
        weights = jnp.pad(jnp.pad(weights, ((0, 0), (0, m - n))), ((0, b - nb), (0, 0)), mode="edge")
    return points, weights


@jax.jit(static_argnames="batch")
def _unpad(out, *, batch):
    """The first ``prod(batch)`` fits of each result field, with the caller's batch shape."""
    nb = int(np.prod(batch, dtype=np.int64))
    return ConicFit(*(x[:nb].reshape(batch + x.shape[1:]) for x in out))
