"""``so3.Slerp``: spherical linear interpolation of rotations, scipy's API, jit-able."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import quaternions as Q
from .._checks import is_concrete
from .dispatch import coerce, run
from .rotation import Rotation


@jax.jit
def _interpolate(times, timedelta, q0, rotvecs, t):
    """Rotations at times ``t (M,)``: ``q0[i] exp(alpha rotvec[i])`` on key interval i;
    NaN outside ``[times[0], times[-1]]``."""
    i = jnp.searchsorted(times, t) - 1
    i = jnp.where(t == times[0], 0, i)
    outside = (i < 0) | (i > q0.shape[0] - 1)
    i = jnp.clip(i, 0, q0.shape[0] - 1)
    alpha = jnp.where(outside, jnp.nan, (t - times[i]) / timedelta[i])
    return Q._normalize(Q._slerp(q0[i], rotvecs[i], alpha))


@jax.jit
def _key_steps(q):
    """The rotation vectors from each key rotation to the next."""
    return Q._as_rotvec(Q._qmul(Q._conj(q[:-1]), q[1:]))


@jax.tree_util.register_pytree_node_class
class Slerp:
    """Spherical linear interpolation: constant angular velocity between key rotations.

    Args:
      times: ``(N,)`` strictly increasing key times.
      rotations: a :class:`Rotation` of shape ``(N,)``, N >= 2.

    Calling it with times ``(M,)`` (or a scalar) in ``[times[0], times[-1]]`` gives a
    Rotation of shape ``(M,)`` (or a single one). A pytree: JAX-built interpolators work
    inside ``jit`` (times out of range then give NaN rotations, as scipy's do for JAX).

    >>> from toolkit.so3 import Rotation, Slerp
    >>> s = Slerp([0, 1], Rotation.from_euler("z", [[0], [90]], degrees=True))
    >>> s(0.5).as_euler("xyz", degrees=True).round(9).tolist()
    [0.0, 0.0, 45.0]
    """

    def __init__(self, times: Any, rotations: Rotation):
        if not isinstance(rotations, Rotation):
            raise TypeError("`rotations` must be a `Rotation` instance.")
        if rotations.single or len(rotations) <= 1:
            raise ValueError("`rotations` must be a sequence of at least 2 rotations.")
        q = rotations._quat
        if q.ndim > 2:
            raise ValueError("Rotations with more than 1 leading dimension are not supported.")
        host = rotations._host
        t = coerce(times, "times", host=host, dtype=None if host else q.dtype)
        if t.ndim != 1:
            raise ValueError(f"Expected times to be specified in a 1 dimensional array, got {t.ndim} dimensions.")
        if t.shape[0] != len(rotations):
            raise ValueError("Expected number of rotations to be equal to number of timestamps given, got "
                             f"{len(rotations)} rotations and {t.shape[0]} timestamps.")
        dt = np.diff(t) if host else jnp.diff(t)
        if is_concrete(dt):
            if np.any(np.asarray(dt) <= 0):
                raise ValueError("Times must be in strictly increasing order.")
        else:
            dt = jnp.where(jnp.any(dt <= 0), jnp.nan, dt)
        self.times = t
        self.timedelta = dt
        self.rotations = rotations[:-1]
        self.rotvecs = run(host, _key_steps, q)

    def tree_flatten(self):
        return (self.times, self.timedelta, self.rotations, self.rotvecs), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.times, obj.timedelta, obj.rotations, obj.rotvecs = children
        return obj

    def __call__(self, times: Any) -> Rotation:
        host = self.rotations._host
        t = coerce(times, "times", host=host, dtype=None if host else self.times.dtype)
        if t.ndim > 1:
            raise ValueError("`times` must be at most 1-dimensional.")
        single = t.ndim == 0
        t = t.reshape(1) if single else t
        if is_concrete(t) and is_concrete(self.times):
            tv, kv = np.asarray(t), np.asarray(self.times)
            if np.any((tv < kv[0]) | (tv > kv[-1])):
                raise ValueError(f"Interpolation times must be within the range [{kv[0]}, {kv[-1]}], both inclusive.")
        q = run(host, _interpolate, self.times, self.timedelta, self.rotations._quat, self.rotvecs, t)
        return Rotation._wrap(q[0] if single else q)
