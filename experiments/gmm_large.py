"""Streaming EM on data larger than we keep in memory: a 20M×16 float32 .npy (1.28 GB) written in
chunks, then fitted by ``gmm.fit_batches`` reading it one batch at a time."""
from __future__ import annotations

import dataclasses
import os
import resource
import time

import jax
import numpy as np

from toolkit import gmm
from toolkit.runner import require


@dataclasses.dataclass(frozen=True)
class Params:
    n: int = 20_000_000
    d: int = 16
    k: int = 6
    covariance_type: str = "full"
    batch_size: int = 65536
    write_chunk: int = 250_000
    max_iter: int = 30
    tol: float = 1e-6
    seed: int = 0
    keep_data: bool = False  # the .npy is deleted after the fit unless this is true

    def __post_init__(self):
        require(self, positive=("n", "d", "k", "batch_size", "write_chunk", "max_iter"), non_negative=("tol",))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _truth(p: Params):
    rng = np.random.default_rng(p.seed)
    means = rng.normal(scale=5.0, size=(p.k, p.d))  # well separated: the run is about scale
    A = rng.normal(size=(p.k, p.d, p.d)) / np.sqrt(p.d)
    weights = rng.dirichlet(np.full(p.k, 5.0))
    return weights, means, A


def _write(path, p: Params, truth, progress) -> None:
    """Chunk by chunk to a temporary name, renamed when whole: never a half-written file."""
    weights, means, A = truth
    rng = np.random.default_rng(p.seed + 1)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.dtype("<f4").str, "fortran_order": False,
                                                     "shape": (p.n, p.d)})
            for start in progress(range(0, p.n, p.write_chunk), total=-(-p.n // p.write_chunk), desc="write"):
                m = min(p.write_chunk, p.n - start)
                lab = rng.choice(p.k, size=m, p=weights)
                x = rng.standard_normal((m, p.d)).astype("<f4")
                for j in range(p.k):  # per component: no (m, d, d) temporary
                    rows = lab == j
                    x[rows] = x[rows] @ A[j].T.astype("<f4") + means[j].astype("<f4")
                f.write(x.tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run(p: Params, ctx) -> dict:
    truth = _truth(p)
    path = ctx.path("data.npy")
    t0 = time.perf_counter()
    _write(path, p, truth, lambda it, total, desc: ctx.progress(it, total=total, desc=desc))
    write_s = time.perf_counter() - t0
    data_bytes = p.n * p.d * 4
    ctx.log.info("wrote %d x %d float32 (%.0f MB) in %.1f s", p.n, p.d, data_bytes / 1e6, write_s)
    rss_before = _peak_rss_bytes()

    batches = gmm.NpyBatches(path, batch_size=p.batch_size)
    passes = []
    bar = ctx.progress(total=p.max_iter, desc="EM passes")
    t_last = [time.perf_counter()]

    def on_pass(it, lb):
        now = time.perf_counter()
        passes.append({"iteration": it, "lower_bound": lb, "seconds": now - t_last[0],
                       "peak_rss_bytes": _peak_rss_bytes()})
        t_last[0] = now
        bar.update(1)
        bar.set_postfix(lower_bound=f"{lb:.5f}")

    t0 = time.perf_counter()
    try:
        g, info = gmm.fit_batches(jax.random.key(p.seed), batches, p.k, covariance_type=p.covariance_type,
                                  max_iter=p.max_iter, tol=p.tol, callback=on_pass)
        jax.block_until_ready(g)
    finally:
        bar.close()
        if not p.keep_data:
            path.unlink(missing_ok=True)
    fit_s = time.perf_counter() - t0
    peak = _peak_rss_bytes()

    # each true mean's nearest fitted mean (well separated at this scale)
    means = np.asarray(g.means, np.float64)
    err = [float(np.min(np.linalg.norm(means - m, axis=1))) for m in truth[1]]
    matched = len({int(np.argmin(np.linalg.norm(means - m, axis=1))) for m in truth[1]}) == p.k
    out = {
        "n": p.n, "d": p.d, "k": p.k, "data_bytes": data_bytes, "write_s": write_s, "fit_s": fit_s,
        "n_iter": int(info.n_iter), "converged": bool(info.converged), "lower_bound": float(info.lower_bound),
        "seconds_per_pass": float(np.median([q["seconds"] for q in passes[1:]] or [fit_s])),
        "peak_rss_bytes": peak, "peak_rss_before_fit_bytes": rss_before,
        "peak_rss_over_data": peak / data_bytes,
        "rss_growth_during_fit_bytes": peak - rss_before, "max_mean_error": max(err), "all_components_found": matched,
        "passes": passes,
    }
    ctx.log.info("fit %d iterations in %.1f s (%.2f s per pass), lower bound %.5f; peak RSS %.0f MB = %.2f x "
                 "the data; worst mean error %.3g", out["n_iter"], fit_s, out["seconds_per_pass"], out["lower_bound"],
                 peak / 1e6, out["peak_rss_over_data"], max(err))
    return out
