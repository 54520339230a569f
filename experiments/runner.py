"""``python -m experiments CONFIG [key=value ...] [--out DIR]``.

Everything that can be wrong with the command line or the config (missing file,
invalid YAML, unknown experiment or key, wrong type, an output path escaping the
output folder) is found before any work starts and reported in one line with exit
code 2. A run writes ``<out>/<config-name>/<timestamp>/`` holding ``config.yaml``
(resolved), ``metrics.json``, ``log.txt``, plots and a ``status`` file; all files
are written atomically, and a failed run says ``failed`` in ``status`` and leaves
no ``metrics.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_json, atomic_write_text, to_jsonable
from .config import (
    RESERVED,
    ConfigError,
    apply_override,
    build_params,
    build_settings,
    expand_sweep,
    load_yaml,
    parse_override,
)
from .context import RunContext
from .registry import load_experiment

__all__ = ["main", "prepare", "Plan"]


@dataclasses.dataclass
class Plan:
    """Everything decided before work starts."""

    settings: Any
    module: Any
    points: list[tuple[dict[str, Any], Any]]  # (sweep point, Params)
    base_dir: Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Run a toolkit experiment from a YAML config.",
        epilog="Overrides use dotted keys parsed as YAML values: gmm.n_components=8, x64=true. "
        "A comma list (k=2,4,8) sweeps over the values, one run directory each.",
    )
    p.add_argument("config", help="path to a YAML config, e.g. configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.add_argument("--out", default="runs", help="output folder inside the current directory (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and only warnings on stderr")
    return p


def _check_out(out: str) -> Path:
    root = Path.cwd().resolve()
    target = (root / out).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"--out {out!r} resolves to {target}, outside the current directory {root}; "
                          "choose a folder inside it")
    return target


def _new_run_dir(parent: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        cand = parent / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {parent}")


def prepare(config: str, overrides: list[str], out: str = "runs") -> Plan:
    """Load, override, type-check and expand a config. Raises ConfigError; creates nothing."""
    data = load_yaml(config)
    cli_sweep: dict[str, list[Any]] = {}
    for arg in overrides:
        key, values, value = parse_override(arg)
        if values is not None:
            cli_sweep[key] = values
        else:
            data = apply_override(data, key, value)
    settings = build_settings(data, default_name=Path(config).stem)
    module = load_experiment(settings.experiment)
    sweep = {**settings.sweep, **cli_sweep}
    for key in sweep:
        if key.split(".")[0] in RESERVED:
            raise ConfigError(f"cannot sweep over the runner setting {key!r}")
    params_data = {k: v for k, v in data.items() if k not in RESERVED}
    points = [(pt, build_params(module.Params, cfg)) for pt, cfg in expand_sweep(params_data, sweep)]
    base = _check_out(out) / settings.name
    return Plan(settings=settings, module=module, points=points, base_dir=base)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def _logger(tag: str, quiet: bool) -> tuple[logging.Logger, _ListHandler]:
    log = logging.getLogger(f"experiments.run.{tag}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    buf = _ListHandler()
    buf.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(buf)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING if quiet else logging.INFO)
    err.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(err)
    return log, buf


def _slug(point: dict[str, Any]) -> str:
    text = "_".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)[:80]


def _enable_compile_cache() -> None:
    # Compilation dominates small runs; JAX's persistent cache makes the second run fast.
    if os.environ.get("TOOLKIT_JAX_CACHE", "1") == "0":
        return
    import jax

    cache = os.environ.get("TOOLKIT_JAX_CACHE_DIR") or str(Path.home() / ".cache" / "toolkit-jax")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)


def _run_one(plan: Plan, point: dict[str, Any], params: Any, run_dir: Path, quiet: bool) -> tuple[bool, Any]:
    settings = plan.settings
    resolved = {"experiment": settings.experiment, "name": settings.name, "x64": settings.x64}
    if point:
        resolved["sweep_point"] = point
    resolved.update(dataclasses.asdict(params))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_jsonable(resolved), sort_keys=False))
    atomic_write_text(run_dir / "status", "running\n")
    log, buf = _logger(run_dir.name, quiet)
    ctx = RunContext(out_dir=run_dir, log=log, quiet=quiet or not sys.stderr.isatty())
    t0 = time.perf_counter()
    try:
        metrics = plan.module.run(params, ctx)
        if metrics is None:
            metrics = {}
        metrics = {**to_jsonable(metrics), "wall_time_s": time.perf_counter() - t0}
        atomic_write_json(run_dir / "metrics.json", metrics)
    except Exception as exc:  # the run failed: record it, never leave partial metrics
        log.error("run failed: %s: %s", type(exc).__name__, exc)
        buf.lines.append(traceback.format_exc())
        atomic_write_text(run_dir / "status", f"failed: {type(exc).__name__}: {exc}\n")
        atomic_write_text(run_dir / "log.txt", "\n".join(buf.lines) + "\n")
        return False, None
    atomic_write_text(run_dir / "log.txt", "\n".join(buf.lines) + "\n")
    atomic_write_text(run_dir / "status", "ok\n")
    return True, metrics


def _summary_table(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in cols and (v is None or isinstance(v, (int, float, str, bool))):
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.6g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def execute(plan: Plan, *, quiet: bool = False) -> int:
    if plan.settings.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    _enable_compile_cache()
    base = _new_run_dir(plan.base_dir)
    sweep = len(plan.points) > 1 or bool(plan.points[0][0])
    rows, failures = [], 0
    for i, (point, params) in enumerate(plan.points):
        run_dir = base
        if sweep:
            run_dir = base / f"{i:03d}-{_slug(point)}"
            run_dir.mkdir()
            if not quiet:
                print(f"[{i + 1}/{len(plan.points)}] {point}", file=sys.stderr)
        ok, metrics = _run_one(plan, point, params, run_dir, quiet)
        failures += not ok
        row = {**point, "status": "ok" if ok else "failed", "dir": run_dir.name}
        if ok:
            row.update({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
        rows.append(row)
    if sweep:
        atomic_write_json(base / "summary.json", rows)
        table = _summary_table(rows)
        atomic_write_text(base / "summary.md", table)
        atomic_write_text(base / "status", "ok\n" if not failures else f"failed: {failures} of {len(rows)} runs\n")
        print(table, end="")
    print(f"outputs: {base}")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = prepare(args.config, args.overrides, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return execute(plan, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
