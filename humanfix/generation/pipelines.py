"""Diffusers pipelines over one set of loaded SD components, the sampler, device, dtype and the
conditioning image.

Plain SD is ``StableDiffusionPipeline``; SD plus a branch is ``StableDiffusionControlNetPipeline``. All of a
run's pipelines share the same text encoder, VAE and UNet objects, so ``--compare`` loads the base once.
Attention is diffusers' default, PyTorch SDPA (``AttnProcessor2_0``). No safety checker runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from humanfix.devices import resolve_device  # noqa: F401 - part of this module's API
from humanfix.errors import UserError

log = logging.getLogger(__name__)

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}  # --scheduler name -> diffusers class, each deterministic given the starting noise
DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``auto``: float16 on CUDA, float32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def make_scheduler(name: str, components: Any) -> Any:
    """The ``name`` sampler on the model's own scheduler config as saved in its folder, as diffusers'
    ``Cls.from_config(pipe.scheduler.config)`` would build it (single files: the loaded config)."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    folder = Path(components.source)
    if (folder / "scheduler").is_dir():
        return cls.from_config(cls.load_config(str(folder), subfolder="scheduler"))
    return cls.from_config(components.noise_scheduler.config)


def build_pipeline(components: Any, scheduler: Any, branch: Any = None) -> Any:
    """A pipeline on ``components`` (shared, not copied); with ``branch`` a ControlNet pipeline."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

    parts = dict(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe = (
        StableDiffusionPipeline(**parts)
        if branch is None
        else StableDiffusionControlNetPipeline(controlnet=branch, **parts)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def blank_condition(height: int, width: int) -> Image.Image:
    """The all-zero (black) RGB conditioning image a branch trained with ``conditioning="none"`` expects."""
    return Image.new("RGB", (width, height), (0, 0, 0))


def load_condition(path: str | Path) -> Image.Image:
    """A pose or mask conditioning image as RGB (the pipeline resizes it to the output size)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"condition image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise UserError(f"cannot read the condition image {path}: {e}") from None
