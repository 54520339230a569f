"""Group operations: composition, inverse, action on points, geodesic distance, projection."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .maps import _log, _mat, _vec


def compose(R1: ArrayLike, R2: ArrayLike) -> jax.Array:
    """``R1 @ R2`` (apply R2 first). Args ``(..., 3, 3)`` each, broadcast. Returns ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> R = so3.compose(so3.exp(jnp.array([0.0, 0.0, 0.3])), so3.exp(jnp.array([0.0, 0.0, 0.4])))
    >>> [round(float(c), 6) for c in so3.log(R)]
    [0.0, 0.0, 0.7]
    """
    return _mat(R1, "R1", "so3.compose") @ _mat(R2, "R2", "so3.compose")


def inverse(R: ArrayLike) -> jax.Array:
    """Inverse rotation ``R^T``. Args: ``(..., 3, 3)``. Returns ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> R = so3.exp(jnp.array([0.1, 0.2, 0.3]))
    >>> bool(jnp.allclose(so3.compose(R, so3.inverse(R)), jnp.eye(3)))
    True
    """
    return jnp.swapaxes(_mat(R, "R", "so3.inverse"), -1, -2)


def apply(R: ArrayLike, p: ArrayLike) -> jax.Array:
    """Rotate points: ``p'_n = R p_n``.

    Args:
      R: ``(..., 3, 3)``.
      p: ``(..., N, 3)`` (or ``(..., 3)`` for one point when R has no batch).
    Returns:
      rotated points, the broadcast shape of ``p``.

    >>> from toolkit import so3
    >>> so3.apply(so3.exp(jnp.array([0.0, 0.0, jnp.pi / 2])), jnp.array([1.0, 0.0, 0.0])).round(6).tolist()
    [0.0, 1.0, 0.0]
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

    >>> from toolkit import so3
    >>> round(float(so3.distance(jnp.eye(3), so3.exp(jnp.array([0.0, 0.3, 0.4])))), 6)  # angle, radians
    0.5
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


def _polar_parts(M):
    """``(R, V, sd)``: the nearest proper rotation ``R = U D V^T`` to M, with ``D =
    diag(1, 1, det(U V^T))``, its right singular vectors V and the signed singular values
    ``sd = D s`` (so ``M = R V diag(sd) V^T``)."""
    U, s, Vt = jnp.linalg.svd(M)
    d = jnp.where(jnp.linalg.det(U @ Vt) < 0, -1.0, 1.0).astype(M.dtype)
    flip = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], -1)
    return (U * flip[..., None, :]) @ Vt, jnp.swapaxes(Vt, -1, -2), s * flip


@jax.custom_jvp
def _polar_rotation(M):
    return _polar_parts(M)[0]


@_polar_rotation.defjvp
def _polar_rotation_jvp(primals, tangents):
    """``dR = R Omega`` with Omega skew, from ``Omega P + P Omega = R^T dM - dM^T R``
    (``P = V diag(sd) V^T``, the symmetric factor of ``M = R P``), solved in the basis V:
    ``Omega~_ij = A~_ij / (sd_i + sd_j)``. Unlike the SVD's own derivative, which divides
    by ``s_i^2 - s_j^2``, this stays finite and exact when singular values repeat, as
    they do for a mean of two rotations, or for Kabsch on symmetric point sets."""
    (M,), (dM,) = primals, tangents
    R, V, sd = _polar_parts(M)
    K = jnp.swapaxes(R, -1, -2) @ dM
    A = jnp.swapaxes(V, -1, -2) @ (K - jnp.swapaxes(K, -1, -2)) @ V
    den = sd[..., :, None] + sd[..., None, :]
    Om = jnp.where(den != 0, A / jnp.where(den != 0, den, 1.0), 0.0)
    return R, R @ (V @ Om @ jnp.swapaxes(V, -1, -2))


@jax.jit
def _svd_rotation(M):
    """Nearest proper rotation to M in Frobenius norm: U diag(1, 1, det(U V^T)) V^T, with
    a derivative that holds at repeated singular values (:func:`_polar_rotation`)."""
    return _polar_rotation(M)


def project(M: ArrayLike) -> jax.Array:
    """Nearest rotation matrix (Frobenius norm) to any 3x3 matrix, via SVD.

    Args:
      M: ``(..., 3, 3)``.
    Returns:
      ``(..., 3, 3)`` proper rotations (det = +1; reflections are fixed).

    >>> from toolkit import so3
    >>> R = so3.project(so3.exp(jnp.array([0.1, 0.2, 0.3])) + 1e-3)
    >>> bool(jnp.allclose(R @ R.T, jnp.eye(3))), round(float(jnp.linalg.det(R)), 6)
    (True, 1.0)
    """
    return _svd_rotation(_mat(M, "M", "so3.project"))
