"""Optimisation on SO(3) with optax: ``rplus``, ``rminus``, ``riemannian``, ``apply_updates``.

A rotation ``R`` moves by right perturbations ``R exp(delta^)``; a function of R then has,
at ``delta = 0``, the tangent gradient ``g = vee(M - M^T)`` with ``M = R^T G`` and ``G``
the ordinary (Euclidean) ``jax.grad`` with respect to the matrix entries. So:

* :func:`riemannian` wraps any ``optax.GradientTransformation``: it maps the gradients
  of rotation leaves to their tangent gradients ``(..., 3)``, runs the wrapped optimiser
  on those (its state -- Adam's moments, say -- lives in the tangent space) and hands
  every other leaf to it unchanged;
* :func:`apply_updates` retracts: ``R <- R exp(u^)`` for rotation leaves, re-orthonormalised
  by one Newton step (so rotations stay rotations to round-off over any number of
  steps), ``optax.apply_updates`` for the rest.

``so3.Rotation`` objects in the parameters are rotation leaves too: their gradient (a
Rotation holding the Euclidean gradient of its quaternions ``g``) maps to the tangent
gradient ``vec(conj(q) g) / 2``, and they retract as ``q <- normalize(q exp(u))``.

Which leaves are rotations: by default every ``Rotation`` and every ``(..., 3, 3)`` leaf.
Pass ``is_rotation`` (a predicate on leaves, or a pytree of bools shaped like the
parameters) when a model also holds 3x3 matrices that are not rotations.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .maps import _exp, _log, _mat, _vec, vee
from .quaternions import _conj, _from_rotvec, _normalize, _qmul
from .rotation import Rotation


def rplus(R: ArrayLike, delta: ArrayLike) -> jax.Array:
    """``R exp(delta^)``: rotations ``(..., 3, 3)`` moved by tangent vectors ``(..., 3)``.

    >>> from toolkit import so3
    >>> R = so3.exp(jnp.array([0.0, 0.0, 0.5]))
    >>> so3.log(so3.rplus(R, jnp.array([0.0, 0.0, 0.25]))).round(6).tolist()
    [0.0, 0.0, 0.75]
    """
    return _rplus(_mat(R, "R", "so3.rplus"), _vec(delta, "delta", "so3.rplus"))


def rminus(Ra: ArrayLike, Rb: ArrayLike) -> jax.Array:
    """``log(Rb^T Ra)``: the tangent vector ``(..., 3)`` with ``rplus(Rb, rminus(Ra, Rb)) = Ra``.

    >>> from toolkit import so3
    >>> Ra, Rb = so3.exp(jnp.array([0.1, 0.2, 0.3])), so3.exp(jnp.array([0.0, 0.2, 0.3]))
    >>> bool(jnp.allclose(so3.rplus(Rb, so3.rminus(Ra, Rb)), Ra))
    True
    """
    Ra, Rb = _mat(Ra, "Ra", "so3.rminus"), _mat(Rb, "Rb", "so3.rminus")
    return _log(jnp.swapaxes(Rb, -1, -2) @ Ra)


@jax.jit
def _rplus(R, delta):
    return _orthonormal(R @ _exp(delta))


def _orthonormal(R):
    """One Newton step toward the nearest rotation, ``R (3 I - R^T R) / 2``: round-off
    that products of rotations accumulate is removed, so it never grows."""
    eye = jnp.eye(3, dtype=R.dtype)
    return 0.5 * R @ (3.0 * eye - jnp.swapaxes(R, -1, -2) @ R)


def _tangent_gradient(R, G):
    """``vee(M - M^T)``, ``M = R^T G``: the gradient with respect to right perturbations."""
    M = jnp.swapaxes(R, -1, -2) @ G
    return 2.0 * vee(M)  # vee(M) = vee(M - M^T) / 2


def _quaternion_tangent_gradient(q, g):
    """The same for a unit quaternion q (scalar-last) with Euclidean gradient g: the right
    perturbation ``q (delta/2, 1)`` moves q by ``q (delta/2, 0)``, so the tangent gradient
    is ``vec(conj(q) g) / 2``."""
    return 0.5 * _qmul(_conj(q), g)[..., :3]


def _default_is_rotation(leaf) -> bool:
    return isinstance(leaf, Rotation) or (hasattr(leaf, "shape") and tuple(leaf.shape[-2:]) == (3, 3))


def _is_rotation_node(x) -> bool:
    """``Rotation`` objects are leaves here (their quaternions are not updated as arrays)."""
    return isinstance(x, Rotation)


def _tree_map(fn, tree, *rest):
    return jax.tree_util.tree_map(fn, tree, *rest, is_leaf=_is_rotation_node)


def _mask(params, is_rotation):
    """A pytree of Python bools, shaped like ``params``: which leaves are rotations."""
    if is_rotation is None:
        is_rotation = _default_is_rotation
    if callable(is_rotation):
        return _tree_map(lambda leaf: bool(is_rotation(leaf)), params)
    return is_rotation


def _tangent_params(params, mask):
    """``params`` with rotation leaves as zero tangent vectors ``(..., 3)``: the shapes
    the wrapped optimiser sees."""
    def one(p, m):
        if not m:
            return p
        if isinstance(p, Rotation):
            return jnp.zeros(p.shape + (3,), p._quat.dtype)
        return jnp.zeros(p.shape[:-2] + (3,), p.dtype)

    return _tree_map(one, params, mask)


def _to_tangent(tree, params, mask):
    """Rotation leaves of ``tree`` (shaped as the matrices) to tangent vectors ``(..., 3)``."""
    def one(g, p, m):
        if not m:
            return g
        if isinstance(p, Rotation):
            return _quaternion_tangent_gradient(jnp.asarray(p._quat), jnp.asarray(g._quat))
        return _tangent_gradient(p, g)

    return _tree_map(one, tree, params, mask)


class RiemannianState(NamedTuple):
    """The wrapped optimiser's state, kept for tangent vectors of the rotation leaves."""

    inner: Any


def riemannian(optimizer: Any, *, is_rotation: Callable | Any | None = None) -> Any:
    """Wrap an ``optax.GradientTransformation`` so rotation leaves are optimised on SO(3).

    Args:
      optimizer: any ``optax.GradientTransformation`` (``optax.adam(1e-2)``, a chain, ...).
      is_rotation: which parameter leaves are rotations: a predicate on leaves, or a
        pytree of bools shaped like the parameters; default every ``Rotation`` and every
        ``(..., 3, 3)`` leaf.

    Returns:
      An ``optax.GradientTransformation``. ``update(grads, state, params)`` takes ordinary
      ``jax.grad`` gradients and requires ``params``; its updates hold tangent vectors
      ``(..., 3)`` for rotation leaves: apply them with :func:`apply_updates`.

    Example:
      >>> import optax
      >>> from toolkit import so3
      >>> target = so3.exp(jnp.array([0.3, -0.2, 0.1]))
      >>> loss = lambda p: jnp.sum((p["R"] - target) ** 2) + jnp.sum((p["t"] - 1.0) ** 2)
      >>> opt = so3.riemannian(optax.adam(0.05))
      >>> params = {"R": jnp.eye(3), "t": jnp.zeros(2)}
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = so3.apply_updates(params, updates)
      >>> float(so3.distance(params["R"], target)) < 1e-3, params["t"].round(3).tolist()
      (True, [1.0, 1.0])
    """
    import optax

    def init(params):
        return RiemannianState(optimizer.init(_tangent_params(params, _mask(params, is_rotation))))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("so3.riemannian: update needs params (the rotations the gradients are taken at)")
        mask = _mask(params, is_rotation)
        updates, inner = optimizer.update(_to_tangent(grads, params, mask), state.inner,
                                          _tangent_params(params, mask))
        return updates, RiemannianState(inner)

    return optax.GradientTransformation(init, update)


def apply_updates(params: Any, updates: Any) -> Any:
    """Apply :func:`riemannian`'s updates: rotation leaves (those whose update is a
    tangent vector ``(..., 3)`` for a ``(..., 3, 3)`` parameter) are retracted with
    :func:`rplus`; every other leaf is updated as ``optax.apply_updates`` does
    (``p + u`` in the parameter's dtype).

    See :func:`riemannian` for an example.
    """
    def one(p, u):
        if u is None:
            return p
        if isinstance(p, Rotation):
            q = jnp.asarray(p._quat)
            return Rotation._wrap(_normalize(_qmul(q, _from_rotvec(jnp.asarray(u, q.dtype)))))
        if getattr(p, "shape", ())[-2:] == (3, 3) and getattr(u, "shape", ())[-1:] == (3,) \
                and p.shape[:-2] == u.shape[:-1]:
            return _rplus(p, jnp.asarray(u, p.dtype))
        return jnp.asarray(p + u).astype(jnp.result_type(p))

    return jax.tree_util.tree_map(one, params, updates, is_leaf=lambda x: x is None or _is_rotation_node(x))
