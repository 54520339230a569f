"""Size buckets: inputs are padded to a few sizes so that a new row or point count
reuses an executable already compiled for a nearby size.

XLA compiles one executable per input shape. Without buckets, fitting on 1000 rows
and then on 1001 compiles twice (seconds each on a small machine); with them, every
count from 1025 to 1536 runs the 1536-row executable, with the extra rows carrying
zero weight (or masked), and results are sliced back.

Buckets are ``2^e`` and ``1.5 * 2^e`` (at most 50% padding, two executables per
doubling) up to :data:`FINE_FROM` rows, and eight per doubling above it, where the
run time of the padding rows would outweigh a compilation (at most 12.5% padding).

>>> [bucket(n) for n in (1, 3, 5, 9, 100, 1000, 1100, 1600, 2000, 20_000, 50_000)]
[1, 4, 8, 12, 128, 1024, 1536, 2048, 2048, 20480, 53248]
"""
from __future__ import annotations

import jax
import numpy as np

__all__ = ["bucket", "padded_size", "pad_to", "unpad", "should_pad", "MIN_BUCKET", "FINE_FROM"]

MIN_BUCKET = 8
FINE_FROM = 8192


def bucket(n: int, *, fine: bool = False) -> int:
    """The smallest bucket size ``>= n`` (``n >= 0``); up to :data:`MIN_BUCKET`, the next
    power of two (a single fit in a batch axis stays single). ``fine``: eight buckets per
    doubling at any size, for an axis multiplied by another large one (points per fit in
    a big batch), where the padding's run time counts more than a compilation."""
    n = int(n)
    if n <= MIN_BUCKET:
        return 1 << max(n - 1, 0).bit_length()
    e = (n - 1).bit_length() - 1  # 2^e < n <= 2^(e+1)
    steps = 8 if fine or n > FINE_FROM else 2
    step = (1 << e) // steps
    return -(-n // step) * step


def should_pad(x) -> bool:
    """Whether padding ``x`` can save a compilation: a concrete array (numpy, or a JAX
    array on one device). Inside a user's ``jit`` the shape is already fixed by the
    caller's own compilation, and padding an array sharded over several devices would
    gather it, so those are left as they are."""
    if isinstance(x, jax.core.Tracer):
        return False
    sharding = getattr(x, "sharding", None)
    return sharding is None or len(sharding.device_set) == 1


def padded_size(x, axis: int = 0) -> int:
    """The length ``x`` is padded to along ``axis``: its bucket, or its own length where
    padding cannot help (see :func:`should_pad`)."""
    n = x.shape[axis]
    return bucket(n) if should_pad(x) else n


# Padding and slicing go through host memory: any JAX operation (jnp.pad, x[:n]) would
# itself compile once per new shape, which is what the buckets are there to avoid.
# On the CPU backend the device buffer and the host array share memory anyway.


def _device_of(x):
    return next(iter(x.devices())) if isinstance(x, jax.Array) else None


def pad_to(x, size: int, axis: int = 0, fill=0):
    """``x`` padded along ``axis`` to ``size``, as a JAX array on ``x``'s device (the default
    one for host arrays); ``x`` itself when it already has that length.

    ``fill``: a scalar, an array broadcasting to one entry (an identity matrix, say), or
    "edge" for copies of the last entry.
    """
    if x.shape[axis] == size:
        return x
    a = np.asarray(x)
    axis %= a.ndim
    n = a.shape[axis]
    lead = (slice(None),) * axis
    out = np.empty(a.shape[:axis] + (size,) + a.shape[axis + 1:], a.dtype)
    out[lead + (slice(0, n),)] = a
    out[lead + (slice(n, size),)] = a[lead + (slice(n - 1, n),)] if isinstance(fill, str) else fill
    return jax.device_put(out, _device_of(x))


def unpad(y, n: int, axis: int = 0):
    """The first ``n`` entries of ``y`` along ``axis`` (``y`` itself when that is all of it)."""
    if y.shape[axis] == n:
        return y
    if isinstance(y, jax.core.Tracer):  # inside a caller's trace slicing compiles nothing extra
        return jax.lax.slice_in_dim(y, 0, n, axis=axis)
    index = (slice(None),) * (axis % y.ndim) + (slice(0, n),)
    return jax.device_put(np.ascontiguousarray(np.asarray(y)[index]), _device_of(y))
