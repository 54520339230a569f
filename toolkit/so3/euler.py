"""Euler and Davenport angles <-> quaternions (scalar-last), for :class:`so3.Rotation`.

Angles from a quaternion follow Bernardes & Viollet, "Quaternion to Euler angles
conversion: a direct, general and computationally efficient method" (PLoS ONE, 2022):
the middle angle is ``2 atan2(|(c, d)|, |(a, b)|)`` and the outer two are the half sum
and half difference ``atan2(b, a) -/+ atan2(d, c)``, from four linear combinations
``a, b, c, d`` of the quaternion. No matrix, no ``arccos``: every angle keeps full
precision, and the sequence only changes which combinations are formed. Davenport
angles (any three axes, consecutive ones orthogonal) are the same computation after a
fixed rotation by the angle ``lambda`` between the first and the third axis.

Sequences: upper case ``"XYZ"`` is intrinsic (about the moving axes), lower case
``"xyz"`` extrinsic (about fixed axes), as in scipy. At gimbal lock (middle angle within
1e-7 of its ends) the third angle is set to zero and the first carries the whole rotation.
"""
from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np

from .quaternions import _from_rotvec, _identity, _qmul

GIMBAL_EPS = 1e-7
GIMBAL_MESSAGE = ("Gimbal lock detected. Setting third angle to zero since it is not possible to uniquely "
                  "determine all angles.")


def parse_sequence(seq, *, exactly_three: bool):
    """``(axes, extrinsic)`` of an Euler sequence such as "xyz" or "ZXZ"; scipy's errors."""
    if not isinstance(seq, str):
        raise ValueError(f"Expected `seq` to be a string of axes from 'xyz' or 'XYZ', got {seq!r}")
    if exactly_three and len(seq) != 3:
        raise ValueError(f"Expected 3 axes, got {seq}.")
    if not 1 <= len(seq) <= 3:
        raise ValueError(f"Expected axis specification to be a non-empty string of up to 3 characters, got {seq}")
    intrinsic = re.fullmatch(r"[XYZ]{1,3}", seq) is not None
    extrinsic = re.fullmatch(r"[xyz]{1,3}", seq) is not None
    if not (intrinsic or extrinsic):
        raise ValueError(f"Expected axes from `seq` to be from ['x', 'y', 'z'] or ['X', 'Y', 'Z'], got {seq}")
    if any(a == b for a, b in zip(seq, seq[1:])):
        raise ValueError(f"Expected consecutive axes to be different, got {seq}")
    return np.array(["xyz".index(c) for c in seq.lower()], np.int32), extrinsic


def parse_order(order):
    """True for an extrinsic Davenport order ("e"/"extrinsic"), False for intrinsic."""
    if order in ("e", "extrinsic"):
        return True
    if order in ("i", "intrinsic"):
        return False
    raise ValueError("order should be 'e'/'extrinsic' for extrinsic sequences or 'i'/'intrinsic' for intrinsic "
                     f"sequences, got {order}")


def _elementary(axis, angle):
    """Quaternion of a rotation by ``angle (...)`` about basis axis ``axis`` (0, 1, 2; traced)."""
    half = 0.5 * angle
    unit = jnp.arange(3) == axis
    return jnp.concatenate([jnp.where(unit, jnp.sin(half)[..., None], 0.0), jnp.cos(half)[..., None]], -1)


def from_euler(angles, axes, extrinsic):
    """Quaternions of angles ``(..., n)`` (radians) about basis ``axes (n,)`` (ints, traced:
    one executable serves every sequence of a length and kind).

    Extrinsic: later rotations act on the left (about the fixed frame); intrinsic: on the right.
    """
    q = _elementary(axes[0], angles[..., 0])
    for n in range(1, angles.shape[-1]):
        e = _elementary(axes[n], angles[..., n])
        q = _qmul(e, q) if extrinsic else _qmul(q, e)
    return q


def from_davenport(axes, angles, extrinsic):
    """Quaternions of angles ``(..., n)`` about unit axes ``(..., n, 3)``, broadcast."""
    shape = jnp.broadcast_shapes(axes.shape[:-2], angles.shape[:-1])
    q = _identity(shape, angles.dtype)
    for n in range(axes.shape[-2]):
        e = _from_rotvec(angles[..., n, None] * axes[..., n, :])
        q = _qmul(e, q) if extrinsic else _qmul(q, e)
    return q


def _wrap(a):
    return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi


def _angles(a, b, c, d, *, extrinsic, sign, lamb):
    """Bernardes-Viollet's angles from the four combinations; ``(angles (..., 3), locked (...))``.

    ``sign`` is the parity of the axes (1 for symmetric sequences) and ``lamb`` the angle
    between the first and the third axis (0 for symmetric Euler sequences).
    """
    middle = 2 * jnp.arctan2(jnp.hypot(c, d), jnp.hypot(a, b))
    half_sum, half_diff = jnp.arctan2(b, a), jnp.arctan2(d, c)
    near_zero = jnp.abs(middle) <= GIMBAL_EPS
    near_pi = jnp.abs(middle - jnp.pi) <= GIMBAL_EPS
    locked = near_zero | near_pi
    # At lock only the sum (middle 0) or the difference (middle pi) of the outer angles is
    # defined: the first angle of the output carries it and the third is zero.
    lock_first = jnp.where(near_zero, 2 * half_sum, 2 * half_diff * (-1 if extrinsic else 1))
    outer_a, outer_b = half_sum - half_diff, (half_sum + half_diff) * sign
    if extrinsic:
        first, third = jnp.where(locked, lock_first, outer_a), jnp.where(locked, 0.0, outer_b)
    else:  # the sequence was reversed: the output's first angle is the computed third
        first, third = jnp.where(locked, lock_first * sign, outer_b), jnp.where(locked, 0.0, outer_a)
    angles = jnp.stack([first, middle - lamb, third], -1)
    return _wrap(angles), locked


def as_euler(q, axes, extrinsic):
    """Angles ``(..., 3)`` of the sequence ``axes (3,)`` (ints, traced), and the gimbal-lock
    mask ``(...)``."""
    i, j, k = (axes[0], axes[1], axes[2]) if extrinsic else (axes[2], axes[1], axes[0])
    symmetric = i == k
    k = jnp.where(symmetric, 3 - i - j, k)  # symmetric: the axis not in the sequence
    sign = ((i - j) * (j - k) * (k - i) // 2).astype(q.dtype)  # parity of (i, j, k): +1 or -1
    take = lambda n: jnp.take(q, n, axis=-1)  # noqa: E731
    w, qi, qj, qk = q[..., 3], take(i), take(j), take(k)
    # Symmetric (i j i): directly. Otherwise a rotation by pi/2 about axis j makes the
    # sequence symmetric; it is folded into the combinations exactly.
    a = jnp.where(symmetric, w, w - qj)
    b = jnp.where(symmetric, qi, qi + sign * qk)
    c = jnp.where(symmetric, qj, qj + w)
    d = jnp.where(symmetric, sign * qk, sign * qk - qi)
    return _angles(a, b, c, d, extrinsic=extrinsic, sign=jnp.where(symmetric, 1.0, sign).astype(q.dtype),
                   lamb=jnp.where(symmetric, 0.0, jnp.pi / 2).astype(q.dtype))


def as_davenport(q, axes, extrinsic):
    """Angles ``(..., 3)`` about unit axes ``(..., 3, 3)`` (consecutive ones orthogonal),
    and the gimbal-lock mask."""
    n1, n2, n3 = axes[..., 0, :], axes[..., 1, :], axes[..., 2, :]
    if not extrinsic:
        n1, n3 = n3, n1
    n12 = jnp.cross(n1, n2)
    lamb = jnp.arctan2(jnp.sum(n3 * n12, -1), jnp.sum(n3 * n1, -1))
    neg = lamb < 0  # work with the axis -n2 so that lambda is in [0, pi]
    n2 = jnp.where(neg[..., None], -n2, n2)
    n12 = jnp.where(neg[..., None], -n12, n12)
    lamb = jnp.abs(lamb)
    turn = jnp.concatenate([jnp.sin(0.5 * lamb)[..., None] * n2, jnp.cos(0.5 * lamb)[..., None]], -1)
    t = _qmul(turn, q)
    a, b = t[..., 3], jnp.sum(t[..., :3] * n1, -1)
    c, d = jnp.sum(t[..., :3] * n2, -1), jnp.sum(t[..., :3] * n12, -1)
    angles, locked = _angles(a, b, c, d, extrinsic=extrinsic, sign=1, lamb=lamb)
    return angles.at[..., 1].set(jnp.where(neg, -angles[..., 1], angles[..., 1])), locked
