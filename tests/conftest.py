"""Test configuration: float64 on, a persistent compilation cache, shared fixtures."""
import json
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

import toolkit  # noqa: E402

# Compilation dominates a cold test run; a persistent cache makes reruns fast.
if os.environ.get("TOOLKIT_JAX_CACHE", "1") != "0":
    toolkit.enable_compilation_cache()

from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("toolkit", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "toolkit"))

ROOT = Path(__file__).resolve().parents[1]


def _reference_path() -> Path:
    shared = ROOT.parent / "shared" / "reference_cases.json"
    return shared if shared.is_file() else ROOT / "tests" / "data" / "reference_cases.json"


@pytest.fixture(scope="session")
def reference_cases() -> dict:
    return json.loads(_reference_path().read_text())
