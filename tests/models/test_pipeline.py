"""Loading SD components and branches: the error paths a user meets."""

import pytest
import torch
from diffusers import ControlNetModel

from humanfix.errors import UserError
from humanfix.models import weights
from humanfix.models.pipeline import load_components, make_controlnet, read_branch_meta, write_branch_meta


def test_missing_folder_and_non_pipeline_folder(tmp_path):
    with pytest.raises(UserError, match="model not found"):
        load_components(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="model_index.json"):
        load_components(str(tmp_path))


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="hf download"):
        load_components("someone/not-a-real-model")


def test_single_file_needs_a_local_config(tmp_path, tiny_model):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    with pytest.raises(UserError, match="--model-config"):
        load_components(str(ckpt))
    with pytest.raises(UserError, match="model_index.json"):
        load_components(str(ckpt), model_config=tmp_path)
    other = tmp_path / "model.bin"
    other.write_bytes(b"")
    with pytest.raises(UserError, match=".safetensors or .ckpt"):
        load_components(str(other), model_config=tiny_model)
    with pytest.raises(UserError, match="cannot load"):  # an empty file is no checkpoint: one clear line
        load_components(str(ckpt), model_config=tiny_model)


def test_branch_fresh_from_the_unet_or_loaded(tiny_components, tmp_path):
    fresh = make_controlnet(tiny_components.unet)
    assert isinstance(fresh, ControlNetModel)
    unet_conv = tiny_components.unet.down_blocks[0].resnets[0].conv1.weight
    assert torch.equal(fresh.down_blocks[0].resnets[0].conv1.weight, unet_conv)
    fresh.save_pretrained(tmp_path / "branch")
    write_branch_meta(tmp_path / "branch", conditioning="pose", base_model="tiny")
    loaded = make_controlnet(tiny_components.unet, tmp_path / "branch")
    assert torch.equal(loaded.down_blocks[0].resnets[0].conv1.weight, unet_conv)
    assert read_branch_meta(tmp_path / "branch")["conditioning"] == "pose"
    assert read_branch_meta(tmp_path) == {}
    with pytest.raises(UserError, match="not found"):
        make_controlnet(tiny_components.unet, tmp_path / "missing")


def test_missing_asset_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as e:
        weights.FACENET_VGGFACE2.require()
    msg = str(e.value)
    assert "20180402-114759-vggface2.pt" in msg and str(tmp_path / "checkpoints") in msg and "\n" not in msg
    with pytest.raises(UserError, match="inception-2015-12-05.pt"):
        weights.INCEPTION_FID.require(tmp_path / "inception-2015-12-05.pt")
    assert weights.lpips_heads_path().is_file()


def test_hub_id_loads_from_the_local_cache_offline(tiny_model, run_offline):
    """A hub id resolves through the Hugging Face cache with no network (the real SD 1.5 path, with tiny weights)."""
    code = (
        "from humanfix.models.pipeline import load_components\n"
        "from humanfix.models.weights import sd15_location\n"
        "c = load_components('someone/tiny-sd')\n"
        "print(type(c.unet).__name__, sd15_location('someone/tiny-sd')[0])\n"
    )
    out = run_offline({"someone/tiny-sd": tiny_model}, code)
    assert out.split() == ["UNet2DConditionModel", "True"]
