"""Dense Jacobians (forward, reverse or automatic; chunked), Hessians and Hessian-vector products."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jax.flatten_util import ravel_pytree

from .._checks import check_choice, check_positive_int
from ._util import _check_aux_pair, _check_differentiable, _check_like


# ----------------------------------------------------------------------------- Jacobians


def _argnums_tuple(argnums) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _split_flat_jacobian(J, out_struct, in_struct):
    """(n_out, n_in) matrix -> jax.jacobian layout: out-tree of in-trees of out.shape + in.shape."""
    out_leaves, out_tree = jax.tree_util.tree_flatten(out_struct)
    in_leaves, in_tree = jax.tree_util.tree_flatten(in_struct)
    o_sizes = np.cumsum([0] + [int(np.prod(a.shape)) for a in out_leaves])
    i_sizes = np.cumsum([0] + [int(np.prod(a.shape)) for a in in_leaves])
    blocks = []
    for oi, oa in enumerate(out_leaves):
        row = J[o_sizes[oi]:o_sizes[oi + 1]]
        parts = [row[:, i_sizes[ii]:i_sizes[ii + 1]].reshape(oa.shape + ia.shape).astype(jnp.result_type(oa.dtype))
                 for ii, ia in enumerate(in_leaves)]
        blocks.append(jax.tree_util.tree_unflatten(in_tree, parts))
    return jax.tree_util.tree_unflatten(out_tree, blocks)


def _chunked_rows(fn, n, chunk, dtype):
    """Stack fn(e_k) for the n basis vectors, ``chunk`` at a time (vmap inside lax.map)."""
    n_chunks = -(-n // chunk)
    idx = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)
    basis = lambda ids: (ids[:, None] == jnp.arange(n)[None, :]).astype(dtype)  # noqa: E731
    rows = lax.map(lambda ids: jax.vmap(fn)(basis(ids)), idx)
    return rows.reshape((n_chunks * chunk,) + rows.shape[2:])[:n]


def jacobian(f: Callable, argnums: int | Sequence[int] = 0, *, mode: str = "auto", has_aux: bool = False,
             chunk_size: int | None = None) -> Callable:
    """Jacobian of ``f`` with respect to the arguments ``argnums``, as a function.

    Layout as ``jax.jacobian``: for output ``out`` and input ``x`` the result has shape
    ``out.shape + x.shape`` (row i is ``d out_i / d x``); pytrees give a pytree of
    pytrees; a tuple ``argnums`` gives a tuple.

    Args:
      f: function of arrays / pytrees.
      argnums: which positional arguments to differentiate.
      mode: "fwd" (one JVP per input entry), "rev" (one VJP per output entry) or "auto"
        (forward when the inputs have fewer entries than the outputs, else reverse).
      has_aux: f returns ``(out, aux)``; the result is then ``(jacobian, aux)``.
      chunk_size: if given, build the Jacobian from ``chunk_size`` basis vectors at a
        time (``vmap`` inside ``lax.map``): peak working memory grows with the chunk,
        not with the number of basis vectors.
    Returns:
      a function with the signature of ``f``.
    Raises:
      ValueError: unknown mode, chunk_size not a positive int, or ``has_aux=True`` and f
        does not return a pair.
      TypeError: a differentiated argument is not floating point.

    >>> jacobian(lambda x: x ** 2)(jnp.array([4.0, 4.0])).tolist()
    [[8.0, 0.0], [0.0, 8.0]]
    """
    check_choice(mode, ("auto", "fwd", "rev"), "mode", "autodiff.jacobian")
    check_positive_int(chunk_size, "chunk_size", "autodiff.jacobian", optional=True)
    nums = _argnums_tuple(argnums)

    def jac_fn(*args):
        for a in nums:
            if a >= len(args):
                raise ValueError(f"autodiff.jacobian: argnums {argnums!r} but f was called with {len(args)} arguments")
            _check_differentiable(args[a], f"argument {a}", "autodiff.jacobian")
        m = mode
        if m == "auto" or has_aux:
            out_shape = jax.eval_shape(f, *args)
            if has_aux:
                _check_aux_pair(out_shape, "autodiff.jacobian")
                out_shape = out_shape[0]
        if m == "auto":
            n_out = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(out_shape))
            n_in = sum(int(np.prod(jnp.shape(a))) for i in nums for a in jax.tree_util.tree_leaves(args[i]))
            m = "fwd" if n_in < n_out else "rev"
        if chunk_size is None:
            t = jax.jacfwd if m == "fwd" else jax.jacrev
            return t(f, argnums=argnums, has_aux=has_aux)(*args)
        return _chunked_jacobian(f, args, nums, isinstance(argnums, int), m, has_aux, chunk_size)

    return jac_fn


def _chunked_jacobian(f, args, nums, single, mode, has_aux, chunk):
    diff = tuple(args[i] for i in nums)
    flat, unravel = ravel_pytree(diff)

    def g(x):
        full = list(args)
        for i, a in zip(nums, unravel(x)):
            full[i] = a
        return f(*full)

    aux = None
    if mode == "fwd":
        out, lin, *rest = jax.linearize(g, flat, has_aux=has_aux)
    else:
        out, pullback, *rest = jax.vjp(g, flat, has_aux=has_aux)
    if has_aux:
        aux = rest[0]
    out_flat, unravel_out = ravel_pytree(out)
    if mode == "fwd":
        cols = _chunked_rows(lambda e: ravel_pytree(lin(e))[0], flat.size, chunk, flat.dtype)
        J = cols.T
    else:
        J = _chunked_rows(lambda e: pullback(unravel_out(e))[0], out_flat.size, chunk, out_flat.dtype)
    in_struct = diff[0] if single else diff
    res = _split_flat_jacobian(J, out, in_struct)
    return (res, aux) if has_aux else res


def hessian(f: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """Dense Hessian (forward-over-reverse) of a scalar ``f``; layout ``x.shape + x.shape``.

    >>> hessian(lambda x: jnp.sum(x ** 3))(jnp.array([1.0, 2.0])).tolist()
    [[6.0, 0.0], [0.0, 12.0]]
    """
    return jax.hessian(f, argnums=argnums)


def hvp(f: Callable, x: ArrayLike, v: ArrayLike) -> jax.Array:
    """Hessian-vector product ``H(x) v`` of a scalar ``f`` without forming H.

    Forward-over-reverse: one JVP of ``grad f``, about the cost of two gradients.

    Args:
      f: scalar function of one array / pytree.
      x: point; v: direction with the same structure, shapes and dtypes as x.
    Returns:
      ``H v`` with the structure of x.

    >>> from toolkit import autodiff
    >>> f = lambda x: jnp.sum(x ** 3)  # Hessian diag(6 x)
    >>> autodiff.hvp(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0])).tolist()
    [6.0, 12.0]
    """
    _check_like(v, x, "v", "x", "autodiff.hvp")
    return jax.jvp(jax.grad(f), (x,), (v,))[1]
