"""The experiment runner: overrides, typing, sweeps, atomic outputs, refused paths."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import main
from toolkit.runner import _io
from toolkit.runner.config import ConfigError, expand_sweep, parse_override

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_cfg(d: Path, text: str, name: str = "exp.yaml") -> str:
    (d / name).write_text(text)
    return name


def run_dirs(d: Path, name: str = "exp") -> list[Path]:
    return sorted(p for p in (d / "runs" / name).iterdir() if p.is_dir())


@pytest.mark.parametrize(
    "arg, key, value",
    [
        ("n=8", "n", 8),
        ("inner.scale=1e-3", "inner.scale", 1e-3),
        ("inner.scale=2.5", "inner.scale", 2.5),
        ("fail=true", "fail", True),
        ("mode=mean", "mode", "mean"),
        ("values=[1, 2, 3]", "values", [1, 2, 3]),
        ("inner.label=", "inner.label", ""),
    ],
)
def test_parse_override_yaml_scalars(arg, key, value):
    k, sweep, v = parse_override(arg)
    assert (k, sweep, v) == (key, None, value)


def test_parse_override_comma_is_sweep_but_brackets_are_not():
    assert parse_override("n=1,2,4") == ("n", [1, 2, 4], None)
    assert parse_override("values=[1,2]")[1] is None


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", "1x=2"])
def test_parse_override_rejects_malformed(bad):
    with pytest.raises(ConfigError):
        parse_override(bad)


def test_expand_sweep_is_cartesian_product():
    grid = expand_sweep({"a": 1}, {"n": [1, 2], "inner.scale": [0.5, 1.0, 2.0]})
    assert len(grid) == 6
    assert grid[0] == ({"n": 1, "inner.scale": 0.5}, {"a": 1, "n": 1, "inner": {"scale": 0.5}})


def test_run_writes_resolved_config_metrics_log_status_and_plot(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\nn: 4\ninner:\n  scale: 2\n")
    assert main([cfg, "inner.label=hello", "plot=true", "--quiet"]) == 0
    (d,) = run_dirs(workdir)
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["total"] == pytest.approx(2 * (0 + 1 + 2 + 3))
    assert metrics["label"] == "hello"
    assert (d / "status").read_text().strip() == "ok"
    assert "inner:\n  scale: 2.0\n  label: hello" in (d / "config.yaml").read_text()
    assert (d / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "selftest sum" in (d / "log.txt").read_text()
    assert not list(d.glob(".*.tmp"))


@pytest.mark.parametrize(
    "cfg_text, args, message",
    [
        ("experiment: selftest\n", ["inner.scal=3"], "unknown key 'inner.scal'; did you mean 'inner.scale'?"),
        ("experiment: selftest\nnn: 3\n", [], "unknown key 'nn'; did you mean 'n'?"),
        ("experiment: selftest\n", ["n=2.5"], "n: expected int, got 2.5"),
        ("experiment: selftest\n", ["mode=median"], "mode: expected one of 'sum', 'mean'"),
        ("experiment: selftest\n", ["fail=3"], "fail: expected bool"),
        ("experiment: selfest\n", [], "unknown experiment 'selfest'; did you mean 'selftest'?"),
        ("experiment: os.system\n", [], "unknown experiment 'os.system'"),
        ("n: 3\n", [], "config must name its experiment"),
        ("experiment: selftest\nn: [1, 2\n", [], "invalid YAML"),
        ("- just\n- a list\n", [], "must be a mapping"),
        ("experiment: selftest\n", ["plot_name=../escape.png"], "without '..'"),
        ("experiment: selftest\n", ["plot_name=/tmp/abs.png"], "relative paths"),
        ("experiment: selftest\nsweep:\n  n: []\n", [], "sweep.n must be a non-empty list"),
        ("experiment: selftest\n", ["--out", "../elsewhere"], "outside the current directory"),
        ("experiment: selftest\n", ["--out", "/"], "outside the current directory"),
        ("experiment: selftest\n", ["--out", "exp.yaml"], "is an existing file, not a folder"),
        ("experiment: selftest\n", ["n=-3"], "n must be >= 0, got -3"),
        ("experiment: quickstart\n", ["gmm.n_components=0"], "gmm.n_components must be > 0, got 0"),
        ("experiment: quickstart\n", ["conic.noise=-1"], "conic.noise must be >= 0, got -1"),
        ("experiment: selftest\n", ["n=" + ",".join(map(str, range(1001)))], "more than the cap of 1000"),
        ("experiment: selftest\nsweep:\n  n: [" + ", ".join(map(str, range(40))) + "]\n  mode: [sum, mean]\n"
         "  fail: [true, false]\n  plot: [true, false]\n  inner.scale: [1, 2, 3, 4]\n", [],
         "the sweep has 1280 runs, more than the cap of 1000; pass --allow-large-sweep"),
        ("experiment: selftest\n", ["--processes", "65"], "--processes must be between 1 and 64, got 65"),
        ("experiment: selftest\n", ["--processes", "0"], "--processes must be between 1 and 64, got 0"),
        ("experiment: selftest\nname: _hidden\n", [], "name='_hidden'"),
        ("experiment: selftest\nname: .hidden\n", [], "name='.hidden'"),
    ],
)
def test_config_errors_exit_2_with_one_clear_line_and_no_output(workdir, capsys, cfg_text, args, message):
    cfg = write_cfg(workdir, cfg_text)
    assert main([cfg, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not (workdir / "runs").exists()


def test_missing_config_file(workdir, capsys):
    assert main(["does-not-exist.yaml"]) == 2
    assert "config file not found: does-not-exist.yaml" in capsys.readouterr().err


def test_yaml_tags_are_never_executed(workdir, capsys):
    marker = workdir / "pwned"
    cfg = write_cfg(workdir, f"experiment: selftest\nn: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main([cfg]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_sweep_from_cli_and_block_runs_the_grid_with_summary(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\nsweep:\n  mode: [sum, mean]\n")
    assert main([cfg, "n=2,3", "--quiet"]) == 0
    (base,) = run_dirs(workdir)
    subdirs = sorted(p for p in base.iterdir() if p.is_dir())
    assert len(subdirs) == 4
    rows = json.loads((base / "summary.json").read_text())
    got = {(r["mode"], r["n"]): r["total"] for r in rows}
    assert got == {("sum", 2): 1.0, ("mean", 2): 0.5, ("sum", 3): 3.0, ("mean", 3): 1.0}
    assert "| mode | n |" in (base / "summary.md").read_text()
    for d in subdirs:
        assert (d / "metrics.json").is_file()


def test_sweep_values_are_type_checked_before_any_run(workdir, capsys):
    cfg = write_cfg(workdir, "experiment: selftest\n")
    assert main([cfg, "n=1,two"]) == 2
    assert "n: expected int, got 'two'" in capsys.readouterr().err
    assert not (workdir / "runs").exists()


def test_failed_run_leaves_status_and_no_metrics(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\nplot: true\nfail: true\n")
    assert main([cfg, "--quiet"]) == 1
    (d,) = run_dirs(workdir)
    assert (d / "status").read_text().startswith("failed: RuntimeError: selftest asked to fail")
    assert not (d / "metrics.json").exists()
    assert "Traceback" in (d / "log.txt").read_text()
    assert (d / "plot.png").exists()  # outputs written before the failure are whole files


def test_atomic_write_leaves_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "metrics.json"
    _io.atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        _io.atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_write_cleans_up_when_write_is_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(OSError):
        _io.atomic_write_text(target, "x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_to_jsonable_converts_numpy_and_nonfinite():
    import numpy as np

    out = _io.to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (1, np.int64(2))})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [1, 2]}


def test_console_module_entry_point(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "experiments", cfg, "n=3", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "experiments", cfg, "bogus=1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "unknown key 'bogus'" in proc.stderr


@pytest.mark.slow
def test_make_run_and_make_test_from_nothing(tmp_path):
    """`make run` on a fresh copy creates .venv, installs and runs the quickstart."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        dst = tmp_path / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst)
    proc = subprocess.run(["make", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / ".venv" / "bin" / "python").exists()
    (d,) = list((tmp_path / "runs" / "quickstart").iterdir())
    assert (d / "status").read_text().strip() == "ok"


def test_quickstart_config_runs_and_reports_every_module(workdir):
    """The config `make run` runs must always pass."""
    assert main([str(ROOT / "configs" / "quickstart.yaml"), "--quiet"]) == 0
    (d,) = run_dirs(workdir, "quickstart")
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["so3"]["angle_error_rad"] < 5e-3 and metrics["so3"]["converged"]
    assert metrics["autodiff"]["gradcheck_ok"]
    assert metrics["gmm"]["finite"] and metrics["gmm"]["converged"]
    assert metrics["gmm"]["rank_deficient_components"] == 4  # every component lies in the plane z = 0
    assert metrics["conic"]["hyperbola"]["ok"] and metrics["conic"]["hyperbola"]["abs_cos_to_truth"] > 0.999
    assert metrics["conic"]["ellipse_geometric"]["geometry"]["kind"] == 0
    np.testing.assert_allclose(metrics["autodiff"]["vjp"], [20, 20, 20, 20])
    assert (d / "quickstart.png").is_file()


@pytest.mark.parametrize("cfg", sorted((ROOT / "configs").glob("**/*.yaml")), ids=lambda p: p.stem)
def test_every_config_is_valid(cfg):
    """Every config type-checks (running the benchmarks is `make bench`, not a test)."""
    from toolkit.runner import prepare

    plan = prepare(str(cfg), [], "runs")
    assert plan.points


def test_installed_console_script_and_package_list(workdir):
    """`toolkit-run` (the installed name of experiments/ is toolkit_experiments) runs a
    config, and pyproject's explicit package list names every package folder."""
    import shutil as _sh
    import tomllib

    exe = _sh.which("toolkit-run", path=str(Path(sys.executable).parent))
    assert exe, "toolkit-run is not installed beside this Python"
    cfg = write_cfg(workdir, "experiment: selftest\n")
    proc = subprocess.run([exe, cfg, "n=3", "--quiet", "--out", str(Path(workdir) / "out")], cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for init in list((ROOT / "toolkit").rglob("__init__.py")) + list((ROOT / "experiments").rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT).parts
        name = ".".join(("toolkit_experiments",) + rel[1:]) if rel[0] == "experiments" else ".".join(rel)
        found.add(name)
    assert found == listed


def test_config_not_utf8_or_named_with_underscore_exits_2(workdir, capsys):
    (workdir / "latin1.yaml").write_bytes("experiment: selftest\nname: caf\xe9\n".encode("latin-1"))
    assert main(["latin1.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config latin1.yaml is not UTF-8 text") and "\n" not in err
    (workdir / "_private.yaml").write_text("experiment: selftest\n")
    assert main(["_private.yaml"]) == 2
    assert "name='_private'" in capsys.readouterr().err
    assert not (workdir / "runs").exists()


def test_run_files_follow_the_umask(workdir):
    old = os.umask(0o022)
    try:
        cfg = write_cfg(workdir, "experiment: selftest\n")
        assert main([cfg, "--quiet"]) == 0
    finally:
        os.umask(old)
    (d,) = run_dirs(workdir, "exp")
    for name in ("config.yaml", "metrics.json", "status", "log.txt"):
        assert (d / name).stat().st_mode & 0o777 == 0o644, name


def test_sweep_summary_flattens_nested_metrics(workdir):
    from toolkit.runner._io import flatten_metrics

    assert flatten_metrics({"a": {"b": {"c": 1}}, "l": [1]}) == {"a.b.c": 1}
    cfg = write_cfg(workdir, "experiment: quickstart\nsweep:\n  so3.seed: [1]\n")
    assert main([cfg, "plot=false", "--quiet"]) == 0
    (d,) = run_dirs(workdir, "exp")
    rows = json.loads((d / "summary.json").read_text())
    assert len(rows) == 1 and "so3.angle_error_rad" in rows[0] and "gmm.converged" in rows[0]


@pytest.mark.parametrize("first, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_marks_the_run_interrupted_and_keeps_the_log(workdir, first, code):
    """SIGINT or SIGTERM during a run (then the other one, while it cleans up): the status
    says interrupted with the reason and time, the log holds what was printed, the exit
    code is 130/143, and no metrics are half-written."""
    cfg = write_cfg(workdir, "experiment: selftest\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLKIT_JAX_CACHE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments", cfg, "sleep_s=60", "--quiet"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    log = None
    while time.monotonic() < deadline:
        logs = list((workdir / "runs" / "exp").glob("*/log.txt")) if (workdir / "runs").exists() else []
        if logs and "sleeping" in logs[0].read_text():
            log = logs[0]
            break
        time.sleep(0.2)
    assert log is not None, "the run never started"
    proc.send_signal(first)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM if first == signal.SIGINT else signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    status = (log.parent / "status").read_text()
    assert status.startswith(f"interrupted: {signal.Signals(first).name} at 20"), status
    text = log.read_text()
    assert "selftest sum = 45" in text and "selftest: sleeping 60.0 s" in text and "interrupted by" in text
    assert not (log.parent / "metrics.json").exists()
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted by")


def test_signal_during_a_sweep_lists_finished_and_interrupted_members(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLKIT_JAX_CACHE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments", cfg, "sleep_s=0,60,0", "--quiet"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = list((workdir / "runs" / "exp").glob("*/001-*/log.txt")) if (workdir / "runs").exists() else []
        if logs and "sleeping" in logs[0].read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    (d,) = run_dirs(workdir, "exp")
    rows = json.loads((d / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "interrupted", "not started"]
    assert (d / "status").read_text().startswith("interrupted: SIGTERM")


@pytest.mark.slow  # worker processes that each start JAX and compile
def test_signal_stops_every_worker_of_processes(workdir):
    cfg = write_cfg(workdir, "experiment: selftest\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLKIT_JAX_CACHE": "0", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments", cfg, "sleep_s=120", "--processes", "2", "--quiet"],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    run = None
    while time.monotonic() < deadline and run is None:
        for log in (workdir / "runs" / "exp").glob("*/process-1.log") if (workdir / "runs").exists() else []:
            if "sleeping" in log.read_text() and "sleeping" in (log.parent / "process-0.log").read_text():
                run = log.parent
        time.sleep(0.3)
    assert run is not None, "the workers never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert (run / "status").read_text().startswith("interrupted: SIGINT")
    left = subprocess.run(["pgrep", "-f", "exp.yaml sleep_s=120 --out runs"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a worker outlived the launcher"
