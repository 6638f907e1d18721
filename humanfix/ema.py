"""``train --use-ema``: an exponential moving average of the trained weights (the branch's, or the LoRA's).

diffusers' ``EMAModel`` (the one its training scripts use) holds a shadow copy of the trainable parameters on
their device and moves it towards them after every optimizer update with decay ``min(decay, (1+s)/(10+s))`` at
update ``s`` (so early updates are not averaged with the random start). It is registered with accelerate, so
checkpoints hold it and ``--resume`` continues it. At the end the averaged weights are saved beside the adapter
(``OUTPUT/controlnet-ema/`` or ``OUTPUT/lora-ema/``, the same layout and files), the trained ones unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class EMA:
    """The average of ``params`` (a list of trainable parameters); ``step`` after each applied update."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self.params = params
        self.model = EMAModel(params, decay=decay, foreach=True)  # one fused op per update, no host sync

    def step(self) -> None:
        self.model.step(self.params)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the trained ones inside the block; the trained ones restored after."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)


def ema_folder(adapter: str) -> str:
    """Where the averaged adapter goes, beside ``OUTPUT/<adapter>``."""
    return f"{adapter}-ema"


def register(accelerator: Any, ema: EMA) -> None:
    """Checkpoints hold the average (accelerate's custom objects); resume continues it."""
    accelerator.register_for_checkpointing(ema.model)
