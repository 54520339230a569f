"""Latency as users meet it, side by side with scikit-learn in one run.

- First call of every public entry point on a small input, each in a fresh process with
  no persistent cache (:mod:`experiments.bench.first_call`), float64 and float32: wall
  time, and the trace and compile time JAX's monitoring events report; then ``gmm.fit``
  in two fresh processes sharing a new cache folder (the second loads what the first
  compiled).
- Compilations over a size sweep (fit and predict on n = 1000..2000 rows).
- Warm ``predict`` / ``score_samples`` on 1000 rows against scikit-learn's.
- ``GridSearchCV`` over n_components x covariance_type in a fresh process, both.
- A repeated estimator fit (50k x 8, k = 8, 50 iterations) against the warm function
  and scikit-learn.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import warnings

import jax
import numpy as np

from ._timing import timed
from .first_call import entry_points


@dataclasses.dataclass(frozen=True)
class Params:
    dtypes: list[str] = dataclasses.field(default_factory=lambda: ["float64", "float32"])
    entries: list[str] = dataclasses.field(default_factory=list)  # default: every entry point
    predict_rows: int = 1000
    fit_n: int = 50_000
    fit_d: int = 8
    fit_k: int = 8
    fit_iters: int = 50
    repeat: int = 5
    grid_search: bool = True
    seed: int = 0


def _fresh(entry: str, dtype: str, cache: str | None = None) -> dict:
    """One measurement in a new interpreter (its imports do not count)."""
    module = __name__.rsplit(".", 1)[0] + ".first_call"  # experiments or toolkit_experiments
    cmd = [sys.executable, "-m", module, entry, dtype] + ([cache] if cache else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _first_calls(p: Params, ctx) -> list[dict]:
    names = p.entries or list(entry_points(np, jax, "float64"))
    rows = []
    for dtype in p.dtypes:
        for name in ctx.progress(names + ["sklearn.GaussianMixture.fit"], desc=f"first calls ({dtype})"):
            r = _fresh(name, dtype)
            r.pop("result", None)
            rows.append(r)
    return rows


def _cached_second_process(ctx) -> dict:
    folder = str(ctx.path("jax-cache"))
    first, second = _fresh("gmm.fit", "float64", folder), _fresh("gmm.fit", "float64", folder)
    return {"first_process_s": first["first_s"], "second_process_s": second["first_s"],
            "second_process_compiles": second["compiles"]}


def _warm_predict(p: Params) -> dict:
    from sklearn.mixture import GaussianMixture as Peer

    from toolkit.estimators import GaussianMixture

    rng = np.random.default_rng(p.seed)
    X = rng.normal(size=(p.predict_rows, 4)) + 4 * (np.arange(p.predict_rows) % 3)[:, None]
    ours, peer = GaussianMixture(3, random_state=0).fit(X), Peer(3, random_state=0).fit(X)
    out = {}
    for method in ("predict", "score_samples"):
        t_ours = timed(getattr(ours, method), X, repeat=50)[1]["median_s"]
        t_peer = timed(getattr(peer, method), X, repeat=50)[1]["median_s"]
        out[method] = {"ours_s": t_ours, "sklearn_s": t_peer, "ratio": t_ours / t_peer}
    return out


def _grid_search() -> dict:
    ours, peer = _fresh("GridSearchCV", "float64"), _fresh("sklearn.GridSearchCV", "float64")
    return {"ours_s": ours["first_s"], "sklearn_s": peer["first_s"], "ratio": ours["first_s"] / peer["first_s"],
            "ours_compiles": ours["compiles"], "ours_compile_s": ours["compile_s"],
            "same_best_params": ours["result"] == peer["result"], "best_params": ours["result"],
            "sklearn_best_params": peer["result"], "ours_warm_s": ours["second_s"]}


def _estimator_fit(p: Params) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as Peer

    from toolkit import gmm
    from toolkit._synthetic import mixture_data
    from toolkit.estimators import GaussianMixture

    X = mixture_data(np.random.default_rng(p.seed), p.fit_n, p.fit_d, p.fit_k)[0]
    opts = dict(n_components=p.fit_k, max_iter=p.fit_iters, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = timed(lambda X: GaussianMixture(**opts).fit(X), X, repeat=p.repeat)[1]
        Xj = jax.device_put(np.asarray(X, np.float64))
        fn = timed(lambda X: gmm.fit(jax.random.key(0), X, p.fit_k, init="kmeans", max_iter=p.fit_iters, tol=0.0),
                   Xj, repeat=p.repeat)[1]
        t0 = time.perf_counter()
        Peer(**opts).fit(X)
        peer = time.perf_counter() - t0
    return {"n": p.fit_n, "d": p.fit_d, "k": p.fit_k, "iters": p.fit_iters, "estimator": est, "function": fn,
            "sklearn_s": peer, "estimator_over_function": est["median_s"] / fn["median_s"],
            "speedup_vs_sklearn": peer / est["median_s"]}


def run(p: Params, ctx) -> dict:
    out = {"first_call": _first_calls(p, ctx), "cached_gmm_fit": _cached_second_process(ctx),
           "size_sweep": {"ours": _fresh("size_sweep", "float64"), "sklearn": _fresh("sklearn.size_sweep", "float64")},
           "warm": _warm_predict(p), "estimator_fit": _estimator_fit(p)}
    if p.grid_search:
        out["grid_search"] = _grid_search()
    ctx.save_text("latency.md", _table(out))
    return out


def _table(out: dict) -> str:
    """The README's table: first call per entry point, then the other figures."""
    lines = ["| entry point | dtype | first call s | trace s | compile s | 2nd call ms |", "|---|---|---|---|---|---|"]
    for r in out["first_call"]:
        lines.append(f"| {r['entry']} | {r['dtype']} | {r['first_s']:.2f} | {r['trace_s']:.2f} | "
                     f"{r['compile_s']:.2f} | {r['second_s'] * 1e3:.1f} |")
    c, sw, w, g = out["cached_gmm_fit"], out["size_sweep"], out["warm"], out.get("grid_search")
    lines += ["", f"- gmm.fit, fresh process with a warm persistent cache: {c['second_process_s']:.2f} s "
                  f"(first process {c['first_process_s']:.2f} s)",
              f"- fit + predict over n = 1000..2000 rows: {sw['ours']['compiles_after_first']} compilations after "
              f"the first size, {sw['ours']['sweep_s']:.1f} s (scikit-learn {sw['sklearn']['sweep_s']:.1f} s)"]
    for m, r in w.items():
        lines.append(f"- warm {m} on 1000 rows: {r['ours_s'] * 1e3:.2f} ms vs scikit-learn {r['sklearn_s'] * 1e3:.2f}"
                     f" ms ({r['ratio']:.2f}x)")
    e = out["estimator_fit"]
    lines.append(f"- GaussianMixture.fit {e['n']}x{e['d']}, k={e['k']}, {e['iters']} iterations, repeated: "
                 f"{e['estimator']['median_s']:.2f} s, {e['estimator_over_function']:.2f}x the warm gmm.fit, "
                 f"{e['speedup_vs_sklearn']:.1f}x faster than scikit-learn ({e['sklearn_s']:.2f} s)")
    if g:
        lines.append(f"- GridSearchCV (n_components 1..6 x full/diag, cv=5, 2000x4), fresh process: "
                     f"{g['ours_s']:.1f} s vs scikit-learn {g['sklearn_s']:.1f} s ({g['ratio']:.1f}x; "
                     f"same best parameters: {g['same_best_params']})")
    return "\n".join(lines) + "\n"
