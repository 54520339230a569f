"""toolkit.gmm in a jax.distributed job: 2 local processes (gloo over loopback) through the
runner's ``--processes``; oracle: the same config run as one process on all the rows."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "gmm_distributed.yaml")
SMALL = ["n=6000", "d=3", "k=3", "max_iter=15", "repeat=0", "batch_size=1024"]


def run(tmp, *args, timeout=300):
    out = subprocess.run([sys.executable, "-m", "toolkit_experiments", CONFIG, *SMALL, *args, "--out", "runs"],
                         cwd=tmp, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    dirs = sorted((Path(tmp) / "runs" / "gmm_distributed").iterdir())
    return out, dirs[-1]


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out, d = run(tmp_path_factory.mktemp("single"))
    assert out.returncode == 0, out.stderr[-3000:]
    return metrics(d)


# each case starts two fresh JAX processes that compile everything: one case runs in
# `make test`, the other two (and the failure modes below) in `make test-slow`
@pytest.mark.parametrize("method, split", [("fit", "uneven"),
                                           pytest.param("fit_batches", "uneven", marks=pytest.mark.slow),
                                           pytest.param("fit", "even", marks=pytest.mark.slow)])
def test_two_processes_equal_one(single, tmp_path, method, split):
    out, d = run(tmp_path, f"method={method}", f"split={split}", "--processes", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    m = metrics(d)
    assert m["processes"] == 2 and m["devices"] == 2
    assert m["rows_per_process"] == ([2000, 4000] if split == "uneven" else [3000, 3000])
    assert m["n_iter"] == single["n_iter"]
    np.testing.assert_allclose(m["lower_bound"], single["lower_bound"], rtol=1e-8)  # sums in another order
    np.testing.assert_allclose(m["means"], single["means"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m["weights"], single["weights"], rtol=1e-6)
    # only process 0 writes outputs; every worker's output is kept in the run folder
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "log.txt", "metrics.json", "process-0.log",
                                                   "process-1.log", "status"]
    assert (d / "status").read_text() == "ok\n"
    assert "[process 1]" in (d / "process-1.log").read_text()


@pytest.mark.slow
def test_killed_worker_fails_the_job_cleanly(tmp_path):
    t0 = time.monotonic()
    out, d = run(tmp_path, "die_process=1", "distributed.heartbeat_timeout_s=3", "--processes", "2", timeout=120)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1
    assert "process 1 of 2 failed (signal SIGKILL)" in out.stderr
    assert elapsed < 3 + 10 + 30  # heartbeat timeout + the launcher's grace + start-up
    assert (d / "status").read_text().startswith("failed: process 1 of 2 failed")
    assert not (d / "metrics.json").exists()


@pytest.mark.slow
def test_missing_worker_times_out_at_start(tmp_path):
    """A job whose other process never starts fails after init_timeout_s, not never."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOOLKIT_DISTRIBUTED="1", COORDINATOR_ADDRESS="127.0.0.1:1",
               NUM_PROCESSES="2", PROCESS_ID="1")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "toolkit_experiments", CONFIG, *SMALL, "distributed.init_timeout_s=3",
                          "--out", "runs", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "joining a jax.distributed job (process 1 of 2, coordinator 127.0.0.1:1, init timeout 3 s)" in out.stderr
    assert "DEADLINE_EXCEEDED" in out.stderr  # JAX's own report: it aborts the process
