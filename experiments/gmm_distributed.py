"""One GMM fit spread over the processes of a jax.distributed job (or run in one process).

Every process builds the same seeded data set and keeps only its own rows (a stand-in
for each host reading its own files), then either
* ``method: fit``: ``gmm.shard_rows`` turns the local rows into one global row-sharded
  array over all processes' devices and ``gmm.fit`` runs on it (XLA all-reduces the
  sums across processes inside jit), or
* ``method: fit_batches``: each process streams its own rows in batches and the
  statistics are summed across processes once per pass.
Process 0's metrics are the job's; run the same config without ``--processes`` for the
single-process reference.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Literal

import jax
import numpy as np

from toolkit import gmm
from toolkit.runner import require
from toolkit._synthetic import mixture_data


@dataclasses.dataclass(frozen=True)
class Params:
    n: int = 200_000
    d: int = 8
    k: int = 8
    method: Literal["fit", "fit_batches"] = "fit"
    split: Literal["even", "uneven"] = "uneven"  # uneven: process i holds a share proportional to i + 1
    batch_size: int = 32768
    max_iter: int = 50
    tol: float = 1e-8
    seed: int = 0
    repeat: int = 2  # timed runs after the first (compiling) one
    die_process: int = -1  # for fault tests: this process kills itself (SIGKILL) once the job has started

    def __post_init__(self):
        require(self, positive=("n", "d", "k", "batch_size", "max_iter"), non_negative=("tol", "repeat"))


def _data(p: Params) -> np.ndarray:
    return mixture_data(np.random.default_rng(p.seed), p.n, p.d, p.k)[0]


def _bounds(n: int, P: int, split: str) -> list[int]:
    share = np.ones(P) if split == "even" else np.arange(1, P + 1, dtype=float)
    return [0, *np.round(np.cumsum(share) / share.sum() * n).astype(int).tolist()]


def run(p: Params, ctx) -> dict:
    P, pid = jax.process_count(), jax.process_index()
    X = _data(p)
    b = _bounds(p.n, P, p.split)
    local = X[b[pid]:b[pid + 1]]
    ctx.log.info("process %d of %d: rows %d:%d (%d rows), %d local device(s) of %d", pid, P, b[pid], b[pid + 1],
                 len(local), jax.local_device_count(), jax.device_count())
    if p.die_process == pid:
        ctx.log.warning("die_process=%d: killing myself", pid)
        os.kill(os.getpid(), signal.SIGKILL)
    key = jax.random.key(p.seed)
    opts = dict(max_iter=p.max_iter, tol=p.tol)
    if p.method == "fit":
        Xs, w = gmm.shard_rows(local)

        def once():
            return jax.block_until_ready(gmm.fit(key, Xs, p.k, sample_weight=w, **opts))
    else:
        batches = [local[i:i + p.batch_size] for i in range(0, len(local), p.batch_size)]

        def once():
            return jax.block_until_ready(gmm.fit_batches(key, batches, p.k, batch_size=p.batch_size, **opts))

    times = []
    for _ in range(1 + p.repeat):
        t0 = time.perf_counter()
        g, info = once()
        times.append(time.perf_counter() - t0)
    out = {
        "processes": P, "devices": jax.device_count(), "rows_per_process": np.diff(b).tolist(),
        "method": p.method, "first_s": times[0], "best_s": min(times[1:] or times),
        "n_iter": int(info.n_iter), "converged": bool(info.converged), "lower_bound": float(info.lower_bound),
        "weights": np.asarray(g.weights).tolist(), "means": np.asarray(g.means).tolist(),
    }
    ctx.log.info("%s on %d process(es): %d iterations, lower bound %.10f, best %.3f s (first %.2f s)", p.method, P,
                 out["n_iter"], out["lower_bound"], out["best_s"], out["first_s"])
    return out
