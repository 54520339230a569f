"""Timing helpers for side-by-side benchmarks: first call (compile) reported apart from steady state."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax

__all__ = ["timed", "Timing"]


class Timing(dict):
    """``{"first_s": ..., "best_s": ..., "median_s": ...}``; first_s includes compilation."""


def _block(x: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def timed(fn: Callable, *args, repeat: int = 5) -> tuple[Any, Timing]:
    """Call ``fn(*args)`` once (compile + run), then ``repeat`` more times; best and median."""
    t0 = time.perf_counter()
    out = _block(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = _block(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    return out, Timing(first_s=first, best_s=times[0], median_s=times[len(times) // 2])
