"""A tiny experiment that exercises the runner itself (typing, sweeps, plots, failure)."""
from __future__ import annotations

import dataclasses
import time
from typing import Literal

import numpy as np

from toolkit.runner import output_file


@dataclasses.dataclass(frozen=True)
class Inner:
    scale: float = 1.0
    label: str = "x"


@dataclasses.dataclass(frozen=True)
class Params:
    n: int = 10
    mode: Literal["sum", "mean"] = "sum"
    inner: Inner = dataclasses.field(default_factory=Inner)
    values: list[float] = dataclasses.field(default_factory=lambda: [1.0, 2.0])
    fail: bool = False
    plot: bool = False
    plot_name: str = output_file("plot.png")
    sleep_s: float = 0.0  # for interruption tests: print a line, then wait this long

    def __post_init__(self):
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")


def run(params: Params, ctx) -> dict:
    x = np.arange(params.n, dtype=float) * params.inner.scale
    total = float(x.sum() if params.mode == "sum" else x.mean())
    for _ in ctx.progress(range(params.n), desc="selftest"):
        pass
    ctx.log.info("selftest %s = %g", params.mode, total)
    if params.sleep_s > 0:
        print(f"selftest: sleeping {params.sleep_s} s", flush=True)
        time.sleep(params.sleep_s)
    if params.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(x, label="x")
        ax.set(title=f"selftest {params.mode}", xlabel="index", ylabel="value")
        ax.legend(fontsize=6)
        ctx.save_figure(fig, params.plot_name)
    if params.fail:
        # Simulates a crash after some outputs exist but before metrics are written.
        raise RuntimeError("selftest asked to fail")
    return {"total": total, "n": params.n, "label": params.inner.label, "values": params.values}
