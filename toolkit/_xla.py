"""XLA-level helpers shared by the modules: one-pass reductions and jits compiled with
tuned XLA options at top level.

Measured on XLA's CPU backend (2 cores): separate ``jnp.sum`` calls read the data once
each, while one variadic reduction reads it once for all; fast-math reassociation lets
those reductions vectorise. (jaxlib 0.12 no longer offers the classic loop emitters that
older releases could select per executable.)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["row_sums", "tuned_jit", "top_level", "XLA_OPTIONS", "LIGHT_OPTIONS"]

# Fast-math, but NaN, inf, division and library functions keep their IEEE meaning.
XLA_OPTIONS = {
    "xla_cpu_enable_fast_math": True,
    "xla_cpu_fast_math_honor_nans": True,
    "xla_cpu_fast_math_honor_infs": True,
    "xla_cpu_fast_math_honor_division": True,
    "xla_cpu_fast_math_honor_functions": True,
}

# For small problems: compilation is 2-3x faster and the run takes microseconds anyway.
LIGHT_OPTIONS = {**XLA_OPTIONS, "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@jax.custom_jvp
def row_sums(*terms):
    """Sums over the last axis of several same-shaped arrays in one variadic reduction,
    so XLA reads the data once instead of once per sum."""
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    return lax.reduce(terms, zeros, lambda a, b: tuple(i + j for i, j in zip(a, b)), (terms[0].ndim - 1,))


@row_sums.defjvp
def _row_sums_jvp(primals, tangents):
    # a reduction with a custom body has no transpose rule: differentiate plain sums
    return row_sums(*primals), tuple(jnp.sum(t, axis=-1) for t in tangents)


def top_level(*args) -> bool:
    """True when no argument is a tracer, i.e. the call is not being traced into a
    user's jit/vmap/grad (compiler options need a top-level jit)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args))


def tuned_jit(fn=None, *, fast_math: bool = True, **kwargs):
    """``jax.jit`` that compiles top-level calls with :data:`XLA_OPTIONS` (XLA's defaults
    when ``fast_math=False``), or with :data:`LIGHT_OPTIONS` when called with
    ``light_compile=True``.

    Inside a user's jit/vmap/grad the function is traced into the caller's computation
    (whose options apply), so a plain ``jax.jit`` serves those calls; so does it where
    this XLA lacks one of these options.
    """
    if fn is None:
        return functools.partial(tuned_jit, fast_math=fast_math, **kwargs)
    plain = jax.jit(fn, **kwargs)
    tuned = jax.jit(fn, compiler_options=XLA_OPTIONS, **kwargs) if fast_math else plain
    light = jax.jit(fn, compiler_options=LIGHT_OPTIONS, **kwargs)
    usable = [True]  # False once this XLA build has refused an option

    @functools.wraps(fn)
    def call(*args, light_compile=False, **kw):
        if usable[0] and top_level(args, kw):
            try:
                return (light if light_compile else tuned)(*args, **kw)
            except ValueError as exc:  # concrete arguments, but inside an outer trace
                if "top-level" not in str(exc):
                    raise
            except Exception as exc:  # an XLA build without one of the options
                if "compile option" not in str(exc):
                    raise
                usable[0] = False
        return plain(*args, **kw)

    return call
