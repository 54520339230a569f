"""Finding the experiment a config names. A config picks one by name from the
experiments package's ``EXPERIMENTS`` table, never by import path."""
from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from .config import ConfigError

__all__ = ["load_experiment"]


def load_experiment(package: str, name: str) -> ModuleType:
    """The module of experiment ``name`` in ``package``, whose ``EXPERIMENTS`` maps names to
    its submodules. Each such module defines a ``Params`` dataclass and
    ``run(params, ctx) -> dict`` returning the metrics."""
    table: dict[str, str] = importlib.import_module(package).EXPERIMENTS
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint} (known: {', '.join(sorted(table))})")
    return importlib.import_module(f"{package}.{table[name]}")
