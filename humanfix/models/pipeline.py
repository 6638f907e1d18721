"""Load SD 1.5 components and the ControlNet branch.

``--model`` takes one of:

- ``tiny``: the built-in tiny random model (see :mod:`humanfix.models.tiny`);
- a local diffusers folder (``model_index.json`` with unet/, vae/, text_encoder/, tokenizer/, scheduler/);
- a single ``.safetensors`` or ``.ckpt`` file in the original SD layout, with ``model_config`` naming a
  local diffusers folder to take the configs from (diffusers' ``from_single_file`` would otherwise
  look a config up on the hub); ``.ckpt`` files load with ``weights_only=True``;
- a hub id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5``, from the local Hugging Face cache only,
  unless the user opts in to downloads with ``HF_HUB_OFFLINE=0`` (:func:`humanfix.models.weights.downloads_allowed`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humanfix.errors import UserError
from humanfix.models.tiny import TINY_NOTICE, ensure_tiny_model

log = logging.getLogger(__name__)

BRANCH_META = "humanfix.json"  # beside a saved branch's config.json or LoRA's weights: how it was trained
CONDITIONINGS = ("none", "pose", "mask")


@dataclass
class SDComponents:
    """The parts of an SD 1.5 pipeline that training and generation need."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any
    source: str  # what --model named, resolved ("tiny" becomes its folder)
    is_tiny: bool


def resolve_model(model: str) -> tuple[str, bool]:
    """``(location, is_tiny)``: ``tiny`` becomes its folder (written on first use); the rest is unchanged."""
    if model == "tiny":
        log.warning(TINY_NOTICE)
        return str(ensure_tiny_model()), True
    return model, False


def _offline_hint(model: str, err: Exception) -> UserError:
    from humanfix.models.weights import downloads_allowed

    how = "" if downloads_allowed() else ", or set HF_HUB_OFFLINE=0 to let humanfix download it"
    return UserError(
        f"cannot load the model {model!r}: it is not a local folder or file, and it is not in the Hugging Face "
        f"cache ({type(err).__name__}). Download it first (hf download {model}){how}, or pass a local folder"
    )


def load_components(model: str, model_config: str | Path | None = None, dtype: Any = None) -> SDComponents:
    """Load tokenizer, text encoder, VAE, UNet and a DDPM noise scheduler from ``model`` (see module doc)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    location, is_tiny = resolve_model(model)
    path = Path(location).expanduser()
    if path.is_file():
        return _load_single_file(path, model_config, dtype)
    if path.exists() and not (path / "model_index.json").is_file():
        raise UserError(f"{path} is not a diffusers pipeline folder: model_index.json not found")
    if not path.exists() and (location.startswith((".", "/", "~")) or location.count("/") != 1):
        raise UserError(f"model not found: {location} (a folder, a .safetensors/.ckpt file, a hub id, or 'tiny')")
    from humanfix.models.weights import downloads_allowed

    kw = {"torch_dtype": dtype} if dtype is not None else {}
    local = {"local_files_only": not downloads_allowed()}  # no network unless the user opted in
    try:
        tokenizer = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", **local)
        text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder", **kw, **local)
        vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **kw, **local)
        unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kw, **local)
        noise_scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler", **local)
    except OSError as e:
        if path.exists():
            raise UserError(f"cannot load the pipeline folder {path}: {str(e).splitlines()[0]}") from None
        raise _offline_hint(location, e) from None
    return SDComponents(tokenizer, text_encoder, vae, unet, noise_scheduler, str(location), is_tiny)


def _load_single_file(path: Path, model_config: str | Path | None, dtype: Any) -> SDComponents:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    if path.suffix not in (".safetensors", ".ckpt"):
        raise UserError(f"{path}: a single-file model must be .safetensors or .ckpt")
    if model_config is None:
        raise UserError(
            f"{path} is a single file: pass --model-config DIR, a local diffusers folder of the same architecture "
            "(e.g. an SD 1.5 folder without weights), so nothing is looked up on the hub"
        )
    config = Path(model_config).expanduser()
    if not (config / "model_index.json").is_file():
        raise UserError(f"--model-config {config}: not a diffusers pipeline folder (model_index.json not found)")
    kw = {"torch_dtype": dtype} if dtype is not None else {}
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, safety_checker=None, **kw
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"cannot load {path} with the configs in {config}: {str(e).splitlines()[0]}") from None
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    return SDComponents(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet, sched, str(path), False)


def make_controlnet(unet: Any, controlnet: str | Path | None = None) -> Any:
    """A fresh branch copied from ``unet`` (``ControlNetModel.from_unet``), or one loaded from a folder.

    A loaded branch must fit the base: same block channels, cross-attention width and latent channels.
    """
    from diffusers import ControlNetModel

    if controlnet is None:
        return ControlNetModel.from_unet(unet)
    folder = Path(controlnet).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"ControlNet branch not found: {folder} has no config.json")
    branch = ControlNetModel.from_pretrained(folder)
    check_branch_fits(branch.config, unet.config, folder)
    return branch


def check_branch_fits(branch_config: Any, unet_config: Any, where: Any) -> None:
    for key in ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block"):
        a, b = branch_config.get(key), unet_config.get(key)
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            raise UserError(
                f"the branch {where} does not fit this base model: {key} is {a} in the branch, {b} in the base"
            )


def read_branch_meta(folder: str | Path) -> dict[str, Any]:
    """What training saved beside a branch or a LoRA (adapter, base model, objective, …); ``{}`` for a foreign one."""
    meta = Path(folder) / BRANCH_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def recorded_base_model(folders: list[str | Path]) -> str | None:
    """The base model the adapters in ``folders`` were trained on (their ``humanfix.json``); None if none says.

    Adapters recording different bases are a :class:`UserError`: one run draws on one base (pass --model).
    """
    found = {str(f): read_branch_meta(f).get("base_model") for f in folders if (Path(f) / BRANCH_META).is_file()}
    bases = sorted({b for b in found.values() if b})
    if len(bases) > 1:
        listing = ", ".join(f"{f}: {b}" for f, b in found.items() if b)
        raise UserError(f"these adapters were trained on different base models ({listing}): pass --model")
    return bases[0] if bases else None


def write_branch_meta(folder: str | Path, **meta: Any) -> None:
    if meta.get("conditioning", "none") not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {meta['conditioning']!r}")
    (Path(folder) / BRANCH_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
