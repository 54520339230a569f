"""Test fixtures and hypothesis profiles (float64, CPU and the cache: ../conftest.py)."""
import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("toolkit", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "toolkit"))

ROOT = Path(__file__).resolve().parents[1]

# a script run in its own process by test_gmm_scale.py, not a module to import here
collect_ignore = ["sharded_check.py"]


def _reference_path() -> Path:
    shared = ROOT.parent / "shared" / "reference_cases.json"
    return shared if shared.is_file() else ROOT / "tests" / "data" / "reference_cases.json"


@pytest.fixture(scope="session")
def reference_cases() -> dict:
    return json.loads(_reference_path().read_text())
