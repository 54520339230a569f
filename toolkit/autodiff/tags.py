"""Gradients with respect to tagged intermediates (PyTorch's ``retain_grad``)."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ._util import _shape_str


# ----------------------------------------------------------------------------- tagged intermediates


@dataclasses.dataclass
class _TagState:
    mode: str  # "collect" or "inject"
    seen: dict
    perturb: dict | None = None


_STATE = threading.local()


def _active() -> _TagState | None:
    return getattr(_STATE, "tags", None)


@contextlib.contextmanager
def _tagging(state: _TagState):
    if _active() is not None:
        raise RuntimeError("autodiff.intermediate_grads: nested calls are not supported (a function passed to "
                           "intermediate_grads called intermediate_grads again)")
    _STATE.tags = state
    try:
        yield state
    finally:
        _STATE.tags = None


def tag(name: str, x: Any) -> Any:
    """Mark an intermediate value so :func:`intermediate_grads` reports ``d f / d x``.

    Outside ``intermediate_grads`` this is the identity, so tagged functions run as
    usual. Tag names must be unique within one evaluation of f. (Like ``retain_grad``.)

    Args:
      name: a unique string.
      x: array.
    Returns:
      x (plus a zero perturbation when gradients are being collected).

    >>> from toolkit import autodiff
    >>> def f(x):
    ...     h = autodiff.tag("h", x * 2.0)
    ...     return jnp.sum(h ** 2)
    >>> autodiff.intermediate_grads(f, jnp.array([1.0, 3.0]))[1]["h"].tolist()  # d f / d h = 2 h
    [4.0, 12.0]
    """
    state = _active()
    if state is None:
        return x
    if not isinstance(name, str):
        raise TypeError(f"autodiff.tag: name must be a str, got {type(name).__name__}")
    if state.mode == "collect":
        if name in state.seen:
            raise ValueError(f"autodiff.tag: the name {name!r} is used twice in one evaluation; tag names must "
                             "be unique")
        state.seen[name] = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
        return x
    return x + state.perturb[name]


def intermediate_grads(f: Callable, *args: Any) -> Any:
    """Value of a scalar ``f(*args)`` and its gradient with respect to every tagged intermediate.

    Pure and jit-able: ``f`` is traced once to find the tags, then differentiated with
    respect to zero perturbations added at each tag (the perturbation trick).
    Note: a tag inside a function that is separately ``jax.jit``-ed and already cached
    is not seen; jit the ``intermediate_grads`` call instead.

    Args:
      f: function returning a scalar, calling :func:`tag` on intermediates.
      *args: its arguments.
    Returns:
      ``(value, {name: d value / d tagged})``.
    Raises:
      ValueError: repeated tag name, or f does not return a scalar.
      RuntimeError: nested ``intermediate_grads`` calls.

    >>> def f(x):
    ...     h = tag("h", x * 2.0)
    ...     return jnp.sum(h ** 2)
    >>> intermediate_grads(f, jnp.array([1.0, 2.0]))[1]["h"].tolist()
    [4.0, 8.0]
    """
    with _tagging(_TagState("collect", {})) as st:
        # a fresh wrapper: eval_shape caches traces by function, and a cached trace of f
        # would run no tag() at all on the second call
        out = jax.eval_shape(lambda *a: f(*a), *args)
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(f"autodiff.intermediate_grads: f must return a scalar, got shape {_shape_str(out)}")
    zeros = {k: jnp.zeros(s.shape, s.dtype if jnp.issubdtype(s.dtype, jnp.inexact) else jnp.result_type(float))
             for k, s in st.seen.items()}

    def g(perturb):
        with _tagging(_TagState("inject", {}, perturb)):
            return f(*args)

    return jax.value_and_grad(g)(zeros)
