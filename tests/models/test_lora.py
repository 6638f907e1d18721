"""The LoRA adapter's files: plain diffusers loads both formats with the same pixels; checkpoints round-trip;
a LoRA that does not fit the base is one clear error."""

import tomllib

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from humanfix.errors import UserError
from humanfix.models.lora import (
    KOHYA_WEIGHTS,
    LORA_WEIGHTS,
    add_lora,
    check_lora_fits,
    load_diffusers_lora,
    save_diffusers_lora,
)
from humanfix.models.pipeline import load_components
from tests.conftest import write_lora


def _draw(tiny_model, unet=None, lora=None, weight_name=None) -> np.ndarray:
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if unet is not None:
        pipe.unet = unet
    if lora is not None:
        pipe.load_lora_weights(lora, weight_name=weight_name)
    g = torch.Generator().manual_seed(0)
    image = pipe("a person", num_inference_steps=2, height=64, width=64, generator=g, output_type="np").images[0]
    return image


def test_both_files_load_in_plain_diffusers_and_draw_what_the_trained_unet_draws(tiny_model, tmp_path):
    """alpha (8) ≠ rank (4) and conv/feed-forward targets: the scale and every layer survive both formats."""
    unet = load_components(str(tiny_model)).unet
    folder = write_lora(tmp_path / "lora", unet, rank=4, alpha=8.0, targets="attn-ff-conv")
    live = _draw(tiny_model, unet=unet.eval())
    diffusers_file = _draw(tiny_model, lora=folder)  # load_lora_weights' default file name
    kohya_file = _draw(tiny_model, lora=folder, weight_name=KOHYA_WEIGHTS)
    base = _draw(tiny_model)
    assert np.abs(live - diffusers_file).max() <= 1e-5
    assert np.abs(diffusers_file - kohya_file).max() <= 1e-5
    assert np.abs(base - diffusers_file).max() > 0.05  # the LoRA changes the image


def test_kohya_file_keys_alpha_and_metadata(tiny_lora):
    with safe_open(tiny_lora / KOHYA_WEIGHTS, "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alphas = {f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert all(k.startswith("lora_unet_") for k in keys)
    assert any("_resnets_" in k and "_conv1." in k for k in keys) and any("_ff_net_0_proj." in k for k in keys)
    assert alphas == {8.0}  # the LoRA's alpha, not the rank diffusers' converter writes
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_base_model_version"]) == ("4", "8.0", "sd_v1")
    assert tomllib.loads(meta["humanfix_training_config"])["model"] == "tiny"


def test_checkpoint_file_round_trips_exactly(tiny_model, tiny_lora, tmp_path):
    fresh = load_components(str(tiny_model)).unet
    add_lora(fresh, 4, 8.0, "attn-ff-conv")
    load_diffusers_lora(fresh, tiny_lora)
    save_diffusers_lora(fresh, tmp_path)
    a, b = load_file(tmp_path / LORA_WEIGHTS), load_file(tiny_lora / LORA_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = load_components(str(tiny_model)).unet
    add_lora(other, 4, 8.0, "attn")  # other targets: the checkpoint is not this run's
    with pytest.raises(UserError, match="does not match this run's LoRA"):
        load_diffusers_lora(other, tiny_lora)
    wider = load_components(str(tiny_model)).unet
    add_lora(wider, 8, 8.0, "attn-ff-conv")  # another rank
    with pytest.raises(UserError, match="does not match this run's LoRA.*size mismatch"):
        load_diffusers_lora(wider, tiny_lora)


def test_a_lora_that_does_not_fit_the_base_is_refused_before_loading(tiny_model, tiny_lora, tmp_path):
    from diffusers import UNet2DConditionModel

    base = load_components(str(tiny_model)).unet
    check_lora_fits(tiny_lora, base)
    narrow = UNet2DConditionModel(  # the tiny UNet with another cross-attention width
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    with pytest.raises(UserError, match=r"attn2.to_k has 32 inputs in the base, 16 in the LoRA"):
        check_lora_fits(write_lora(tmp_path / "narrow", narrow, targets="attn"), base)
    deeper = UNet2DConditionModel(  # a cross-attention block where the tiny UNet has none
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
    )  # fmt: skip
    with pytest.raises(UserError, match="the base UNet has no layer down_blocks.1.attentions"):
        check_lora_fits(write_lora(tmp_path / "deeper", deeper, targets="attn"), base)
