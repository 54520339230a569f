"""What an experiment receives besides its parameters: where to write, how to log and show progress."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from ._io import atomic_write_json, atomic_write_text, save_figure

__all__ = ["RunContext"]


@dataclasses.dataclass
class RunContext:
    """Handed to ``run(params, ctx)``.

    Attributes:
      out_dir: the run directory; every file an experiment writes goes through
        :meth:`path` so it stays inside it.
      log: a logger; its records are shown on stderr and saved to ``log.txt``.
      quiet: True when progress bars are hidden (stderr is not a terminal).
    """

    out_dir: Path
    log: logging.Logger
    quiet: bool = dataclasses.field(default_factory=lambda: not sys.stderr.isatty())

    def path(self, name: str) -> Path:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"output name {name!r} must stay inside the run folder")
        return self.out_dir / p

    def progress(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None):
        """A tqdm progress bar on stderr, silent when stderr is not a terminal."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=self.quiet, leave=False, file=sys.stderr)

    def save_figure(self, fig, name: str) -> Path:
        import matplotlib.pyplot as plt

        try:
            return save_figure(fig, self.path(name))
        finally:
            plt.close(fig)

    def save_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path(name), obj)

    def save_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)
