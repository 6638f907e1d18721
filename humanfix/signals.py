"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (a cluster's pre-emption, ``kill``).

While :func:`graceful_stop` is active, the first SIGINT or SIGTERM only raises a flag: the training loop
finishes the update in flight, writes a checkpoint, says where it is and how to resume, and raises
:class:`Interrupted`, which the CLI turns into exit code 130 (SIGINT) or 143 (SIGTERM), as a shell reports a
process killed by that signal. A second signal aborts at once (the default action of that signal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):  # noqa: N818 (what happened, not an error)
    """A run stopped by a signal after saving its work; ``code`` is the exit status (128 + the signal)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


class StopFlag:
    """Set by the first signal: ``signum`` (0 until then)."""

    def __init__(self) -> None:
        self.signum = 0

    def __bool__(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Catch SIGINT/SIGTERM for the ``with`` block (main thread only; elsewhere the flag never rises)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        if flag:  # the second signal: abort now, as that signal does by default
            for s in SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        flag.signum = signum
        print(
            f"\nhumanfix: {signal.Signals(signum).name} received: finishing this update and writing a checkpoint "
            "(send it again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
