"""Atomic file output: every file appears whole or not at all (temp file + rename)."""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "to_jsonable", "save_figure", "file_mode",
           "flatten_metrics"]


def file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file: 0o666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The bytes go to a temporary file in the same directory (same filesystem, so
    ``os.replace`` is atomic), are flushed and fsynced, then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; run files follow the user's umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / jax scalars and arrays, tuples and paths to plain JSON values.

    Non-finite floats become ``None`` so the output stays standard JSON.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics with nested dicts flattened to dotted keys (``{"gmm": {"ll": 1}}``
    -> ``{"gmm.ll": 1}``); lists and arrays are left out (they stay in metrics.json).

    >>> flatten_metrics({"a": 1, "gmm": {"ll": -2.5, "means": [1, 2]}, "ok": True})
    {'a': 1, 'gmm.ll': -2.5, 'ok': True}
    """
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        elif v is None or isinstance(v, (int, float, str, bool)):
            out[key] = v
    return out


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    # Serialise fully first: a value that cannot be encoded leaves no file at all.
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
