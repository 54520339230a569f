"""Quaternion kernels in scipy's scalar-last order ``(x, y, z, w)``, for :class:`so3.Rotation`.

The functional API speaks matrices and scalar-first quaternions; ``Rotation`` stores
quaternions as scipy does (``as_quat()`` gives back what ``from_quat`` received, sign
included), so its conversions, products and powers run on these kernels. They reuse the
functional API's exact pieces: the quaternion logarithm of :mod:`.maps` (exact near 0 and
pi), its quaternion-to-matrix map, and the SVD projection of :mod:`.group`. Every kernel
broadcasts over leading axes and is safe under ``grad`` (no NaN at the identity).
"""
from __future__ import annotations

import jax.numpy as jnp

from .group import _safe_norm, _svd_rotation
from .maps import _from_quaternion, _poly, _quat_log, _switch

# Taylor series in t^2 of sin(t/2)/t and cos(t/2), used below the dtype's switch point
# (t^2 < 0.04 in float64: the first omitted term is below 1e-18 relative).
_SINC_HALF = (1 / 2, -1 / 48, 1 / 3840, -1 / 645120, 1 / 185794560)
_COS_HALF = (1.0, -1 / 8, 1 / 384, -1 / 46080, 1 / 10321920)


def _to_wxyz(q):
    return jnp.concatenate([q[..., 3:], q[..., :3]], -1)


def _to_xyzw(q):
    return jnp.concatenate([q[..., 1:], q[..., :1]], -1)


def _identity(shape, dtype):
    return jnp.zeros(tuple(shape) + (4,), dtype).at[..., 3].set(1)


def _qmul(p, q):
    """Hamilton product ``p q`` (the rotation q first, then p), broadcast."""
    pv, pw, qv, qw = p[..., :3], p[..., 3:], q[..., :3], q[..., 3:]
    v = pw * qv + qw * pv + jnp.cross(pv, qv)
    w = pw * qw - jnp.sum(pv * qv, -1, keepdims=True)
    return jnp.concatenate([v, w], -1)


def _conj(q):
    return jnp.concatenate([-q[..., :3], q[..., 3:]], -1)


def _normalize(q):
    return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def _canonical(q):
    """The sign with w > 0; where w = 0, the first non-zero of x, y, z positive (scipy's)."""
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    flip = (w < 0) | ((w == 0) & ((x < 0) | ((x == 0) & ((y < 0) | ((y == 0) & (z < 0))))))
    return jnp.where(flip[..., None], -q, q)


def _from_rotvec(v):
    """Unit quaternion of rotation vectors ``(..., 3)``: ``(sin(t/2) v/t, cos(t/2))``."""
    t2 = jnp.sum(v * v, -1, keepdims=True)
    small = t2 < _switch(v.dtype)
    t = jnp.sqrt(jnp.where(small, 1.0, t2))  # safe where: no sqrt'(0) in gradients
    sinc = jnp.where(small, _poly(t2, _SINC_HALF), jnp.sin(0.5 * t) / t)
    cos = jnp.where(small, _poly(t2, _COS_HALF), jnp.cos(0.5 * t))
    return jnp.concatenate([sinc * v, cos], -1)


def _as_rotvec(q):
    """Rotation vectors, angle in [0, pi], of quaternions (any norm): maps' exact log."""
    return _quat_log(_to_wxyz(_canonical(q)))


def _as_matrix(q):
    return _from_quaternion(_to_wxyz(q))


def _from_orthogonal(R):
    """Shepperd's method on a rotation matrix, with scipy's choice and sign: the row of the
    largest of (R00, R11, R22, trace), first on ties, whose component comes out positive."""
    r = R
    tr = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    choice = jnp.argmax(jnp.stack([r[..., 0, 0], r[..., 1, 1], r[..., 2, 2], tr], -1), -1)
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    rows = jnp.stack([
        jnp.stack([1 - tr + 2 * r[..., 0, 0], s01, s02, d21], -1),  # 4x * (x, y, z, w)
        jnp.stack([s01, 1 - tr + 2 * r[..., 1, 1], s12, d02], -1),  # 4y * (...)
        jnp.stack([s02, s12, 1 - tr + 2 * r[..., 2, 2], d10], -1),  # 4z * (...)
        jnp.stack([d21, d02, d10, 1 + tr], -1),  # 4w * (...)
    ], -2)
    q = jnp.take_along_axis(rows, choice[..., None, None], -2)[..., 0, :]
    return _normalize(q)


def _from_matrix(R, assume_valid):
    """Quaternions of ``(..., 3, 3)`` matrices; unless ``assume_valid``, a matrix that is not
    orthogonal (``R R^T`` off the identity by more than scipy's tolerance) is replaced by
    its nearest rotation first. Non-positive determinants are the caller's to refuse."""
    if not assume_valid:
        gram = R @ jnp.swapaxes(R, -1, -2)
        eye = jnp.eye(3, dtype=R.dtype)
        ortho = jnp.all(jnp.abs(gram - eye) <= 1e-12 + 1e-5 * eye, axis=(-2, -1))
        # Safe where: the SVD's derivative is singular at an orthogonal matrix (all
        # singular values 1), so where it is not used it sees a well-separated stand-in.
        stand_in = jnp.diag(jnp.array([1.0, 2.0, 3.0], R.dtype))
        projected = _svd_rotation(jnp.where(ortho[..., None, None], stand_in, R))
        R = jnp.where(ortho[..., None, None], R, projected)
    return _from_orthogonal(R)


def _from_mrp(p):
    """Modified Rodrigues parameters ``p = v tan(t/4)`` to quaternions."""
    p2 = jnp.sum(p * p, -1, keepdims=True)
    return jnp.concatenate([2 * p, 1 - p2], -1) / (1 + p2)


def _as_mrp(q):
    """The MRP of the quaternion with w >= 0 (angle <= pi, so |p| <= 1)."""
    sign = jnp.where(q[..., 3:] < 0, -1.0, 1.0).astype(q.dtype)
    return sign * q[..., :3] / (1 + sign * q[..., 3:])


def _magnitude(q):
    """Rotation angles in [0, pi]."""
    return 2 * jnp.arctan2(_safe_norm(q[..., :3]), jnp.abs(q[..., 3]))


def _power(q, n):
    """``q ** n``: exact identity, inverse and q for n = 0, -1, 1; ``exp(n log q)`` otherwise."""
    general = _from_rotvec(n * _as_rotvec(q))
    out = jnp.where(n == 1, q, general)
    out = jnp.where(n == -1, _conj(q), out)
    return jnp.where(n == 0, _identity(q.shape[:-1], q.dtype), out)


def _apply(q, v, inverse):
    R = _as_matrix(q)
    if inverse:
        R = jnp.swapaxes(R, -1, -2)
    return jnp.einsum("...ij,...j->...i", R, v)


def _approx_equal(p, q, atol):
    return _magnitude(_qmul(q, _conj(p))) < atol


def _slerp(q0, rotvec, alpha):
    """``q0 exp(alpha * rotvec)``: the geodesic from q0, at fraction alpha of ``rotvec``."""
    return _qmul(q0, _from_rotvec(alpha[..., None] * rotvec))

