"""Rotation averaging: chordal (closed form) and geodesic (Karcher mean)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from .._checks import as_float_array, as_scalar, check_choice, check_trailing
from .fitting import _pad_points, _weights
from .group import _safe_norm, _svd_rotation
from .maps import _exp, _log


_MEANS = ("chordal", "geodesic")


def mean(Rs: ArrayLike, weights: ArrayLike | None = None, *, method: str = "chordal", max_iter: int = 50,
         tol: float | None = None) -> jax.Array:
    """Average of rotations.

    "chordal": the rotation nearest (Frobenius) to the weighted mean matrix, via SVD.
    "geodesic": the Karcher mean minimising ``sum w_m angle(R, R_m)^2``, by Riemannian
    gradient steps ``R <- R exp(sum w_m log(R^T R_m) / sum w_m)`` from the chordal mean.

    Args:
      Rs: ``(..., M, 3, 3)`` rotations.
      weights: ``(..., M)`` non-negative, default equal.
      method: "chordal" | "geodesic".
      max_iter: Karcher iterations at most.
      tol: stop when the update angle is below tol (default 1e-12 float64, 1e-6 float32).
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> Rs = so3.exp(jnp.array([[0.0, 0.0, 0.1], [0.0, 0.0, 0.3]]))
    >>> [round(float(c), 6) for c in so3.log(so3.mean(Rs, method="geodesic"))]
    [0.0, 0.0, 0.2]
    """
    where = "so3.mean"
    Rs = as_float_array(Rs, "Rs", where)
    check_trailing(Rs, (None, 3, 3), "Rs", where)
    check_choice(method, _MEANS, "method", where)
    if Rs.shape[-3] == 0:
        raise ValueError(f"{where}: Rs holds no rotations (shape {tuple(Rs.shape)}); the mean of none is undefined")
    w = _weights(weights, Rs, where, name="Rs", item_ndim=2)
    (Rs,), w = _pad_points([(Rs, 2, np.eye(3))], w)  # identities of zero weight: log() stays finite
    tol = tol if tol is not None else (1e-12 if Rs.dtype == jnp.float64 else 1e-6)
    return _mean(Rs, w, as_scalar(tol, Rs.dtype), np.int32(max_iter), method)


@functools.partial(jax.jit, static_argnums=(4,))
def _mean(Rs, w, tol, max_iter, method):
    m = Rs.shape[-3]
    w = w / jnp.sum(w, -1, keepdims=True)
    R0 = _svd_rotation(jnp.einsum("...m,...mij->...ij", w, Rs))
    if method == "chordal":
        return R0

    def single(R0, Rs, w):
        def body(s):
            R, it, _ = s
            d = jnp.einsum("m,mi->i", w, _log(jnp.swapaxes(R, -1, -2)[None] @ Rs))
            return R @ _exp(d), it + 1, _safe_norm(d)

        def cond(s):
            return (s[1] < max_iter) & (s[2] > tol)

        R, _, _ = lax.while_loop(cond, body, (R0, jnp.asarray(0), jnp.asarray(jnp.inf, Rs.dtype)))
        return R

    fn = single
    batch = jnp.broadcast_shapes(Rs.shape[:-3], w.shape[:-1])
    Rs = jnp.broadcast_to(Rs, batch + (m, 3, 3))
    w = jnp.broadcast_to(w, batch + (m,))
    R0 = jnp.broadcast_to(R0, batch + (3, 3))
    for _ in batch:
        fn = jax.vmap(fn)
    return fn(R0, Rs, w)
