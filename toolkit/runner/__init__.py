"""The config-driven experiment runner: configs, sweeps, run folders, logs, processes.

It runs the experiments of a package that maps names to modules in ``EXPERIMENTS``
(this repository's ``experiments/``); it holds no experiment itself.
"""
from __future__ import annotations

from .config import ConfigError, output_file, require
from .context import RunContext
from .launch import Plan, main, prepare

__all__ = ["main", "prepare", "Plan", "RunContext", "ConfigError", "output_file", "require"]
