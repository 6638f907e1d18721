"""--save-dtype: the adapter's files cast after writing, metadata kept, still loadable by diffusers."""

import shutil

import torch
from safetensors import safe_open

from humanfix.models.save_dtype import cast_safetensors


def test_lora_files_become_fp16_and_keep_their_metadata(tiny_lora, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = shutil.copytree(tiny_lora, tmp_path / "lora")
    with safe_open(str(folder / "humanfix_lora.safetensors"), framework="pt") as f:
        before = f.metadata()
    files = cast_safetensors(folder, "fp16")
    assert {p.name for p in files} == {"pytorch_lora_weights.safetensors", "humanfix_lora.safetensors"}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
            if path.name == "humanfix_lora.safetensors":
                assert f.metadata() == before
    state, _ = StableDiffusionPipeline.lora_state_dict(str(folder))
    assert state and all(v.dtype == torch.float16 for v in state.values())


def test_fp32_leaves_the_files_alone(tiny_lora, tmp_path):
    folder = shutil.copytree(tiny_lora, tmp_path / "lora")
    before = (folder / "pytorch_lora_weights.safetensors").read_bytes()
    cast_safetensors(folder, "fp32")
    assert (folder / "pytorch_lora_weights.safetensors").read_bytes() == before
