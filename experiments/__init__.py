"""The project's experiments and benchmarks, run by :mod:`toolkit.runner`:
``python -m experiments configs/NAME.yaml [key=value ...] [--out DIR]`` from the repository,
or ``toolkit-run`` once installed (where this package is named ``toolkit_experiments``, so
it claims no generic import name).

To add an experiment: a module here with a ``Params`` dataclass and
``run(params, ctx) -> dict``, one entry in :data:`EXPERIMENTS`, and a config under configs/.
"""
from __future__ import annotations

__all__ = ["EXPERIMENTS", "main"]

# config name -> module inside this package
EXPERIMENTS: dict[str, str] = {
    "quickstart": "quickstart",
    "selftest": "selftest",
    "gmm_large": "gmm_large",
    "gmm_distributed": "gmm_distributed",
    "so3_optax": "so3_optax",
    "bench_so3": "bench.so3",
    "bench_autodiff": "bench.autodiff",
    "bench_gmm": "bench.gmm",
    "bench_conic": "bench.conic",
    "bench_latency": "bench.latency",
    "bench_sparsity": "bench.sparsity",
}


def main(argv: list[str] | None = None) -> int:
    """The command line, running the experiments of this package."""
    from toolkit.runner import main as run_main

    return run_main(argv, experiments=__name__)
