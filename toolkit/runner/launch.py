"""``python -m experiments CONFIG [key=value ...] [--out DIR]`` (``toolkit-run`` when installed).

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
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_json, atomic_write_text, flatten_metrics, to_jsonable
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
from .signals import Interrupted, interruptible

__all__ = ["main", "prepare", "Plan"]


@dataclasses.dataclass
class Plan:
    """Everything decided before work starts."""

    settings: Any
    module: Any
    experiments: str  # the package the experiment came from (workers import it too)
    points: list[tuple[dict[str, Any], Any]]  # (sweep point, Params)
    base_dir: Path


def _parser(prog: str = "python -m experiments") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a toolkit experiment from a YAML config.",
        epilog="Overrides use dotted keys parsed as YAML values: gmm.n_components=8, x64=true. "
        "A comma list (k=2,4,8) sweeps over the values, one run directory each.",
    )
    p.add_argument("config", help="path to a YAML config, e.g. configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    p.add_argument("--out", default="runs", help="output folder inside the current directory (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and only warnings on stderr")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="start N local worker processes of one jax.distributed job (coordinator on 127.0.0.1, "
                        "gloo collectives) and supervise them; process 0 writes the outputs")
    p.add_argument("--allow-large-sweep", action="store_true",
                   help=f"run a sweep of more than {MAX_SWEEP} runs (refused otherwise)")
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)  # set by --processes for process 0
    return p


def _check_out(out: str) -> Path:
    root = Path.cwd().resolve()
    target = (root / out).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"--out {out!r} resolves to {target}, outside the current directory {root}; "
                          "choose a folder inside it")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {out!r} is an existing file, not a folder")
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


# Documented caps: a typo in a sweep (k=1,2,...,10000) or in --processes should not start
# thousands of runs or processes.
MAX_SWEEP = 1000
MAX_PROCESSES = 64


def prepare(config: str, overrides: list[str], out: str = "runs", *, experiments: str = "experiments",
            allow_large_sweep: bool = False) -> Plan:
    """Load, override, type-check and expand a config. Raises ConfigError; creates nothing.

    A sweep of more than :data:`MAX_SWEEP` runs needs ``allow_large_sweep``."""
    data = load_yaml(config)
    cli_sweep: dict[str, list[Any]] = {}
    for arg in overrides:
        key, values, value = parse_override(arg)
        if values is not None:
            cli_sweep[key] = values
        else:
            data = apply_override(data, key, value)
    settings = build_settings(data, default_name=Path(config).stem)
    module = load_experiment(experiments, settings.experiment)
    sweep = {**settings.sweep, **cli_sweep}
    for key in sweep:
        if key.split(".")[0] in RESERVED:
            raise ConfigError(f"cannot sweep over the runner setting {key!r}")
    params_data = {k: v for k, v in data.items() if k not in RESERVED}
    n_runs = math.prod(len(v) if isinstance(v, list) else 1 for v in sweep.values())
    if n_runs > MAX_SWEEP and not allow_large_sweep:
        raise ConfigError(f"the sweep has {n_runs} runs, more than the cap of {MAX_SWEEP}; pass "
                          "--allow-large-sweep to run it anyway")
    points = [(pt, build_params(module.Params, cfg)) for pt, cfg in expand_sweep(params_data, sweep)]
    base = _check_out(out) / settings.name
    return Plan(settings=settings, module=module, experiments=experiments, points=points, base_dir=base)


class _Tee:
    """A text stream that writes to a terminal stream and to the run's log file."""

    def __init__(self, stream, log_file):
        self._stream, self._log = stream, log_file

    def write(self, text):
        self._log.write(text)
        self._log.flush()
        return self._stream.write(text)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the terminal stream
        return getattr(self._stream, name)


def _logger(tag: str, quiet: bool, log_file, prefix: str = "") -> logging.Logger:
    """A logger whose records go to ``log_file`` as they happen (every level) and to
    stderr (warnings only when ``quiet``)."""
    log = logging.getLogger(f"experiments.run.{tag}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s"))
    log.addHandler(to_file)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING if quiet else logging.INFO)
    err.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    log.addHandler(err)
    return log


def _slug(point: dict[str, Any]) -> str:
    text = "_".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)[:80]


def _enable_compile_cache() -> None:
    # Compilation dominates small runs; JAX's persistent cache makes the second run fast.
    if os.environ.get("TOOLKIT_JAX_CACHE", "1") != "0":
        import toolkit

        toolkit.enable_compilation_cache(min_compile_time_secs=0.3)


def _run_one(plan: Plan, point: dict[str, Any], params: Any, run_dir: Path, quiet: bool) -> tuple[bool, Any]:
    settings = plan.settings
    resolved = {"experiment": settings.experiment, "name": settings.name, "x64": settings.x64}
    if point:
        resolved["sweep_point"] = point
    resolved.update(dataclasses.asdict(params))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_jsonable(resolved), sort_keys=False))
    atomic_write_text(run_dir / "status", "running\n")
    # The log is written as the run goes (a plain append-only file: it is a stream, not a
    # result), holding the logger's records and whatever the experiment prints.
    with open(run_dir / "log.txt", "a", encoding="utf-8") as log_file:
        log = _logger(run_dir.name, quiet, log_file, _process_prefix())
        ctx = RunContext(out_dir=run_dir, log=log, quiet=quiet or not sys.stderr.isatty())
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log_file), _Tee(err, log_file)
        t0 = time.perf_counter()
        try:
            metrics = plan.module.run(params, ctx)
            if metrics is None:
                metrics = {}
            metrics = {**to_jsonable(metrics), "wall_time_s": time.perf_counter() - t0}
            atomic_write_json(run_dir / "metrics.json", metrics)
        except Interrupted as exc:
            log.error("interrupted by %s after %.1f s", exc.name, time.perf_counter() - t0)
            atomic_write_text(run_dir / "status", exc.status())
            raise
        except Exception as exc:  # the run failed: record it, never leave partial metrics
            log.error("run failed: %s: %s", type(exc).__name__, exc)
            log_file.write(traceback.format_exc())
            atomic_write_text(run_dir / "status", f"failed: {type(exc).__name__}: {exc}\n")
            return False, None
        finally:
            sys.stdout, sys.stderr = out, err
            for h in list(log.handlers):
                log.removeHandler(h)
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


def _process_prefix() -> str:
    import jax

    return f"[process {jax.process_index()}] " if jax.process_count() > 1 else ""


def _init_distributed(ds) -> int:
    """Join the jax.distributed job; returns this process's id.

    The coordinator, process count and id come from COORDINATOR_ADDRESS / NUM_PROCESSES /
    PROCESS_ID when all three are set (what ``--processes`` sets), else from JAX's own
    detection (SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, ...).
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    kw = dict(initialization_timeout=int(ds.init_timeout_s), heartbeat_timeout_seconds=int(ds.heartbeat_timeout_s))
    env = [os.environ.get(k) for k in ("COORDINATOR_ADDRESS", "NUM_PROCESSES", "PROCESS_ID")]
    if all(env):
        jax.distributed.initialize(env[0], int(env[1]), int(env[2]), **kw)
    else:
        jax.distributed.initialize(**kw)
    return jax.process_index()


def _distributed_wanted(plan: Plan) -> bool:
    return plan.settings.distributed.enabled or os.environ.get("TOOLKIT_DISTRIBUTED") == "1"


def execute(plan: Plan, *, quiet: bool = False, run_dir: str | None = None) -> int:
    pid = 0
    if _distributed_wanted(plan):
        ds = plan.settings.distributed
        print(f"joining a jax.distributed job (process {os.environ.get('PROCESS_ID', '?')} of "
              f"{os.environ.get('NUM_PROCESSES', '?')}, coordinator {os.environ.get('COORDINATOR_ADDRESS', 'auto')}, "
              f"init timeout {ds.init_timeout_s} s)", file=sys.stderr, flush=True)
        if run_dir:
            # JAX aborts the process (no Python exception) when the job cannot form in
            # time; say so in advance, and take it back once the job is up.
            atomic_write_text(Path(run_dir) / "status", "failed: jax.distributed did not start (a process "
                              f"missing after init_timeout_s={ds.init_timeout_s}?)\n")
        try:
            pid = _init_distributed(plan.settings.distributed)
        except Exception as exc:  # noqa: BLE001 - a start-up failure is reported, not raised
            msg = (f"jax.distributed could not start ({type(exc).__name__}: {exc}); every process must start "
                   f"within distributed.init_timeout_s={plan.settings.distributed.init_timeout_s}")
            print(f"error: {msg}", file=sys.stderr)
            if run_dir:
                atomic_write_text(Path(run_dir) / "status", f"failed: {msg}\n")
            return 1
        if run_dir:
            atomic_write_text(Path(run_dir) / "status", "running\n")
    if pid > 0:
        # only process 0 writes run outputs; the others work in a scratch folder
        scratch = Path(tempfile.mkdtemp(prefix=f"toolkit-process{pid}-"))
        try:
            return _execute(plan, quiet=quiet, base=scratch, announce=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _execute(plan, quiet=quiet, base=Path(run_dir) if run_dir else None)


def _execute(plan: Plan, *, quiet: bool, base: Path | None, announce: bool = True) -> int:
    if plan.settings.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    _enable_compile_cache()
    base = base or _new_run_dir(plan.base_dir)
    sweep = len(plan.points) > 1 or bool(plan.points[0][0])
    rows, failures = [], 0
    try:
        for i, (point, params) in enumerate(plan.points):
            run_dir = base
            if sweep:
                run_dir = base / f"{i:03d}-{_slug(point)}"
                run_dir.mkdir()
                if not quiet:
                    print(f"[{i + 1}/{len(plan.points)}] {point}", file=sys.stderr)
            rows.append({**point, "status": "interrupted", "dir": run_dir.name})
            ok, metrics = _run_one(plan, point, params, run_dir, quiet)
            failures += not ok
            rows[-1]["status"] = "ok" if ok else "failed"
            if ok:
                rows[-1].update(flatten_metrics(metrics))
    except Interrupted as exc:
        if sweep:  # the summary lists the finished members, the interrupted one and the rest
            rows += [{**pt, "status": "not started", "dir": ""} for pt, _ in plan.points[len(rows):]]
            atomic_write_json(base / "summary.json", rows)
            atomic_write_text(base / "summary.md", _summary_table(rows))
            atomic_write_text(base / "status", exc.status())
        raise
    if sweep:
        atomic_write_json(base / "summary.json", rows)
        table = _summary_table(rows)
        atomic_write_text(base / "summary.md", table)
        atomic_write_text(base / "status", "ok\n" if not failures else f"failed: {failures} of {len(rows)} runs\n")
        if announce:
            print(table, end="")
    if announce:
        print(f"outputs: {base}")
    return 0 if not failures else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


_STACK_FRAME = re.compile(r"^\s+@\s+0x[0-9a-f]+\s")


def _pump(stream, log_path: Path) -> None:
    """Copy a worker's output to ``log_path`` whole, and to our stderr without the native
    stack frames a worker prints when jax.distributed aborts it (they stay in the log)."""
    with open(log_path, "w") as log:
        for line in stream:
            log.write(line)
            log.flush()
            if not _STACK_FRAME.match(line):
                sys.stderr.write(line)


def launch_local(plan: Plan, config: str, overrides: list[str], out: str, n: int, *, quiet: bool = False) -> int:
    """Start ``n`` worker processes of one jax.distributed job on this machine and supervise them.

    Process 0 writes the run folder; each worker's full output is kept in
    ``process-<i>.log`` there. When a worker fails (or is killed), the others get
    ``heartbeat_timeout_s`` + 10 s to notice through jax.distributed and exit; any still
    running are then killed. The run folder is marked failed, naming the process.
    """
    ds = plan.settings.distributed
    run_dir = _new_run_dir(plan.base_dir)
    atomic_write_text(run_dir / "status", "running\n")
    port = _free_port()
    base_cmd = [sys.executable, "-m", plan.experiments, config, *overrides, "--out", out]
    if quiet:
        base_cmd.append("--quiet")
    procs, pumps = [], []
    for i in range(n):
        env = dict(os.environ, TOOLKIT_DISTRIBUTED="1", COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   NUM_PROCESSES=str(n), PROCESS_ID=str(i))
        p = subprocess.Popen(base_cmd + (["--run-dir", str(run_dir)] if i == 0 else []), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        procs.append(p)
        pumps.append(threading.Thread(target=_pump, args=(p.stdout, run_dir / f"process-{i}.log"), daemon=True))
        pumps[-1].start()
    print(f"[launcher] started {n} processes (coordinator 127.0.0.1:{port}), outputs in {run_dir}", file=sys.stderr)
    try:
        return _supervise(procs, pumps, run_dir, n, ds)
    except Interrupted as exc:
        for p in procs:  # pass the signal on, then make sure nothing outlives the launcher
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in pumps:
            t.join(timeout=5)
        atomic_write_text(run_dir / "status", exc.status())
        raise


def _supervise(procs, pumps, run_dir: Path, n: int, ds) -> int:
    """Wait for the workers; when one fails, give the others time to notice, then kill."""
    failed: list[tuple[int, int]] = []
    deadline = None
    while True:
        codes = [p.poll() for p in procs]
        for i, c in enumerate(codes):
            if c not in (None, 0) and all(i != j for j, _ in failed):
                failed.append((i, c))
                if deadline is None:
                    deadline = time.monotonic() + ds.heartbeat_timeout_s + 10
                    print(f"[launcher] process {i} failed ({_describe_exit(c)}); the others have "
                          f"{ds.heartbeat_timeout_s + 10} s to stop", file=sys.stderr)
        if all(c is not None for c in codes):
            break
        if deadline is not None and time.monotonic() > deadline:
            for i, p in enumerate(procs):
                if p.poll() is None:
                    p.kill()
                    print(f"[launcher] killed process {i}, still running after process {failed[0][0]} failed",
                          file=sys.stderr)
            for p in procs:
                p.wait()
            deadline = None
        time.sleep(0.1)
    for t in pumps:
        t.join(timeout=5)
    if not failed:
        return 0
    first, code = failed[0]
    msg = f"process {first} of {n} failed ({_describe_exit(code)})"
    status = (run_dir / "status").read_text() if (run_dir / "status").exists() else ""
    if not status.startswith("failed"):
        atomic_write_text(run_dir / "status", f"failed: {msg}\n")
    print(f"error: {msg}; run folder {run_dir} marked failed", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None, *, experiments: str = "experiments") -> int:
    """Run the command line ``argv`` with the experiments of package ``experiments``."""
    prog = f"python -m {experiments}" if argv is not None or sys.argv[0].endswith("__main__.py") else "toolkit-run"
    args = _parser(prog).parse_args(argv)
    try:
        if args.processes is not None and not 1 <= args.processes <= MAX_PROCESSES:
            raise ConfigError(f"--processes must be between 1 and {MAX_PROCESSES}, got {args.processes}")
        plan = prepare(args.config, args.overrides, args.out, experiments=experiments,
                       allow_large_sweep=args.allow_large_sweep)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with interruptible():
            if args.processes is not None:
                return launch_local(plan, args.config, args.overrides, args.out, args.processes, quiet=args.quiet)
            return execute(plan, quiet=args.quiet, run_dir=args.run_dir)
    except Interrupted as exc:
        print(f"interrupted by {exc.name}: the run folder says so; exit {exc.exit_code}", file=sys.stderr)
        return exc.exit_code

