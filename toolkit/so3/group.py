"""Group operations: composition, inverse, action on points, geodesic distance, projection."""
from __future__ import annotations

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp

from .maps import _log, _mat, _vec


def compose(R1: ArrayLike, R2: ArrayLike) -> jax.Array:
    """``R1 @ R2`` (apply R2 first). Args ``(..., 3, 3)`` each, broadcast. Returns ``(..., 3, 3)``."""
    return _mat(R1, "R1", "so3.compose") @ _mat(R2, "R2", "so3.compose")


def inverse(R: ArrayLike) -> jax.Array:
    """Inverse rotation ``R^T``. Args: ``(..., 3, 3)``. Returns ``(..., 3, 3)``."""
    return jnp.swapaxes(_mat(R, "R", "so3.inverse"), -1, -2)


def apply(R: ArrayLike, p: ArrayLike) -> jax.Array:
    """Rotate points: ``p'_n = R p_n``.

    Args:
      R: ``(..., 3, 3)``.
      p: ``(..., N, 3)`` (or ``(..., 3)`` for one point when R has no batch).
    Returns:
      rotated points, the broadcast shape of ``p``.
    """
    R = _mat(R, "R", "so3.apply")
    p = _vec(p, "p", "so3.apply")
    return jnp.einsum("...ij,...nj->...ni", R, p) if p.ndim >= 2 else R @ p


def distance(R1: ArrayLike, R2: ArrayLike) -> jax.Array:
    """Geodesic angle between rotations, ``|log(R1^T R2)|`` in [0, pi] (exact for tiny angles).

    Args:
      R1, R2: ``(..., 3, 3)``.
    Returns:
      ``(...)`` radians.
    """
    R1 = _mat(R1, "R1", "so3.distance")
    R2 = _mat(R2, "R2", "so3.distance")
    return _distance(R1, R2)


@jax.jit
def _distance(R1, R2):
    return _safe_norm(_log(jnp.swapaxes(R1, -1, -2) @ R2))


def _safe_norm(v):
    n2 = jnp.sum(v * v, -1)
    pos = n2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, n2, 1.0)), 0.0)


@jax.jit
def _svd_rotation(M):
    """Nearest proper rotation to M in Frobenius norm: U diag(1, 1, det(U V^T)) V^T."""
    U, _, Vt = jnp.linalg.svd(M)
    d = jnp.sign(jnp.linalg.det(U @ Vt))
    d = jnp.where(d == 0, 1.0, d)
    U = U.at[..., :, 2].multiply(d[..., None])
    return U @ Vt


def project(M: ArrayLike) -> jax.Array:
    """Nearest rotation matrix (Frobenius norm) to any 3x3 matrix, via SVD.

    Args:
      M: ``(..., 3, 3)``.
    Returns:
      ``(..., 3, 3)`` proper rotations (det = +1; reflections are fixed).
    """
    return _svd_rotation(_mat(M, "M", "so3.project"))
