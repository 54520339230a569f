"""Vector-Jacobian and Jacobian-vector products with explicit (co)tangents, elementwise derivatives and per-example gradients."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from ._util import _check_like, _shape_str


# ----------------------------------------------------------------------------- VJP / JVP


def vjp(f: Callable, *primals: Any, cotangent: Any) -> tuple[Any, tuple]:
    """Vector-Jacobian product: ``cotangent^T J`` (PyTorch's ``y.backward(grad_outputs)``).

    Args:
      f: function of the primals.
      *primals: the point.
      cotangent: same pytree structure, shapes and dtypes as ``f(*primals)``.
    Returns:
      the gradient with respect to each primal: one array for one primal, else a tuple.
    Raises:
      ValueError: cotangent structure, shape or dtype differs from the output's
        (the message names both shapes).

    >>> x = jnp.array([1.0, 2.0, 3.0, 4.0])
    >>> vjp(lambda x: jnp.outer(x, x), x, cotangent=jnp.ones((4, 4))).tolist()
    [20.0, 20.0, 20.0, 20.0]
    """
    if not primals:
        raise ValueError("autodiff.vjp: give at least one primal")
    out, pullback = jax.vjp(f, *primals)
    ct = jax.tree_util.tree_map(lambda c, o: jnp.asarray(c, o.dtype) if not hasattr(c, "dtype") else c,
                                cotangent, out) if jax.tree_util.tree_structure(cotangent) == \
        jax.tree_util.tree_structure(out) else cotangent
    _check_like(ct, out, "cotangent", "output", "autodiff.vjp")
    grads = pullback(ct)
    return grads[0] if len(primals) == 1 else grads


def jvp(f: Callable, primals: Sequence, tangents: Sequence) -> tuple[Any, Any]:
    """Jacobian-vector product: ``(f(*primals), J tangents)``.

    Args:
      f: function; primals, tangents: sequences of equal length, each tangent with
        the shape and dtype of its primal.
    Returns:
      ``(out, tangent_out)``.
    Raises:
      ValueError: a tangent's shape or dtype differs from its primal's.

    >>> from toolkit import autodiff
    >>> out, t = autodiff.jvp(jnp.sin, (jnp.array(0.0),), (jnp.array(2.0),))
    >>> float(out), float(t)
    (0.0, 2.0)
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"autodiff.jvp: {len(primals)} primals but {len(tangents)} tangents")
    tangents = tuple(jax.tree_util.tree_map(lambda t, p: jnp.asarray(t, jnp.result_type(p)), t, p)
                     if jax.tree_util.tree_structure(t) == jax.tree_util.tree_structure(p) else t
                     for t, p in zip(tangents, primals))
    _check_like(tangents, primals, "tangents", "primals", "autodiff.jvp")
    return jax.jvp(f, primals, tangents)


def elementwise_grad(f: Callable, order: int = 1, *, check: bool = False) -> Callable:
    """``x -> d^order f(x)_i / d x_i^order`` for an elementwise ``f``, without a Jacobian.

    An elementwise f has a diagonal Jacobian, so one JVP with a tangent of ones gives
    the diagonal; ``order`` nested JVPs give the higher derivatives. If f is not
    elementwise the result is the sum of each output's derivatives over all inputs
    (a row sum, not a derivative of anything): pass ``check=True`` to have concrete
    inputs verified with a random-direction JVP (raises ValueError otherwise).

    Args:
      f: function of one array, output of the same shape.
      order: derivative order >= 1 (cost grows as 2^order JVPs).
      check: verify elementwise structure on concrete inputs.
    Returns:
      a function ``x -> (x.shape)``.

    >>> elementwise_grad(lambda a: a ** 3 / 3, order=2)(jnp.array([2.0, 3.0])).tolist()
    [4.0, 6.0]
    """
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"autodiff.elementwise_grad: order must be an int >= 1, got {order!r}")

    def d1(g):
        def dg(x):
            return jax.jvp(g, (x,), (jnp.ones_like(x),))[1]

        return dg

    def wrapped(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        out = jax.eval_shape(f, x)
        if not hasattr(out, "shape") or out.shape != x.shape:
            raise ValueError("autodiff.elementwise_grad: f must map an array to an array of the same shape "
                             f"(elementwise), got input {tuple(x.shape)} and output {_shape_str(out)}")
        if check and not isinstance(x, jax.core.Tracer) and x.size > 1:
            t = jax.random.normal(jax.random.key(0), x.shape, x.dtype)
            diag = d1(f)(x)
            got = jax.jvp(f, (x,), (t,))[1]
            scale = jnp.max(jnp.abs(diag * t)) + jnp.finfo(x.dtype).tiny
            if float(jnp.max(jnp.abs(got - diag * t))) > 1e3 * float(jnp.finfo(x.dtype).eps) * float(scale):
                raise ValueError("autodiff.elementwise_grad: f is not elementwise (its Jacobian is not diagonal); "
                                 "use autodiff.jacobian instead")
        g = f
        for _ in range(order):
            g = d1(g)
        return g(x)

    return wrapped


def per_example_grads(loss: Callable, params: Any, batch: Any) -> Any:
    """Gradient of ``loss(params, example)`` for every example of ``batch`` (vmap of grad).

    Args:
      loss: scalar function ``(params, example) -> ()``.
      params: pytree.
      batch: pytree whose leaves share a leading batch axis of size B.
    Returns:
      pytree like ``params`` with a leading axis B on every leaf.

    >>> from toolkit import autodiff
    >>> loss = lambda w, xy: (w * xy[0] - xy[1]) ** 2
    >>> autodiff.per_example_grads(loss, jnp.array(1.0), jnp.array([[1.0, 0.0], [2.0, 1.0]])).tolist()
    [2.0, 4.0]
    """
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree_util.tree_leaves(batch)}
    if None in sizes or len(sizes) != 1:
        raise ValueError(f"autodiff.per_example_grads: every leaf of batch needs the same leading axis, got "
                         f"shapes {_shape_str(batch)}")
    return jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, batch)
