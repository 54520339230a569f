"""scipy's own Rotation / Slerp test module (numpy backend), run against toolkit.so3's drop-ins (slow)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_scipy_rotation_suite(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop("SCIPY_ARRAY_API", None)  # numpy backend only: the drop-in's numpy contract
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "scipy_suite_plugin", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                          "--pyargs", "scipy.spatial.transform.tests.test_rotation"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and " 1 deselected" in tail, tail
