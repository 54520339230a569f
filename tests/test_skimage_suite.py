"""scikit-image's own EllipseModel / CircleModel / ransac tests, run against toolkit's drop-ins (slow)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peer_sources import peer_file

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_skimage_fit_suite(tmp_path):
    path = peer_file("scikit-image", "tests/skimage/measure/test_fit.py", tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "skimage_suite_plugin", "-p", "no:cacheprovider",
                          "-p", "no:randomly", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1800)
    tail = out.stdout[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "deselected" not in tail, tail
