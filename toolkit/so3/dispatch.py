"""How :class:`so3.Rotation` and :class:`so3.Slerp` treat numpy versus JAX input.

scipy's ``Rotation`` takes lists and numpy arrays and returns numpy arrays in float64.
The drop-in keeps that contract exactly: an object built from host data stores a numpy
array, and each method runs its jitted kernel with float64 enabled for the call only
(:func:`toolkit._checks.scoped_x64`, as the GaussianMixture estimator does) and hands
back writeable numpy arrays, numpy scalars where scipy gives scalars. An object built
from a ``jax.Array`` (or a tracer) stores it as is: JAX arrays out, the input's float
dtype kept, and everything works under ``jit``, ``vmap`` and ``grad``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete, scoped_x64


def is_host(x: Any) -> bool:
    """True for data that is not a JAX array (numpy arrays, lists, scalars)."""
    return not isinstance(x, jax.Array)


def coerce(x: Any, name: str, *, host: bool | None = None, dtype=None):
    """``x`` as a float array: numpy float64 in host mode, else a JAX float array.

    ``host=None`` picks the mode from ``x``; ``dtype`` (JAX mode) overrides the float dtype.
    """
    host = is_host(x) if host is None else host
    if host:
        if isinstance(x, jax.Array) and is_concrete(x):
            x = np.asarray(x)
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"argument {name!r} must be an array of numbers, got {type(x).__name__}") from exc
        _check_real(a.dtype, name)
        return a.astype(np.float64, copy=False)
    a = jnp.asarray(x)
    _check_real(a.dtype, name)
    target = dtype if dtype is not None else (a.dtype if jnp.issubdtype(a.dtype, jnp.floating)
                                              else jnp.result_type(float))
    return a.astype(target) if a.dtype != target else a


def _check_real(dt, name):
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise TypeError(f"argument {name!r} must be real, got dtype {dt}")
    if not (jnp.issubdtype(dt, jnp.number) or dt == np.bool_):
        raise TypeError(f"argument {name!r} must be numeric, got dtype {dt}")


def run(host: bool, kernel, *args, **static):
    """Call a jitted ``kernel``: in host mode with float64 on, results as writeable numpy."""
    if not host:
        return kernel(*args, **static)
    with scoped_x64():
        res = kernel(*args, **static)
        return jax.tree_util.tree_map(np.array, res)


def scalar_out(x):
    """scipy's scalars: a 0-d numpy result becomes a numpy scalar; JAX arrays stay."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    return x
