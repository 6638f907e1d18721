"""Progress for batch jobs: when stdout is not a terminal (nohup, SLURM, a pipe), a plain line every N updates.

The rich progress bar draws only on a terminal; a redirected run would otherwise print nothing between its start
and its end. Each line: the step, the loss and its terms, images/s, elapsed time and the ETA, like accelerate's
logger. ``OUTPUT/metrics.jsonl`` holds every update whatever this prints.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def clock(seconds: float) -> str:
    """``3725.2`` -> ``1:02:05``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class ProgressLines:
    """``update(line)`` with each logged update (a metrics.jsonl line); prints every ``every`` updates and the last.

    ``every`` 0 or a terminal on ``stream`` (where the bar draws): prints nothing.
    """

    def __init__(self, total: int, start: int, every: int, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.start, self.every = total, start, every
        self.stream = stream or sys.stdout
        self.enabled = enabled and every > 0 and not is_terminal(self.stream)
        self.t0 = time.perf_counter()

    def update(self, line: dict[str, Any]) -> str | None:
        step = line["step"]
        if not self.enabled or (step % self.every and step < self.total):
            return None
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        eta = (self.total - step) * elapsed / done if done > 0 else math.nan
        terms = ", ".join(
            f"{key[5:]} {value:.4f}"
            for key, value in line.items()
            if key.startswith("loss_") and isinstance(value, float) and math.isfinite(value)
        )
        text = (
            f"step {step}/{self.total} · loss {line['loss']:.4f} ({terms}) · {line['images_per_s']:.2f} img/s"
            f" · elapsed {clock(elapsed)} · ETA {clock(eta)}"
        )
        print(text, file=self.stream, flush=True)
        return text
