"""The exponential and logarithm maps of SO(3), hat/vee and quaternions, exact at 0 and pi."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from .._checks import as_float_array, check_trailing, is_concrete


# Below theta^2 = switch the coefficients come from Taylor series (6 terms, truncation
# < 1e-19 relative); above it the closed forms lose at most ~eps/theta^2 relative.
# float32 switches later because its closed forms lose precision sooner.
_TAYLOR_SWITCH = {jnp.dtype("float64"): 0.04, jnp.dtype("float32"): 0.25, jnp.dtype("float16"): 0.25,
                  jnp.dtype("bfloat16"): 0.25}


def _switch(dtype) -> float:
    return _TAYLOR_SWITCH.get(jnp.dtype(dtype), 0.25)


def _vec(v, name, where):
    v = as_float_array(v, name, where)
    check_trailing(v, (3,), name, where)
    return v


def _mat(R, name, where):
    R = as_float_array(R, name, where)
    check_trailing(R, (3, 3), name, where)
    return R


def _poly(x, coeffs):
    out = jnp.zeros_like(x) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


# Taylor coefficients in x = theta^2.
_A_SERIES = (1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800)  # sin t / t
_B_SERIES = (1 / 2, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800, -1 / 479001600)  # (1 - cos t) / t^2
_C_SERIES = (1 / 6, -1 / 120, 1 / 5040, -1 / 362880, 1 / 39916800, -1 / 6227020800)  # (t - sin t) / t^3
_D_SERIES = (1 / 12, 1 / 720, 1 / 30240, 1 / 1209600, 1 / 47900160)  # (1 - (t/2) cot(t/2)) / t^2


def _coefficients(theta2):
    """A = sin t/t, B = (1-cos t)/t^2, C = (t-sin t)/t^3, D = (1-(t/2)cot(t/2))/t^2.

    The "safe where": the closed-form branch sees theta^2 = 1 where the series is
    used, so neither branch produces inf/NaN in values or in reverse-mode gradients.
    """
    small = theta2 < _switch(theta2.dtype)
    t2 = jnp.where(small, 1.0, theta2)
    t = jnp.sqrt(t2)
    s = jnp.sin(t)
    half = 0.5 * t
    sh, ch = jnp.sin(half), jnp.cos(half)
    a_closed = s / t
    b_closed = 0.5 * (sh / half) ** 2  # 2 sin^2(t/2)/t^2 avoids the cancellation in 1 - cos t
    c_closed = (t - s) / (t2 * t)
    d_closed = (1.0 - half * ch / sh) / t2
    A = jnp.where(small, _poly(theta2, _A_SERIES), a_closed)
    B = jnp.where(small, _poly(theta2, _B_SERIES), b_closed)
    C = jnp.where(small, _poly(theta2, _C_SERIES), c_closed)
    D = jnp.where(small, _poly(theta2, _D_SERIES), d_closed)
    return A, B, C, D


def hat(v: ArrayLike) -> jax.Array:
    """Skew-symmetric matrix of a 3-vector: ``hat(v) @ p == cross(v, p)``.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.

    >>> float(hat(jnp.array([1.0, 2.0, 3.0]))[0, 1])
    -3.0
    """
    return _hat(_vec(v, "v", "so3.hat"))


def _hat(v):
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2)


def vee(W: ArrayLike) -> jax.Array:
    """Inverse of :func:`hat` (uses the skew part, so ``vee(hat(v)) == v`` exactly).

    Args:
      W: ``(..., 3, 3)``.
    Returns:
      ``(..., 3)``.

    >>> from toolkit import so3
    >>> so3.vee(so3.hat(jnp.array([1.0, 2.0, 3.0]))).tolist()
    [1.0, 2.0, 3.0]
    """
    W = _mat(W, "W", "so3.vee")
    return 0.5 * jnp.stack([W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]], -1)


def _outer(v):
    return v[..., :, None] * v[..., None, :]


def exp(v: ArrayLike) -> jax.Array:
    """Rotation matrix of a rotation vector (Rodrigues' formula).

    ``R = cos(t) I + (sin t / t) hat(v) + ((1 - cos t)/t^2) v v^T`` with series near t = 0.

    Args:
      v: ``(..., 3)`` rotation vectors (radians).
    Returns:
      ``(..., 3, 3)`` rotation matrices.

    >>> exp(jnp.array([0.0, 0.0, jnp.pi / 2])).round(6)[0].tolist()
    [0.0, -1.0, 0.0]
    """
    return _exp(_vec(v, "v", "so3.exp"))


@jax.jit
def _exp(v):
    theta2 = jnp.sum(v * v, axis=-1)
    A, B, _, _ = _coefficients(theta2)
    cos = 1.0 - theta2 * B
    eye = jnp.eye(3, dtype=v.dtype)
    return cos[..., None, None] * eye + A[..., None, None] * _hat(v) + B[..., None, None] * _outer(v)


@jax.jit
def _quat_from_matrix(R):
    """Shepperd's method: pick the largest of |w|,|x|,|y|,|z| so nothing divides by ~0.

    Returns a unit quaternion with w >= 0.
    """
    r00, r11, r22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    tr = r00 + r11 + r22
    d21, d02, d10 = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    s01, s02, s12 = R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1]
    # 4 q_k^2 for each component k; the largest is >= 1 for a rotation.
    b0, b1, b2, b3 = 1 + tr, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22
    k0 = (b0 >= b1) & (b0 >= b2) & (b0 >= b3)
    k1 = ~k0 & (b1 >= b2) & (b1 >= b3)
    k2 = ~k0 & ~k1 & (b2 >= b3)
    big = jnp.where(k0, b0, jnp.where(k1, b1, jnp.where(k2, b2, b3)))
    # Safe where: only the chosen branch's square root is used; its argument is >= 1.
    root = jnp.sqrt(jnp.where(big > 0, big, 1.0))
    inv = 0.5 / root  # = 1 / (4 q_k)
    half = 0.5 * root

    def pick(c0, c1, c2, c3):
        return jnp.where(k0, c0, jnp.where(k1, c1, jnp.where(k2, c2, c3)))

    # Row k of Shepperd's table: q_k = root/2, the others from off-diagonal sums/differences.
    w = pick(half, d21 * inv, d02 * inv, d10 * inv)
    x = pick(d21 * inv, half, s01 * inv, s02 * inv)
    y = pick(d02 * inv, s01 * inv, half, s12 * inv)
    z = pick(d10 * inv, s02 * inv, s12 * inv, half)
    q = jnp.stack([w, x, y, z], -1)
    q = q * lax.rsqrt(jnp.sum(q * q, -1, keepdims=True))
    return jnp.where(q[..., :1] < 0, -q, q)


@jax.jit
def _quat_log(q):
    """Rotation vector of a unit quaternion with w >= 0: 2 atan2(|u|, w) u / |u|."""
    w, u = q[..., 0], q[..., 1:]
    s2 = jnp.sum(u * u, -1)
    # Series of 2 atan(s/w)/s in s^2 for tiny s (|u| -> 0); atan2 elsewhere, which is
    # exact near pi where w -> 0 (no clamp, no lost radial derivative).
    small = s2 < _switch(q.dtype) * 1e-2
    s = jnp.sqrt(jnp.where(small, 1.0, s2))
    # The unused branch must stay finite too, or its NaN leaks into reverse-mode
    # gradients through the where: away from the series w can be 0 (exactly pi).
    w_safe = jnp.where(small & (w != 0), w, 1.0)
    t2 = s2 / (w_safe * w_safe)
    series = (2.0 / w_safe) * _poly(t2, (1.0, -1 / 3, 1 / 5, -1 / 7, 1 / 9))
    scale = jnp.where(small, series, 2.0 * jnp.arctan2(s, w) / s)
    return scale[..., None] * u


def log(R: ArrayLike, *, check: bool = False, atol: float | None = None) -> jax.Array:
    """Rotation vector of a rotation matrix, angle in [0, pi].

    At exactly pi the axis sign is arbitrary (both are correct). A matrix that is not a
    rotation gives the vector of the nearest quaternion Shepperd's method builds, which
    is not the nearest rotation: pass such input through :func:`project` first, or use
    ``check=True`` to have concrete input verified.

    Args:
      R: ``(..., 3, 3)`` rotation matrices.
      check: verify ``R^T R = I`` and ``det R = 1`` within ``atol`` (concrete input only;
        ignored under ``jit``) and raise ValueError otherwise.
      atol: tolerance for ``check``; default ``1e-6`` (float64) / ``1e-4`` (float32).
    Returns:
      ``(..., 3)`` rotation vectors.
    Raises:
      ValueError: wrong shape, or ``check=True`` and R is not a rotation.

    >>> np.asarray(log(exp(jnp.array([0.1, -0.2, 0.3])))).round(6)
    array([ 0.1, -0.2,  0.3])
    """
    R = _mat(R, "R", "so3.log")
    if check and is_concrete(R):
        import numpy as np

        a = np.asarray(R, dtype=np.float64)
        tol = atol if atol is not None else (1e-6 if R.dtype == jnp.float64 else 1e-4)
        err = np.abs(np.swapaxes(a, -1, -2) @ a - np.eye(3)).max(initial=0.0)
        det = np.linalg.det(a) if a.size else np.ones(())
        if not np.all(np.isfinite(a)) or err > tol or np.any(np.abs(det - 1) > tol):
            raise ValueError(f"so3.log: argument 'R' is not a rotation matrix (max |R^T R - I| = {err:.3g}, "
                             f"tolerance {tol:g}); use so3.project(R) to get the nearest rotation")
    return _log(R)


@jax.jit
def _log(R):
    return _quat_log(_quat_from_matrix(R))


def to_quaternion(R: ArrayLike) -> jax.Array:
    """Unit quaternion ``wxyz`` with ``w >= 0`` of a rotation matrix.

    Args:
      R: ``(..., 3, 3)``.
    Returns:
      ``(..., 4)``.

    >>> from toolkit import so3
    >>> [round(float(c), 6) for c in so3.to_quaternion(so3.exp(jnp.array([0.0, 0.0, jnp.pi / 2])))]  # (w, x, y, z)
    [0.707107, 0.0, 0.0, 0.707107]
    """
    return _quat_from_matrix(_mat(R, "R", "so3.to_quaternion"))


def from_quaternion(q: ArrayLike) -> jax.Array:
    """Rotation matrix of a quaternion ``wxyz`` (normalised first; q and -q agree).

    Args:
      q: ``(..., 4)``, nonzero.
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> so3.from_quaternion(jnp.array([0.0, 0.0, 1.0, 0.0])).round(6).tolist()  # w x y z: a half turn about y
    [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]
    """
    q = as_float_array(q, "q", "so3.from_quaternion")
    check_trailing(q, (4,), "q", "so3.from_quaternion")
    return _from_quaternion(q)


@jax.jit
def _from_quaternion(q):
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    # The homogeneous diagonal (w^2 + x^2 - y^2 - z^2, not 1 - 2(y^2 + z^2)) from squares
    # rounded once each (the barrier keeps XLA from fusing them into FMAs): exact zeros
    # where components are equal in size, as in a quarter turn, whose q has |w| = |z|.
    ww, xx, yy, zz = lax.optimization_barrier((w * w, x * x, y * y, z * z))
    return jnp.stack(
        [
            jnp.stack([(ww - yy) + (xx - zz), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            jnp.stack([2 * (x * y + w * z), (ww - xx) + (yy - zz), 2 * (y * z - w * x)], -1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), (ww - xx) + (zz - yy)], -1),
        ],
        -2,
    )
