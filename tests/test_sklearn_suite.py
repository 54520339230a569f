"""scikit-learn's own GaussianMixture and BayesianGaussianMixture test modules, run against
toolkit's drop-ins (slow: ~8 min)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_sklearn_gaussian_mixture_suite(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "sklearn_suite_plugin", "-p", "no:cacheprovider",
                          "-W", "ignore", "--pyargs", "sklearn.mixture.tests.test_gaussian_mixture",
                          "sklearn.mixture.tests.test_bayesian_mixture"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail
