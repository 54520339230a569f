"""Jacobians of the exponential map: left/right Jacobians, their inverses, dR/dv."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .maps import _coefficients, _exp, _hat, _outer, _vec, hat


def left_jacobian(v: ArrayLike) -> jax.Array:
    """Left Jacobian ``J_l(v) = A I + B hat(v) + C v v^T``: ``exp(v + d) ~ exp(J_l d) exp(v)``.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> v = jnp.array([0.1, -0.2, 0.3])
    >>> bool(jnp.allclose(so3.left_jacobian(v), so3.right_jacobian(-v)))
    True
    """
    v = _vec(v, "v", "so3.left_jacobian")
    return _jac(v, +1.0)


def right_jacobian(v: ArrayLike) -> jax.Array:
    """Right Jacobian ``J_r(v) = J_l(-v)``: ``exp(v + d) ~ exp(v) exp(J_r d)``.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> v, d = jnp.array([0.1, -0.2, 0.3]), jnp.array([1e-7, 0.0, 0.0])
    >>> lhs = so3.log(so3.exp(v + d)); rhs = so3.log(so3.exp(v) @ so3.exp(so3.right_jacobian(v) @ d))
    >>> bool(jnp.allclose(lhs, rhs, atol=1e-13))
    True
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


def left_jacobian_inv(v: ArrayLike) -> jax.Array:
    """Inverse of :func:`left_jacobian` in closed form (valid for |v| < 2 pi).

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> v = jnp.array([0.1, -0.2, 3.0])
    >>> bool(jnp.allclose(so3.left_jacobian_inv(v) @ so3.left_jacobian(v), jnp.eye(3)))
    True
    """
    return _jac_inv(_vec(v, "v", "so3.left_jacobian_inv"), +1.0)


def right_jacobian_inv(v: ArrayLike) -> jax.Array:
    """Inverse of :func:`right_jacobian` in closed form (valid for |v| < 2 pi).

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3)``.

    >>> from toolkit import so3
    >>> v = jnp.array([0.1, -0.2, 3.0])
    >>> bool(jnp.allclose(so3.right_jacobian_inv(v) @ so3.right_jacobian(v), jnp.eye(3)))
    True
    """
    return _jac_inv(_vec(v, "v", "so3.right_jacobian_inv"), -1.0)


def exp_derivative(v: ArrayLike) -> jax.Array:
    """Derivative of :func:`exp`: ``out[..., i, :, :] = dR / dv_i``.

    Gallego & Yezzi (2015), eq. (9): ``dR/dv_i = (v_i hat(v) + hat(v x (I - R) e_i)) R / t^2``.
    Substituting ``I - R = -(A hat(v) + B hat(v)^2)`` removes the 1/t^2 cancellation and
    gives ``dR/dv_i = hat(J_l(v) e_i) R`` with the series coefficients of
    :func:`left_jacobian`, accurate to ulp for every angle including 0.

    Args:
      v: ``(..., 3)``.
    Returns:
      ``(..., 3, 3, 3)``.

    >>> from toolkit import so3
    >>> v = jnp.array([0.1, -0.2, 0.3])
    >>> bool(jnp.allclose(so3.exp_derivative(v), jnp.moveaxis(jax.jacfwd(so3.exp)(v), -1, 0)))  # [i] = dR/dv_i
    True
    """
    return _exp_derivative(_vec(v, "v", "so3.exp_derivative"))


@jax.jit
def _exp_derivative(v):
    cols = jnp.swapaxes(_jac(v, +1.0), -1, -2)  # row i = J_l e_i
    return _hat(cols) @ _exp(v)[..., None, :, :]
