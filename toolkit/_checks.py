"""Input validation shared by all modules.

Shape and dtype problems are found at trace time from static shapes and raise
ValueError / TypeError naming the function, the argument, what was expected and
what arrived. Value checks (NaN/inf) only run on concrete arrays; under ``jit`` the
numerical code reports such problems in its results instead.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_float_array", "check_trailing", "is_concrete", "check_finite", "check_choice", "result_dtype",
           "check_positive_int", "check_real", "check_weights", "is_readable", "as_scalar", "scoped_x64"]


def result_dtype(*dtypes) -> jnp.dtype:
    """The floating dtype computations run in: float inputs keep theirs, ints promote."""
    dt = jnp.result_type(*dtypes)
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise TypeError("complex inputs are not supported")
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    return dt


def as_float_array(x: Any, name: str, where: str, dtype=None) -> jax.Array:
    """Convert ``x`` to a floating JAX array (ints promote to the default float dtype)."""
    if isinstance(x, jax.Array) and x.dtype in (jnp.float32, jnp.float64) and (dtype is None or x.dtype == dtype):
        return x  # the common case, without the generic checks' Python overhead
    if not isinstance(x, jax.Array):
        # converted on the host: jnp's astype would compile once per new shape
        return jax.device_put(_host_float_array(x, name, where, dtype))
    target = _float_target(x.dtype, name, where, dtype)
    return x.astype(target) if x.dtype != target else x


def _float_target(dt, name: str, where: str, dtype=None) -> np.dtype:
    """The floating dtype an array of dtype ``dt`` converts to (``dtype`` if given), after
    refusing complex and non-numeric dtypes."""
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise TypeError(f"{where}: argument {name!r} must be real, got dtype {dt}")
    if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer) or dt == np.bool_):
        raise TypeError(f"{where}: argument {name!r} must be numeric, got dtype {dt}")
    return np.dtype(dtype if dtype is not None else result_dtype(jax.dtypes.canonicalize_dtype(dt)))


def _host_float_array(x: Any, name: str, where: str, dtype=None) -> np.ndarray:
    """:func:`as_float_array`'s checks and conversion on a host (numpy) array."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: argument {name!r} must be an array of numbers, got {type(x).__name__}") from exc
    return arr.astype(_float_target(arr.dtype, name, where, dtype), copy=False)


def check_trailing(arr: jax.Array, tail: Sequence[int | None], name: str, where: str) -> None:
    """Require ``arr.shape`` to end with ``tail`` (None matches any size)."""
    tail = tuple(tail)
    want = "(..., " + ", ".join("N" if t is None else str(t) for t in tail) + ")"
    if arr.ndim < len(tail) or any(t is not None and s != t for s, t in zip(arr.shape[arr.ndim - len(tail):], tail)):
        raise ValueError(f"{where}: argument {name!r} must have shape {want}, got {tuple(arr.shape)}")


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds actual values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def is_readable(x: Any) -> bool:
    """True when this process can read ``x``'s values: concrete (not traced) and not
    spread over devices of other processes (a multi-process ``jax.Array``)."""
    return is_concrete(x) and getattr(x, "is_fully_addressable", True)


def check_finite(arr: Any, name: str, where: str) -> None:
    """Raise ValueError for NaN/inf, only when the values are concrete."""
    if is_concrete(arr):
        a = np.asarray(arr)
        if a.size and not np.all(np.isfinite(a)):
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{where}: argument {name!r} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")


def check_choice(value: Any, choices: Sequence[str], name: str, where: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where}: {name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")


def check_positive_int(value: Any, name: str, where: str, *, optional: bool = False) -> None:
    """Require a positive int (numpy ints too; bools are refused), or None if ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "None or a positive int" if optional else "a positive int"
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")


def check_real(value: Any, name: str, where: str, *, low: float | None = 0.0, low_open: bool = False,
               high: float | None = None) -> float:
    """Require a finite real number (not a bool) in ``[low, high]`` (``(low, ...`` when
    ``low_open``); returns it as a float."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high)
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{']' if high is not None else ')'}"
        raise ValueError(f"{where}: {name} must be a finite number in {rng}, got {value!r}")
    return float(value)


def check_weights(w: Any, name: str, where: str, *, axis=-1) -> None:
    """For concrete weights: ValueError unless all are finite and >= 0 and each set (along
    ``axis``) has a positive total. Traced weights, and arrays spread over several
    processes (which no single process can read), are left to the caller's ``ok`` flag."""
    if not is_readable(w):
        return
    a = np.asarray(w)
    if a.size == 0:
        return
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{where}: argument {name!r} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
    if np.any(a < 0):
        bad = np.argwhere(a < 0)[0]
        raise ValueError(f"{where}: argument {name!r} must be non-negative, got {float(a[tuple(bad)]):g} at index "
                         f"{tuple(int(i) for i in bad)}")
    total = a.sum(axis=axis) if a.ndim else a
    if np.any(total <= 0):
        raise ValueError(f"{where}: argument {name!r} must have a positive total" +
                         (" in every set" if np.ndim(total) else "") + ", got all zeros")


def as_scalar(value: Any, dtype) -> Any:
    """``value`` as a 0-d array of ``dtype`` for a jitted call: numpy for Python and numpy
    numbers (jnp.asarray would compile a conversion), JAX for arrays and tracers."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return np.asarray(value, dtype)
    return jnp.asarray(value, dtype)


def scoped_x64():
    """Context manager: float64 inside, whatever the global ``jax_enable_x64`` setting."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()
