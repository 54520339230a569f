"""Config loading, dotted overrides, sweeps and type checking against dataclasses.

A config is a YAML mapping. Reserved top-level keys (see :class:`RunnerSettings`):
``experiment`` (a registered name, never an import path), ``name``, ``x64`` and
``sweep``; every other key is a parameter of the experiment and is checked against
the experiment's ``Params`` dataclass (nested dataclasses give dotted keys).
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import re
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Union

import yaml

__all__ = [
    "ConfigError",
    "RunnerSettings",
    "output_file",
    "load_yaml",
    "parse_override",
    "apply_override",
    "expand_sweep",
    "build_params",
    "require",
]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """A problem with a config or the command line, found before any work starts."""


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """``distributed:`` block: run as one process of a ``jax.distributed`` job.

    ``enabled``: call ``jax.distributed.initialize`` before the experiment (set by
    ``--processes N`` for local workers; on a cluster the coordinator, process count
    and id come from ``COORDINATOR_ADDRESS`` / ``NUM_PROCESSES`` / ``PROCESS_ID`` or
    from JAX's own detection, e.g. SLURM). ``init_timeout_s``: how long processes wait
    for each other at start-up. ``heartbeat_timeout_s``: after how long without a
    heartbeat a process counts as dead and the job fails.
    """

    enabled: bool = False
    init_timeout_s: int = 120
    heartbeat_timeout_s: int = 30


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
    """Top-level keys read by the runner itself rather than by the experiment."""

    experiment: str
    name: str = ""
    x64: bool = False
    sweep: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    distributed: DistributedSettings = dataclasses.field(default_factory=DistributedSettings)


RESERVED = tuple(f.name for f in dataclasses.fields(RunnerSettings))


def output_file(default: str) -> Any:
    """A dataclass field naming a file inside the run directory.

    Such values must be relative paths without ``..``: a config can never make a run
    write outside its own output folder.
    """
    return dataclasses.field(default=default, metadata={"output_file": True})


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config with ``yaml.safe_load`` (no tags, nothing is executed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def _split_top_level_commas(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml_scalar(text: str, key: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {key}={text!r}: not a valid YAML value") from None
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; on the command line it is a number.
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        value = float(value)
    return value


def parse_override(arg: str) -> tuple[str, list[Any] | None, Any]:
    """Parse ``key=value`` (or ``key=a,b,c`` for a sweep).

    Returns ``(dotted_key, sweep_values_or_None, value)``. Values are YAML scalars
    (``8`` is an int, ``1e-3`` a float, ``[1, 2]`` a list); a comma outside brackets
    turns the override into a sweep over the listed values.
    """
    if "=" not in arg:
        raise ConfigError(f"override {arg!r} must look like key=value")
    key, text = arg.split("=", 1)
    key = key.strip()
    if not key or not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", p) for p in key.split(".")):
        raise ConfigError(f"override {arg!r}: {key!r} is not a dotted key like gmm.n_components")
    parts = _split_top_level_commas(text)
    if len(parts) > 1:
        values = [_yaml_scalar(p.strip(), key) for p in parts]
        return key, values, None
    return key, None, _yaml_scalar(text, key)


def apply_override(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``cfg`` with the dotted ``key`` set to ``value``."""
    out = dict(cfg)
    head, _, rest = key.partition(".")
    if not rest:
        out[head] = value
        return out
    sub = out.get(head, {})
    if sub is None:
        sub = {}
    if not isinstance(sub, dict):
        raise ConfigError(f"override {key}: {head!r} is a value, not a section")
    out[head] = apply_override(sub, rest, value)
    return out


def expand_sweep(cfg: dict[str, Any], sweep: dict[str, list[Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Cartesian product of the sweep: ``[(point, cfg_with_point_applied), ...]``."""
    if not sweep:
        return [({}, cfg)]
    keys = list(sweep)
    for k in keys:
        if not isinstance(sweep[k], list) or not sweep[k]:
            raise ConfigError(f"sweep.{k} must be a non-empty list of values, got {sweep[k]!r}")
    grid = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, combo))
        c = cfg
        for k, v in point.items():
            c = apply_override(c, k, v)
        grid.append((point, c))
    return grid


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _check_output_file(value: str, where: str) -> None:
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or value.startswith("~") or not value.strip():
        raise ConfigError(
            f"{where}={value!r}: output file names must be relative paths inside the run folder, without '..'"
        )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int → float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-6" (no dot) as a string; accept it where a float is declared.
        if isinstance(value, str):
            try:
                x = float(value)
            except ValueError:
                pass
            else:
                if not math.isnan(x):
                    return x
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            elem = args[0] if args else Any
            items = [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if isinstance(value, dict):
            return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    else:
        raise TypeError(f"unsupported parameter annotation {tp!r} at {where}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    full = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    prefix = f"{where}." if where else ""
    hint = (f"; did you mean {prefix + close[0]!r}?" if close
            else f"; known keys: {', '.join(sorted(known)) or '(none)'}")
    return ConfigError(f"unknown key {full!r}{hint}")


def _build(cls: type, data: Any, where: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), where)
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            value = _coerce(data[name], hints[name], path)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], {}, path)
        else:
            raise ConfigError(f"missing required key {path!r} ({_type_name(hints[name])})")
        if f.metadata.get("output_file") and isinstance(value, str):
            _check_output_file(value, path)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # the dataclass's own checks of values (__post_init__)
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None


def require(params: Any, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """For an experiment's ``Params.__post_init__``: ValueError (a config error, before
    the run starts) unless the named fields are > 0 / >= 0."""
    for names, ok, what in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            value = getattr(params, name)
            if not ok(value):
                raise ValueError(f"{name} must be {what}, got {value!r}")


def build_params(cls: type, data: dict[str, Any]) -> Any:
    """Build the experiment's parameter dataclass from config data, checking every key.

    A ``ValueError`` from the dataclass itself (its ``__post_init__`` checks of values,
    see :func:`require`) becomes a :class:`ConfigError`, so bad values stop the run
    before it starts."""
    return _build(cls, data)


def build_settings(data: dict[str, Any], default_name: str) -> RunnerSettings:
    reserved = {k: v for k, v in data.items() if k in RESERVED}
    if "experiment" not in reserved:
        raise ConfigError("config must name its experiment, e.g. `experiment: quickstart`")
    settings = _build(RunnerSettings, reserved)
    name = settings.name or default_name
    if not _SAFE_NAME.match(name):
        raise ConfigError(f"name={name!r}: use letters, digits, '_', '-', '.' only, starting with a letter or "
                          "digit (names starting with '_' or '.' are refused)")
    return dataclasses.replace(settings, name=name)
