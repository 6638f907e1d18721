"""What ``accelerate launch`` (and the ``accelerate config`` file it reads) chose for this run, and one line saying it.

accelerate's own rule: an explicit setting wins; otherwise ``accelerate launch`` hands its flags and its config
file's values to the processes through environment variables (``ACCELERATE_MIXED_PRECISION``,
``ACCELERATE_DYNAMO_BACKEND``, ``WORLD_SIZE`` …), which ``Accelerator`` reads when given ``None``. A plain
``humanfix train`` (no launcher) gets accelerate's defaults: fp32 ("no"), one process, no dynamo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LaunchSettings:
    """The settings a run actually uses, and where its precision came from."""

    mixed_precision: str  # "no", "fp16" or "bf16", as the Accelerator resolved it
    precision_source: str  # "--mixed-precision", "accelerate launch" or "default"
    num_processes: int
    dynamo_backend: str  # "no" unless the launcher asked accelerate to compile the prepared model
    distributed_type: str

    def describe(self) -> str:
        """One line for the start of a run: ``precision bf16 (from accelerate launch), 2 processes (MULTI_GPU)``."""
        parts = [f"precision {self.mixed_precision} (from {self.precision_source})"]
        kind = "" if self.distributed_type == "NO" else f" ({self.distributed_type})"
        parts.append(f"{self.num_processes} process{'es' if self.num_processes > 1 else ''}{kind}")
        if self.dynamo_backend != "no":
            parts.append(f"dynamo {self.dynamo_backend} (from accelerate launch)")
        return ", ".join(parts)


def precision_source(explicit: str | None) -> str:
    """Where the precision comes from when ``explicit`` (the run's own setting) is what it is."""
    if explicit is not None:
        return "--mixed-precision"
    return "accelerate launch" if os.environ.get("ACCELERATE_MIXED_PRECISION") else "default"


def launch_settings(accelerator: Any, explicit_precision: str | None) -> LaunchSettings:
    """What ``accelerator`` (built with ``mixed_precision=explicit_precision``) resolved."""
    plugin = getattr(accelerator.state, "dynamo_plugin", None)
    backend = getattr(plugin, "backend", None)
    backend = str(getattr(backend, "value", backend) or "no").lower()
    distributed = accelerator.distributed_type
    return LaunchSettings(
        mixed_precision=accelerator.mixed_precision,
        precision_source=precision_source(explicit_precision),
        num_processes=accelerator.num_processes,
        dynamo_backend=backend,
        distributed_type=str(getattr(distributed, "value", distributed)),
    )
