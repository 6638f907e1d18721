"""The LoRA adapter: a peft LoRA on the frozen SD 1.5 UNet, saved for diffusers, ComfyUI and AUTOMATIC1111.

Training adds it as diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` does
(``UNet2DConditionModel.add_adapter(LoraConfig(r, lora_alpha, init_lora_weights="gaussian", target_modules))``,
then ``cast_training_params``: the LoRA trains in fp32 under any mixed precision). B starts at zero, so the
untrained LoRA adds nothing. Its output is ``(alpha / rank) · B A x``.

A LoRA folder (``OUTPUT/lora``) holds:

- ``pytorch_lora_weights.safetensors``: the diffusers layout, written by ``StableDiffusionPipeline.save_lora_weights``
  with the ``LoraConfig`` as its adapter metadata (so an alpha other than the rank loads right);
  ``pipe.load_lora_weights(folder)`` loads it;
- ``humanfix_lora.safetensors``: the same weights as kohya's single file (``lora_unet_…`` keys with ``.alpha``),
  for AUTOMATIC1111 (``models/Lora/``) and ComfyUI (``models/loras/``), converted by diffusers'
  ``convert_state_dict_to_kohya`` from the diffusers file; the training config sits in its metadata;
- ``humanfix.json``: how it was trained (adapter, base model, objective, rank, alpha, targets, steps, resolution).

A checkpoint holds the diffusers file alone (:func:`save_diffusers_lora`), read back bit-exactly by
:func:`load_diffusers_lora`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from humanfix.errors import UserError

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE: load_lora_weights' default
KOHYA_WEIGHTS = "humanfix_lora.safetensors"  # the single file for A1111 and ComfyUI
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
LORA_TARGETS = {
    "attn": ATTENTION,  # the attention projections (diffusers' default)
    "attn-ff-conv": (*ATTENTION, "ff.net.0.proj", "ff.net.2", "conv1", "conv2"),  # + feed-forward and resnet convs
}  # --lora-targets preset -> the UNet module names that get a LoRA


def add_lora(unet: Any, rank: int, alpha: float, targets: str) -> None:
    """Add a LoRA (adapter ``default``) to ``unet`` on the ``targets`` preset; its parameters alone train, in fp32."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS[targets])
    )
    unet.add_adapter(config)
    cast_training_params(unet, dtype=torch.float32)


def save_diffusers_lora(unet: Any, folder: str | Path) -> Path:
    """``folder/pytorch_lora_weights.safetensors``: ``unet``'s LoRA, diffusers layout, its LoraConfig as metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(folder),
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        safe_serialization=True,
    )
    return Path(folder) / LORA_WEIGHTS


def load_diffusers_lora(unet: Any, folder: str | Path) -> None:
    """Set ``unet``'s LoRA (made by :func:`add_lora` with the same settings) from ``folder``'s diffusers file."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    state, _ = StableDiffusionPipeline.lora_state_dict(str(folder))
    state = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()})
    differ = f"the LoRA in {folder} does not match this run's LoRA (rank, targets or base model differ)"
    try:
        result = set_peft_model_state_dict(unet, state, adapter_name="default")
    except RuntimeError as e:  # a shape mismatch: another rank or base
        raise UserError(f"{differ}: {str(e).splitlines()[-1].strip()}") from None
    mine = {k for k, _ in unet.named_parameters() if "lora_" in k}
    missing = mine & set(result.missing_keys)
    if result.unexpected_keys or missing:
        raise UserError(f"{differ}: {len(result.unexpected_keys)} unexpected and {len(missing)} missing tensors")


def write_kohya_lora(folder: str | Path, alpha: float, metadata: dict[str, str]) -> Path:
    """``folder/humanfix_lora.safetensors``: the folder's diffusers file converted to kohya's single-file format.

    diffusers' ``convert_state_dict_to_kohya`` does the key mapping (after ``convert_all_state_dict_to_peft``, as
    diffusers' own ``--output_kohya_format`` does); it sets every ``.alpha`` to the rank, so they are set to the
    LoRA's alpha here. ``metadata`` goes into the file's header (strings only).
    """
    import torch
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import load_file, save_file

    kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(load_file(Path(folder) / LORA_WEIGHTS)))
    kohya = {k: torch.tensor(float(alpha)) if k.endswith(".alpha") else v.contiguous() for k, v in kohya.items()}
    path = Path(folder) / KOHYA_WEIGHTS
    save_file(kohya, path, metadata=metadata)
    return path


def kohya_metadata(rank: int, alpha: float, steps: int, resolution: list[int], training_config: str) -> dict[str, str]:
    """The kohya ``ss_*`` header fields that A1111 shows and filters by, plus humanfix's resolved training config."""
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_steps": str(steps),
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_training_comment": "humanfix: a UNet LoRA trained under the mask-aware perceptual objective",
        "humanfix_training_config": training_config,  # the TOML of OUTPUT/training_config.toml
    }


def check_lora_fits(folder: str | Path, unet: Any) -> None:
    """Every layer of the LoRA in ``folder`` must exist in ``unet`` with the same width.

    Checked before loading, since diffusers' loader fails half-way (leaving the UNet modified) on a width
    mismatch and only warns about layers the base lacks.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft

    try:
        state, _ = StableDiffusionPipeline.lora_state_dict(str(folder))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the LoRA in {folder}: {str(e).splitlines()[0]}") from None
    peft = convert_unet_state_dict_to_peft(
        {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    )
    modules = dict(unet.named_modules())
    for key, tensor in peft.items():
        name, _, part = key.rpartition(".lora_")
        if not part.startswith(("A.", "B.")):
            continue
        base = getattr(modules.get(name), "weight", None)
        if base is None:
            raise UserError(f"the LoRA {folder} does not fit this base model: the base UNet has no layer {name}")
        side, axis = ("inputs", 1) if part.startswith("A.") else ("outputs", 0)
        if tensor.shape[axis] != base.shape[axis]:
            raise UserError(
                f"the LoRA {folder} does not fit this base model: {name} has {base.shape[axis]} {side} in the base, "
                f"{tensor.shape[axis]} in the LoRA"
            )
