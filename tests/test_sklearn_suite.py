"""scikit-learn's own GaussianMixture and BayesianGaussianMixture test modules, run against
toolkit's drop-ins (slow: ~8 min)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


# one process per module: a process that compiles both modules' fits has segfaulted in
# XLA (too many live executables), which the plugin's per-module cache release also guards
@pytest.mark.slow
@pytest.mark.parametrize("module", ["test_gaussian_mixture", "test_bayesian_mixture"])
def test_sklearn_mixture_suite(tmp_path, module):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "sklearn_suite_plugin", "-p", "no:cacheprovider",
                          "-W", "ignore", "--pyargs", f"sklearn.mixture.tests.{module}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail
