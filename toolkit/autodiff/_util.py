"""Shared helpers: shapes of pytrees in messages, and checking a (co)tangent against its reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _shape_str(tree) -> str:
    leaves = jax.tree_util.tree_leaves(tree)
    if len(leaves) == 1 and jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(tree)):
        return str(tuple(leaves[0].shape))
    return str(jax.tree_util.tree_map(lambda a: tuple(a.shape), tree))


def _check_like(given, ref, given_name, ref_name, where):
    """Same pytree structure, shapes and dtypes (python scalars adopt ref's dtype)."""
    g_leaves, g_tree = jax.tree_util.tree_flatten(given)
    r_leaves, r_tree = jax.tree_util.tree_flatten(ref)
    if g_tree != r_tree:
        raise ValueError(f"{where}: {given_name} has pytree structure {g_tree}, but {ref_name} has {r_tree}")
    for g, r in zip(g_leaves, r_leaves):
        gs, rs = tuple(jnp.shape(g)), tuple(jnp.shape(r))
        if gs != rs:
            raise ValueError(f"{where}: {given_name} shape {_shape_str(given)} does not match "
                             f"{ref_name} shape {_shape_str(ref)}")
        if hasattr(g, "dtype") and jnp.dtype(g.dtype) != jnp.dtype(r.dtype):
            raise ValueError(f"{where}: {given_name} dtype {g.dtype} does not match {ref_name} dtype {r.dtype} "
                             f"(shape {rs}); cast it with .astype({r.dtype})")


def _check_differentiable(tree, name, where):
    """TypeError unless every leaf of ``tree`` is a float (or complex) array: integer
    inputs have no derivative, and JAX's own message for them is a traceback."""
    for leaf in jax.tree_util.tree_leaves(tree):
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            raise TypeError(f"{where}: {name} must be floating point to be differentiated, got dtype {dt} "
                            f"(cast it with .astype(float))")


def _check_aux_pair(out, where):
    """ValueError unless ``out`` (f's output, or its shape) is a pair ``(out, aux)``."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        got = (f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list))
               else f"an output of shape {_shape_str(out)}")
        raise ValueError(f"{where}: has_aux=True needs f to return a pair (out, aux), got {got}")
