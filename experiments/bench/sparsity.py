"""toolkit.autodiff's sparsity detection, colouring and sparse derivatives against asdex.

asdex 0.5.2 imports a private JAX name that JAX 0.12 removed, so the comparison runs in
an environment of its own (JAX 0.11.2 + asdex 0.5.2, made once under the user's cache
and reused), with toolkit from this checkout on its path: both libraries in one process,
on the same functions (:mod:`.sparsity_worker`). This process then plots a detected
pattern (a spy plot) and reports the table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from toolkit.runner.config import output_file

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Params:
    sizes: list[int] = dataclasses.field(default_factory=lambda: [10_000, 100_000])
    problems: list[str] = dataclasses.field(default_factory=lambda: [
        "banded_jacobian", "stencil2d_jacobian", "rosenbrock_hessian", "stencil2d_hessian"])
    repeat: int = 5
    dense_max: int = 10_000  # dense jacfwd / hessian only up to this size (n^2 doubles)
    jax_version: str = "0.11.2"
    asdex_version: str = "0.5.2"
    spy_grid: int = 12  # the spy plot: the 2-D stencil's detected pattern on a grid x grid
    spy_name: str = output_file("sparsity_spy.png")


_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def _env(p: Params, ctx) -> Path:
    """The asdex environment's python, made on first use (pinned versions only)."""
    for v in (p.jax_version, p.asdex_version):
        if not _VERSION.match(v):
            raise ValueError(f"bench_sparsity: version {v!r} is not a plain version number")
    base = Path(os.environ.get("TOOLKIT_BENCH_CACHE", Path.home() / ".cache" / "toolkit-bench"))
    env = base / f"asdex-{p.asdex_version}-jax-{p.jax_version}"
    python = env / "bin" / "python"
    if not python.exists():
        ctx.log.info("making the asdex environment in %s (once)", env)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"jax=={p.jax_version}",
                        f"jaxlib=={p.jax_version}", f"asdex=={p.asdex_version}", "scipy", "numpy", "pyyaml",
                        "matplotlib", "tqdm", "optax", "scikit-learn"], check=True)
    return python


def _spy(p: Params, ctx):
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from toolkit import autodiff as ad

    from .sparsity_worker import stencil2d

    n = p.spy_grid ** 2
    P = ad.jacobian_sparsity(stencil2d, jax.ShapeDtypeStruct((n,), jnp.float64))
    col = ad.jacobian_coloring(P)
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    coo = P.tocoo()
    ax.scatter(coo.col, coo.row, c=col.colors[coo.col], cmap="tab10", s=6, marker="s")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(f"detected Jacobian of a {p.spy_grid}x{p.spy_grid} 5-point stencil:\n"
                 f"{P.nnz} non-zeros, {col.n_colors} colours (one JVP each)", fontsize=9)
    ax.set_xlabel("input x_j (colour of its column)")
    ax.set_ylabel("output f_i")
    ctx.save_figure(fig, p.spy_name)


def run(p: Params, ctx) -> dict:
    python = _env(p, ctx)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = json.dumps({"sizes": p.sizes, "problems": p.problems, "repeat": p.repeat, "dense_max": p.dense_max})
    out = subprocess.run([str(python), "-m", "experiments.bench.sparsity_worker", args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"bench_sparsity: the asdex worker failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for r in result["rows"]:
        ctx.log.info("%s n=%d: nnz %d/%d, colours %d/%d, prep %.3fs vs %.3fs (%.1fx; first call %.1fx), "
                     "eval %.2f ms vs %.2f ms%s", r["problem"], r["n"], r["nnz"]["ours"], r["nnz"]["asdex"],
                     r["colors"]["ours"], r["colors"]["asdex"], r["prep"]["ours"]["best_s"],
                     r["prep"]["asdex"]["best_s"], r["prep"]["speedup"], r["prep"]["speedup_first_call"],
                     1e3 * r["eval"]["ours"]["best_s"], 1e3 * r["eval"]["asdex"]["best_s"],
                     f", dense {1e3 * r['dense']['best_s']:.1f} ms ({r['speedup_vs_dense']:.0f}x)" if "dense" in r
                     else "")
    result["goals"] = {
        "patterns_never_larger": all(r["nnz"]["ours"] <= r["nnz"]["asdex"] for r in result["rows"]),
        "colours_never_more": all(r["colors"]["ours"] <= r["colors"]["asdex"] for r in result["rows"]),
        "prep_min_speedup": float(np.min([r["prep"]["speedup"] for r in result["rows"]])),
        "eval_max_ratio": float(np.max([r["eval"]["ratio_ours_over_asdex"] for r in result["rows"]])),
        "dense_min_speedup": float(np.min([r["speedup_vs_dense"] for r in result["rows"] if "dense" in r]
                                          or [np.nan])),
        "all_same_entries": all(r["same_entries"] for r in result["rows"]),
    }
    ctx.log.info("goals: %s", result["goals"])
    _spy(p, ctx)
    return result
