"""Rotations in 3-D: axis-angle exp/log, Jacobians, Kabsch, robust fitting, averaging.

Conventions: rotation vectors ``v (..., 3)`` (axis times angle, radians), matrices
``R (..., 3, 3)``, quaternions ``q (..., 4)`` scalar-first ``wxyz``. Points are
``(..., N, 3)`` and rotate as ``p' = R p``. Every function broadcasts over leading
batch axes and works under ``jit``, ``vmap`` and ``grad``.

Precision: ``log(exp(v))`` and ``exp(log(R))`` round trips are exact to a few ulp in
every regime (angles 0, 1e-12, ..., pi - 1e-10, pi): about 1e-15 in float64 and
5e-7 in float32. Near 0 the trigonometric coefficients switch to Taylor series at a
point chosen per dtype (``_TAYLOR_SWITCH``); near pi the angle comes from
``atan2`` of a quaternion built by Shepperd's method, so nothing is clamped and
gradients stay finite and correct everywhere, including v = 0.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._checks import as_float_array, check_choice, check_finite, check_trailing, is_concrete

__all__ = [
    "hat",
    "vee",
    "exp",
    "log",
    "exp_derivative",
    "right_jacobian",
    "left_jacobian",
    "right_jacobian_inv",
    "left_jacobian_inv",
    "compose",
    "inverse",
    "apply",
    "to_quaternion",
    "from_quaternion",
    "distance",
    "project",
    "kabsch",
    "fit",
    "FitInfo",
    "mean",
]

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


def hat(v):
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


def vee(W):
    """Inverse of :func:`hat` (uses the skew part, so ``vee(hat(v)) == v`` exactly).

    Args:
      W: ``(..., 3, 3)``.
    Returns:
      ``(..., 3)``.
    """
    W = _mat(W, "W", "so3.vee")
    return 0.5 * jnp.stack([W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]], -1)


def _outer(v):
    return v[..., :, None] * v[..., None, :]


def exp(v):
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
    w_safe = jnp.where(small, jnp.where(w == 0, 1.0, w), w)
    t2 = s2 / (w_safe * w_safe)
    series = (2.0 / w_safe) * _poly(t2, (1.0, -1 / 3, 1 / 5, -1 / 7, 1 / 9))
    scale = jnp.where(small, series, 2.0 * jnp.arctan2(s, w) / s)
    return scale[..., None] * u


def log(R, *, check: bool = False, atol: float | None = None):
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


def to_quaternion(R):
    """Unit quaternion ``wxyz`` with ``w >= 0`` of a rotation matrix.

    Args:
      R: ``(..., 3, 3)``.
    Returns:
      ``(..., 4)``.
    """
    return _quat_from_matrix(_mat(R, "R", "so3.to_quaternion"))


def from_quaternion(q):
    """Rotation matrix of a quaternion ``wxyz`` (normalised first; q and -q agree).

    Args:
      q: ``(..., 4)``, nonzero.
    Returns:
      ``(..., 3, 3)``.
    """
    q = as_float_array(q, "q", "so3.from_quaternion")
    check_trailing(q, (4,), "q", "so3.from_quaternion")
    return _from_quaternion(q)


@jax.jit
def _from_quaternion(q):
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def left_jacobian(v):
    """Left Jacobian ``J_l(v) = A I + B hat(v) + C v v^T``: ``exp(v + d) ~ exp(J_l d) exp(v)``.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.
    """
    v = _vec(v, "v", "so3.left_jacobian")
    return _jac(v, +1.0)


def right_jacobian(v):
    """Right Jacobian ``J_r(v) = J_l(-v)``: ``exp(v + d) ~ exp(v) exp(J_r d)``.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.
    """
    v = _vec(v, "v", "so3.right_jacobian")
    return _jac(v, -1.0)


@functools.partial(jax.jit, static_argnums=1)
def _jac(v, sign):
    theta2 = jnp.sum(v * v, -1)
    A, B, C, _ = _coefficients(theta2)
    eye = jnp.eye(3, dtype=v.dtype)
    return A[..., None, None] * eye + sign * B[..., None, None] * _hat(v) + C[..., None, None] * _outer(v)


@functools.partial(jax.jit, static_argnums=1)
def _jac_inv(v, sign):
    # J^{-1} = I -/+ hat(v)/2 + D hat(v)^2, hat(v)^2 = v v^T - t^2 I.
    theta2 = jnp.sum(v * v, -1)
    D = _coefficients(theta2)[3]
    eye = jnp.eye(3, dtype=v.dtype)
    return ((1.0 - D * theta2)[..., None, None] * eye - sign * 0.5 * hat(v)
            + D[..., None, None] * _outer(v))


def left_jacobian_inv(v):
    """Inverse of :func:`left_jacobian` in closed form (valid for |v| < 2 pi).

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.
    """
    return _jac_inv(_vec(v, "v", "so3.left_jacobian_inv"), +1.0)


def right_jacobian_inv(v):
    """Inverse of :func:`right_jacobian` in closed form (valid for |v| < 2 pi).

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.
    """
    return _jac_inv(_vec(v, "v", "so3.right_jacobian_inv"), -1.0)


def exp_derivative(v):
    """Derivative of :func:`exp`: ``out[..., i, :, :] = dR / dv_i``.

    Gallego & Yezzi (2015), eq. (9): ``dR/dv_i = (v_i hat(v) + hat(v x (I - R) e_i)) R / t^2``.
    Substituting ``I - R = -(A hat(v) + B hat(v)^2)`` removes the 1/t^2 cancellation and
    gives ``dR/dv_i = hat(J_l(v) e_i) R`` with the series coefficients of
    :func:`left_jacobian`, accurate to ulp for every angle including 0.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3, 3)``.
    """
    return _exp_derivative(_vec(v, "v", "so3.exp_derivative"))


@jax.jit
def _exp_derivative(v):
    cols = jnp.swapaxes(_jac(v, +1.0), -1, -2)  # row i = J_l e_i
    return _hat(cols) @ _exp(v)[..., None, :, :]


def compose(R1, R2):
    """``R1 @ R2`` (apply R2 first). Args ``(..., 3, 3)`` each, broadcast. Returns ``(..., 3, 3)``."""
    return _mat(R1, "R1", "so3.compose") @ _mat(R2, "R2", "so3.compose")


def inverse(R):
    """Inverse rotation ``R^T``. Args: ``(..., 3, 3)``. Returns ``(..., 3, 3)``."""
    return jnp.swapaxes(_mat(R, "R", "so3.inverse"), -1, -2)


def apply(R, p):
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


def distance(R1, R2):
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


def project(M):
    """Nearest rotation matrix (Frobenius norm) to any 3x3 matrix, via SVD.

    Args:
      M: ``(..., 3, 3)``.
    Returns:
      ``(..., 3, 3)`` proper rotations (det = +1; reflections are fixed).
    """
    return _svd_rotation(_mat(M, "M", "so3.project"))


def _points_pair(P, Q, where):
    P = as_float_array(P, "P", where)
    Q = as_float_array(Q, "Q", where)
    check_trailing(P, (None, 3), "P", where)
    check_trailing(Q, (None, 3), "Q", where)
    if P.shape[-2] != Q.shape[-2]:
        raise ValueError(f"{where}: P and Q must hold the same number of points, got P {tuple(P.shape)} "
                         f"and Q {tuple(Q.shape)}")
    dt = jnp.result_type(P.dtype, Q.dtype)
    return P.astype(dt), Q.astype(dt)


def _weights(weights, P, where):
    if weights is None:
        return jnp.ones(P.shape[:-1], P.dtype)
    w = as_float_array(weights, "weights", where, dtype=P.dtype)
    if w.shape[-1:] != P.shape[-2:-1]:
        raise ValueError(f"{where}: weights must have shape (..., {P.shape[-2]}) to match P {tuple(P.shape)}, "
                         f"got {tuple(w.shape)}")
    return w


def kabsch(P, Q, weights=None):
    """Rotation R minimising ``sum_n w_n |Q_n - R P_n|^2`` (no translation; centre first if needed).

    Reflections are corrected (det R = +1), so planar point sets, whose cross-covariance
    has rank 2, still give the exact rotation.

    Args:
      P, Q: ``(..., N, 3)`` corresponding points.
      weights: ``(..., N)`` non-negative, default ones.
    Returns:
      ``(..., 3, 3)``.
    Raises:
      ValueError: shapes do not end in ``(N, 3)`` or N differs between P and Q.

    >>> R = exp(jnp.array([0.1, 0.2, 0.3])); P = jnp.eye(3)
    >>> bool(jnp.allclose(kabsch(P, apply(R, P)), R, atol=1e-6))
    True
    """
    P, Q = _points_pair(P, Q, "so3.kabsch")
    return _kabsch(P, Q, _weights(weights, P, "so3.kabsch"))


@jax.jit
def _kabsch(P, Q, w):
    H = jnp.einsum("...n,...ni,...nj->...ij", w, Q, P)  # sum w q p^T; R = argmax tr(R^T H)
    return _svd_rotation(H)


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


def _fit_single(P, Q, w, v0, loss, scale, max_iter, tol):
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
    hist = jnp.full((max_iter + 1,), cost0, dt)
    init = (v0, jnp.asarray(1e-3, dt), cost0, jnp.asarray(0), jnp.asarray(False), jnp.asarray(False), hist)
    v, _, cost, it, _, conv, hist = lax.while_loop(cond, step, init)
    # Entries after the last iteration repeat the final cost (no NaN padding).
    idx = jnp.arange(max_iter + 1)
    hist = jnp.where(idx > it, cost, hist)
    finite = jnp.all(jnp.isfinite(P)) & jnp.all(jnp.isfinite(Q)) & jnp.isfinite(cost)
    return v, FitInfo(cost=cost, history=hist, n_iter=it, converged=conv & finite)


def fit(P, Q, *, init=None, loss: str = "l2", scale: float = 1.0, weights=None, max_iter: int = 50,
        tol: float = 1e-12):
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

    >>> P = jnp.eye(3); v, info = fit(P, apply(exp(jnp.array([0.3, -0.2, 0.1])), P))
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
    w = _weights(weights, P, where)
    v0 = None if init is None else _vec(init, "init", where).astype(P.dtype)
    return _fit(P, Q, w, v0, jnp.asarray(scale, P.dtype), jnp.asarray(tol, P.dtype), loss, max_iter)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _fit(P, Q, w, v0, scale, tol, loss, max_iter):
    batch = jnp.broadcast_shapes(P.shape[:-2], Q.shape[:-2], w.shape[:-1],
                                 () if v0 is None else v0.shape[:-1])
    n = P.shape[-2]
    P = jnp.broadcast_to(P, batch + (n, 3))
    Q = jnp.broadcast_to(Q, batch + (n, 3))
    w = jnp.broadcast_to(w, batch + (n,))
    v0 = _log(_kabsch(P, Q, w)) if v0 is None else jnp.broadcast_to(v0, batch + (3,))
    fn = lambda P_, Q_, w_, v_: _fit_single(P_, Q_, w_, v_, loss, scale, max_iter, tol)  # noqa: E731
    for _ in batch:
        fn = jax.vmap(fn)
    return fn(P, Q, w, v0)


_MEANS = ("chordal", "geodesic")


def mean(Rs, weights=None, *, method: str = "chordal", max_iter: int = 50, tol: float | None = None):
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
    """
    where = "so3.mean"
    Rs = as_float_array(Rs, "Rs", where)
    check_trailing(Rs, (None, 3, 3), "Rs", where)
    check_choice(method, _MEANS, "method", where)
    m = Rs.shape[-3]
    if weights is None:
        w = jnp.ones(Rs.shape[:-2], Rs.dtype)
    else:
        w = as_float_array(weights, "weights", where, dtype=Rs.dtype)
        if w.shape[-1:] != (m,):
            raise ValueError(f"{where}: weights must have shape (..., {m}) to match Rs {tuple(Rs.shape)}, "
                             f"got {tuple(w.shape)}")
    tol = tol if tol is not None else (1e-12 if Rs.dtype == jnp.float64 else 1e-6)
    return _mean(Rs, w, jnp.asarray(tol, Rs.dtype), method, max_iter)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _mean(Rs, w, tol, method, max_iter):
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
