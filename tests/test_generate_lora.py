"""humanfix generate --lora and LoRA rows in --compare, on the tiny model at 64×64 with 2 steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humanfix.errors import UserError
from humanfix.generate import GenerateConfig, generate

SMALL = dict(model="tiny", steps=2, height=64, width=64, device="cpu", batch_size=1)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def branch(tiny_model, tmp_path_factory) -> Path:
    """A branch as training saves it (RUN/controlnet), with random zero convolutions so that it changes images."""
    import torch
    from diffusers import ControlNetModel

    from humanfix.models.pipeline import load_components, write_branch_meta

    torch.manual_seed(1)
    cn = ControlNetModel.from_unet(load_components(str(tiny_model)).unet)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("branch") / "straight" / "controlnet"
    cn.save_pretrained(folder)
    write_branch_meta(folder, conditioning="none", base_model="tiny", adapter="controlnet")
    return folder


def test_lora_pixels_equal_plain_diffusers_with_that_lora(tiny_model, tiny_lora, tmp_path):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out = tmp_path / "out"
    generate(GenerateConfig(**SMALL, prompts=("two people",), seed=4, lora=tiny_lora, lora_scale=0.6, output=out))
    (rec,) = _index(out)
    assert (rec["lora"], rec["lora_scale"], rec["label"], rec["branch"]) == (str(tiny_lora), 0.6, "lora-run", None)
    info = Image.open(out / rec["file"]).info
    assert info["lora"] == str(tiny_lora) and json.loads(info["parameters"])["lora_scale"] == 0.6

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(tiny_lora)
    ref = pipe("two people", num_inference_steps=2, height=64, width=64, guidance_scale=7.5,
               cross_attention_kwargs={"scale": 0.6}, generator=torch.Generator().manual_seed(4)).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(ref), _pixels(out / rec["file"]))

    generate(GenerateConfig(**SMALL, prompts=("two people",), seed=4, lora=tiny_lora, lora_scale=0.0,
                            output=tmp_path / "zero"))  # fmt: skip
    generate(GenerateConfig(**SMALL, prompts=("two people",), seed=4, output=tmp_path / "base"))
    name = rec["file"]
    assert np.array_equal(_pixels(tmp_path / "zero" / name), _pixels(tmp_path / "base" / name))  # scale 0: plain SD
    assert not np.array_equal(_pixels(out / name), _pixels(tmp_path / "base" / name))


def test_compare_base_branch_lora_is_a_three_row_grid(tiny_model, branch, tiny_lora, tmp_path):
    out = tmp_path / "cmp"
    res = generate(GenerateConfig(**SMALL, prompts=("a cook",), num_images=2, seed=1,
                                  compare=("base", str(branch), str(tiny_lora)), output=out))  # fmt: skip
    records = _index(out)
    assert [r["label"] for r in records] == ["base"] * 2 + ["straight"] * 2 + ["lora-run"] * 2
    assert [(r["branch"] is not None, r["lora"] is not None) for r in records[::2]] == [
        (False, False), (True, False), (False, True),
    ]  # fmt: skip
    (grid,) = res.grids
    layout = json.loads(Image.open(grid).info["grid"])
    assert layout["rows"] == ["base", "straight", "lora-run"] and layout["columns"] == [1, 2]
    cells = {r["label"]: _pixels(out / r["file"]) for r in records if r["seed"] == 1}
    assert not np.array_equal(cells["base"], cells["lora-run"])
    # The LoRA row first: unloaded afterwards, the base row draws plain SD again.
    again = tmp_path / "again"
    generate(GenerateConfig(**SMALL, prompts=("a cook",), num_images=2, seed=1,
                            compare=(f"mine={tiny_lora}", "base"), output=again))  # fmt: skip
    for r in records:
        if r["label"] in ("base", "lora-run"):
            other = again / r["file"].replace("lora-run/", "mine/")
            assert np.array_equal(_pixels(other), _pixels(out / r["file"])), r["file"]


def test_folders_that_are_not_what_the_flag_wants(tiny_model, branch, tiny_lora, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (dict(lora=empty), f"LoRA not found: {empty} has no pytorch_lora_weights.safetensors"),
        (dict(lora=branch), "it holds a ControlNet branch: pass it with --controlnet"),
        (dict(controlnet=tiny_lora), "it holds a LoRA: pass it with --lora"),
        (dict(lora=tmp_path / "missing"), "LoRA not found"),
        (dict(lora=tiny_lora, controlnet=branch), "one adapter per model"),
        (dict(compare=("base", str(empty))), "neither config.json nor pytorch_lora_weights.safetensors"),
        (dict(compare=("base",), lora=tiny_lora), "or --compare"),
    ]
    for kw, message in cases:
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            generate(GenerateConfig(**SMALL, prompts=("a",), output=tmp_path / "o", **kw))
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.png"))


def test_a_lora_for_another_base_is_refused_before_drawing(tiny_model, tmp_path):
    from diffusers import UNet2DConditionModel

    from tests.conftest import write_lora

    narrow = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    foreign = write_lora(tmp_path / "foreign", narrow, targets="attn")
    with pytest.raises(UserError, match="does not fit this base model"):
        generate(GenerateConfig(**SMALL, prompts=("a",), compare=("base", str(foreign)), output=tmp_path / "o"))
    assert not list((tmp_path / "o").rglob("*.png"))


def test_cli_generate_lora(tiny_model, tiny_lora, tmp_path, humanfix_cli):
    out = tmp_path / "out"
    args = ["generate", "a skier", "--model", "tiny", "--steps", "2", "--height", "64", "--width", "64", "--device",
            "cpu", "--output", out]  # fmt: skip
    code, stdout, stderr = humanfix_cli([*args, "--lora", tiny_lora, "--lora-scale", "0.5"])
    assert code == 0 and "1 image(s) written" in stdout, stderr
    assert _index(out)[0]["lora_scale"] == 0.5
    code, _, stderr = humanfix_cli([*args, "--lora", tmp_path])
    assert code == 2 and "has no pytorch_lora_weights.safetensors" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
