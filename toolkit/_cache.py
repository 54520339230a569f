"""JAX's persistent compilation cache, turned on in one place."""
from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["enable_compilation_cache", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$TOOLKIT_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/toolkit-jax``, else
    ``~/.cache/toolkit-jax``: per user, outside any project folder."""
    if os.environ.get("TOOLKIT_JAX_CACHE_DIR"):
        return Path(os.environ["TOOLKIT_JAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "toolkit-jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, *, min_compile_time_secs: float = 0.0) -> Path:
    """Turn on JAX's persistent compilation cache (it is off unless this is called).

    Executables compiled by this and later processes are kept on disk, so a fresh
    process that calls the same functions on the same shapes loads them instead of
    compiling again. The runner (``python -m experiments``), the tests and the
    benchmarks call this; a library user opts in with one line.

    Args:
      path: cache folder; default :func:`default_cache_dir`.
      min_compile_time_secs: only compilations at least this long are stored.

    Returns:
      The cache folder (created if missing).

    Example (it changes JAX's global configuration, so it is not run as a doctest; the
    test suite runs it in a subprocess):
      >>> import toolkit
      >>> toolkit.enable_compilation_cache()  # doctest: +SKIP
      PosixPath('/home/me/.cache/toolkit-jax')
    """
    folder = Path(path) if path is not None else default_cache_dir()
    folder = folder.expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
