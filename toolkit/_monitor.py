"""Counting compilations with JAX's monitoring events (public ``jax.monitoring`` API).

The tests assert with it that repeated calls compile nothing and that a size sweep
compiles a bounded number of times; the latency benchmark reports its counts and the
time each phase took. Timing alone cannot tell a compilation from a slow run.

>>> def double(x):
...     return 2 * x
>>> with CompileLog() as log:
...     _ = jax.jit(double)(jnp.arange(3.0))
>>> log.traces >= 1  # a new function is traced (and compiled, unless a persistent cache has it)
True
"""
from __future__ import annotations

import threading

import jax

__all__ = ["CompileLog"]

_COMPILE = "backend_compile_duration"
_TRACE = "jaxpr_trace_duration"
_active: list["CompileLog"] = []
_lock = threading.Lock()
_registered = False


def _listener(event: str, seconds: float, **kwargs) -> None:
    kind = _COMPILE if event.endswith(_COMPILE) else _TRACE if event.endswith(_TRACE) else None
    if kind is None:
        return
    with _lock:
        for log in _active:
            log.events.append((kind, str(kwargs.get("fun_name", "?")), float(seconds)))


class CompileLog:
    """Context manager recording the XLA compilations and jaxpr traces run inside it.

    Attributes:
      events: ``[(kind, function name, seconds)]`` with kind "backend_compile_duration"
        or "jaxpr_trace_duration".
    """

    def __init__(self):
        self.events: list[tuple[str, str, float]] = []

    def __enter__(self) -> "CompileLog":
        global _registered
        with _lock:
            if not _registered:  # listeners cannot be removed: one, dispatching to the open logs
                jax.monitoring.register_event_duration_secs_listener(_listener)
                _registered = True
            _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _lock:
            _active.remove(self)

    def _of(self, kind):
        return [e for e in self.events if e[0] == kind]

    @property
    def compiles(self) -> int:
        """Executables compiled (a persistent-cache hit compiles nothing)."""
        return len(self._of(_COMPILE))

    @property
    def traces(self) -> int:
        """Functions traced to jaxprs (a cache hit is still traced)."""
        return len(self._of(_TRACE))

    @property
    def compile_seconds(self) -> float:
        return sum(e[2] for e in self._of(_COMPILE))

    @property
    def trace_seconds(self) -> float:
        return sum(e[2] for e in self._of(_TRACE))

    @property
    def compiled(self) -> list[str]:
        """Names of the functions compiled, in order."""
        return [e[1] for e in self._of(_COMPILE)]
