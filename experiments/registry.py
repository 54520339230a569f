"""The experiments a config may name. A config picks one by name, never by import path."""
from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from .config import ConfigError

__all__ = ["EXPERIMENTS", "load_experiment"]

# name -> module inside this package. Each module defines a `Params` dataclass and
# `run(params, ctx) -> dict` returning the metrics.
EXPERIMENTS: dict[str, str] = {
    "quickstart": "quickstart",
    "selftest": "selftest",
    "bench_so3": "bench_so3",
    "bench_autodiff": "bench_autodiff",
    "bench_gmm": "bench_gmm",
    "bench_conic": "bench_conic",
    "gmm_large": "gmm_large",
    "gmm_distributed": "gmm_distributed",
}


def load_experiment(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint} (known: {', '.join(sorted(EXPERIMENTS))})")
    return importlib.import_module(f"{__package__}.{EXPERIMENTS[name]}")
