"""SIGINT and SIGTERM as an exception, so that a run can say it was interrupted."""
from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import threading

__all__ = ["Interrupted", "interruptible"]


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM while :func:`interruptible` is active.

    A ``BaseException`` (as ``KeyboardInterrupt``), so an experiment's ``except Exception``
    cannot swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM: the shell's 128 + signal number."""
        return 128 + self.signum

    def status(self) -> str:
        return f"interrupted: {self.name} at {self.at}\n"


@contextlib.contextmanager
def interruptible():
    """Within this block SIGINT and SIGTERM raise :class:`Interrupted` once; later signals
    are ignored, so the clean-up that follows the first one runs to the end. After an
    interruption they stay ignored when the block is left: the process is on its way out
    with the first signal's exit code, which a second signal (the default action) would
    otherwise replace by a kill."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit = []

    def handler(signum, frame):
        if hit:
            return
        hit.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if hit else h)
