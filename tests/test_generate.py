"""``humanfix generate`` on the tiny model at 64×64 with 2–3 steps: determinism, parity with diffusers,
metadata, resume, comparison grids, conditioning, error paths, the CLI and a two-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humanfix.errors import UserError
from humanfix.generate import GenerateConfig, generate
from humanfix.generation.jobs import INDEX_KEYS

SMALL = dict(model="tiny", steps=2, height=64, width=64)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def branches(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Branches copied from the tiny UNet, as training saves them: RUN/controlnet + humanfix.json.

    Their zero convolutions get random weights so that the branch and its conditioning image change the image.
    """
    import torch
    from diffusers import ControlNetModel

    from humanfix.models.pipeline import load_components, write_branch_meta

    unet = load_components(str(tiny_model)).unet
    root = tmp_path_factory.mktemp("branches")
    out = {}
    for run, conditioning in (("straight", "none"), ("posed", "pose")):
        torch.manual_seed(1)
        branch = ControlNetModel.from_unet(unet)
        with torch.no_grad():
            for name, p in branch.named_parameters():
                if name.startswith(
                    ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
                ):
                    p.normal_(0, 0.3)
        folder = root / run / "controlnet"
        branch.save_pretrained(folder)
        write_branch_meta(folder, conditioning=conditioning, base_model="tiny")
        out[run] = folder
    return out


def test_same_seed_same_files_and_matches_diffusers(tiny_model, tmp_path, caplog):
    """Same settings give byte-identical PNGs; the pixels equal a plain diffusers call with that seed
    (one image per call on both sides: batching changes float rounding only)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    cfg = dict(SMALL, prompts=("a skier", "two people"), num_images=1, seed=3, batch_size=1)
    a = generate(GenerateConfig(**cfg, output=tmp_path / "a"))
    generate(GenerateConfig(**cfg, output=tmp_path / "b"))
    assert "random weights" in caplog.text  # the tiny model's notice
    assert a.written == 2 and a.skipped == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert names == ["00000_00_seed3.png", "00001_00_seed4.png"]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert not np.array_equal(_pixels(tmp_path / "a" / names[0]), _pixels(tmp_path / "a" / names[1]))
    # each image has its own generator: batching changes pixels by float rounding at most (<= 2/255)
    generate(GenerateConfig(**dict(cfg, batch_size=2), output=tmp_path / "batched"))
    for n in names:
        assert np.abs(_pixels(tmp_path / "a" / n).astype(int) - _pixels(tmp_path / "batched" / n)).max() <= 2

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("two people", num_inference_steps=2, height=64, width=64, guidance_scale=7.5,
               generator=torch.Generator().manual_seed(4)).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(ref), _pixels(tmp_path / "a" / "00001_00_seed4.png"))


def test_metadata_chunks_and_index(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a batter", "seed": 40, "negative_prompt": "blurry"}\n{"prompt": "a cook"}\n')
    out = tmp_path / "out"
    generate(GenerateConfig(**SMALL, prompts_file=prompts, num_images=2, seed=5, scheduler="unipc",
                            negative_prompt="ugly", guidance_scale=5.0, output=out))  # fmt: skip
    records = _index(out)
    assert [tuple(r) for r in records] == [INDEX_KEYS] * 4
    assert [(r["prompt"], r["seed"], r["negative_prompt"]) for r in records] == [
        ("a batter", 40, "blurry"), ("a batter", 41, "blurry"), ("a cook", 7, "ugly"), ("a cook", 8, "ugly"),
    ]  # fmt: skip
    for r in records:
        assert (r["model"], r["label"], r["branch"], r["scheduler"], r["steps"]) == ("tiny", "base", None, "unipc", 2)
        assert (r["height"], r["width"], r["guidance_scale"]) == (64, 64, 5.0)
        info = Image.open(out / r["file"]).info
        assert info["prompt"] == r["prompt"] and info["seed"] == str(r["seed"]) and info["model"] == "tiny"
        params = json.loads(info["parameters"])
        assert {k: params[k] for k in INDEX_KEYS if k != "file"} == {k: r[k] for k in INDEX_KEYS if k != "file"}
        assert params["dtype"] == "float32"


def test_resume_skips_written_images(tiny_model, tmp_path):
    out = tmp_path / "out"
    cfg = dict(SMALL, prompts=("a skier",), num_images=3)
    first = generate(GenerateConfig(**cfg, output=out))
    files = sorted(out.glob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    files[1].unlink()
    again = generate(GenerateConfig(**cfg, output=out))
    assert (first.written, again.written, again.skipped) == (3, 1, 2)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in (files[0], files[2]))
    assert len(_index(out)) == 3
    done = generate(GenerateConfig(**cfg, output=out))
    assert (done.written, done.skipped, done.batches) == (0, 3, [])
    with pytest.raises(UserError, match="made differently"):
        generate(GenerateConfig(**dict(cfg, steps=3), output=out))


def test_compare_grid_rows_are_models(tiny_model, branches, tmp_path):
    out = tmp_path / "cmp"
    res = generate(GenerateConfig(**SMALL, prompts=("a batter", "a cook"), num_images=2, seed=1,
                                  compare=("base", str(branches["straight"])), output=out))  # fmt: skip
    assert [p.name for p in res.grids] == ["00000.png", "00001.png"]
    records = _index(out)
    assert [r["label"] for r in records] == ["base"] * 4 + ["straight"] * 4
    assert [r["seed"] for r in records[:4]] == [r["seed"] for r in records[4:]] == [1, 2, 3, 4]
    assert records[4]["conditioning"] == "none" and records[4]["branch"] == str(branches["straight"])
    assert not np.array_equal(_pixels(out / records[0]["file"]), _pixels(out / records[4]["file"]))
    grid = Image.open(out / "grids" / "00001.png")
    layout = json.loads(grid.info["grid"])
    assert layout["rows"] == ["base", "straight"] and layout["columns"] == [3, 4] and layout["title"] == "a cook"
    for r, label in enumerate(layout["rows"]):
        for c, seed in enumerate(layout["columns"]):
            x, y, w, h = layout["cells"][r][c]
            cell = np.asarray(grid.convert("RGB").crop((x, y, x + w, y + h)))
            assert np.array_equal(cell, _pixels(out / label / f"00001_{c:02d}_seed{seed}.png"))


def test_branch_at_scale_zero_draws_plain_sd(tiny_model, branches, tmp_path):
    """A "none" branch gets the black conditioning image; with conditioning scale 0 it adds nothing."""
    base = generate(GenerateConfig(**SMALL, prompts=("a cook",), output=tmp_path / "base"))
    generate(GenerateConfig(**SMALL, prompts=("a cook",), controlnet=branches["straight"], conditioning_scale=0.0,
                            output=tmp_path / "zero"))  # fmt: skip
    name = "00000_00_seed0.png"
    assert base.written == 1
    assert np.array_equal(_pixels(tmp_path / "base" / name), _pixels(tmp_path / "zero" / name))
    assert _index(tmp_path / "zero")[0]["conditioning_scale"] == 0.0


def test_pose_branch_needs_a_condition_image(tiny_model, branches, tmp_path):
    with pytest.raises(UserError, match="pose conditioning: pass --condition-image"):
        generate(GenerateConfig(**SMALL, prompts=("a dancer",), controlnet=branches["posed"], output=tmp_path / "x"))
    rng = np.random.default_rng(0)
    poses = []
    for i in range(2):
        poses.append(tmp_path / f"pose{i}.png")
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(poses[-1])
    out = tmp_path / "posed"
    generate(GenerateConfig(**SMALL, prompts=("a dancer",), controlnet=branches["posed"], condition_image=poses[0],
                            output=out))  # fmt: skip
    (rec,) = _index(out)
    assert (rec["conditioning"], rec["condition_image"], rec["label"]) == ("pose", str(poses[0]), "posed")
    other = tmp_path / "other"  # the condition image matters: another pose, other pixels
    generate(GenerateConfig(**SMALL, prompts=("a dancer",), controlnet=branches["posed"], condition_image=poses[1],
                            output=other))  # fmt: skip
    assert not np.array_equal(_pixels(out / rec["file"]), _pixels(other / rec["file"]))
    with pytest.raises(UserError, match="pose and mask|condition image not found"):
        generate(GenerateConfig(**SMALL, prompts=("a",), controlnet=branches["posed"],
                                condition_image=tmp_path / "missing.png", output=out))  # fmt: skip


def test_branch_that_does_not_fit_the_base(tiny_model, tmp_path):
    from diffusers import ControlNetModel

    folder = tmp_path / "foreign"
    ControlNetModel(block_out_channels=(16, 32), cross_attention_dim=16, layers_per_block=1, norm_num_groups=8,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=4,
                    conditioning_embedding_out_channels=(8, 8, 8, 16)).save_pretrained(folder)  # fmt: skip
    with pytest.raises(UserError, match="does not fit this base model"):
        generate(GenerateConfig(**SMALL, prompts=("a",), controlnet=folder, output=tmp_path / "o"))
    assert not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(height=60), "multiple of 8"),
        (dict(steps=0), "at least 1"),
        (dict(scheduler="pndm"), "choose one of"),
        (dict(dtype="float8"), "choose one of"),
        (dict(guidance_scale=-1), "must not be negative"),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(UserError, match=message):
        GenerateConfig(**dict(SMALL, prompts=("a",), **overrides))


def test_cli_end_to_end(tiny_model, branches, tmp_path, humanfix_cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a skier\na batter\n")
    out = tmp_path / "cmp"
    args = ["generate", "--prompts-file", prompts, "--model", "tiny", "--steps", "2", "--height", "64", "--width",
            "64", "--num-images", "2", "--batch-size", "3", "--seed", "9", "--output", out,
            "--compare", f"base,{branches['straight']}"]  # fmt: skip
    code, stdout, stderr = humanfix_cli(args)
    assert code == 0, stderr
    assert "8 image(s) written" in stdout and "2 grid(s)" in stdout
    assert "random weights" in stderr
    assert len(_index(out)) == 8 and len(list((out / "grids").glob("*.png"))) == 2
    code, stdout, _ = humanfix_cli(args)
    assert code == 0 and "0 image(s) written, 8 already there" in stdout

    for bad, message in (
        (["generate", "--model", "tiny", "--output", out], "no prompts"),
        (["generate", "x", "--model", "tiny", "--controlnet", tmp_path / "nope", "--output", out], "not found"),
        (["generate", "x", "--model", "tiny", "--controlnet", branches["posed"], "--output", out], "--condition-image"),
    ):
        code, _, stderr = humanfix_cli(bad)
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_two_processes_split_the_work(tiny_model, tmp_path, free_port):
    """torchrun with 2 CPU processes: each draws its share, process 0 writes the whole index."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2",
           "--master_port", str(free_port),
           os.path.join(os.path.dirname(sys.executable), "humanfix"), "generate", "--prompts-file", str(prompts),
           "--model", "tiny", "--steps", "2", "--height", "64", "--width", "64", "--batch-size", "1",
           "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[process 0/2] 2 image(s) written" in proc.stdout and "[process 1/2] 1 image(s) written" in proc.stdout
    assert [r["seed"] for r in _index(out)] == [0, 1, 2]
    single = tmp_path / "single"
    generate(GenerateConfig(**SMALL, prompts_file=prompts, batch_size=1, output=single))
    for r in _index(out):  # same noise; 1 vs 2 CPU threads may round differently
        diff = np.abs(_pixels(out / r["file"]).astype(int) - _pixels(single / r["file"])).max()
        assert diff <= 2, r["file"]


@pytest.mark.gpu
def test_generate_same_seed_same_file_on_cuda(tiny_model, tmp_path):
    cfg = dict(prompts=("a skier", "two people"), model=str(tiny_model), steps=2, height=64, width=64, seed=3)
    for name in ("a", "b"):
        generate(GenerateConfig(**cfg, output=tmp_path / name))
    files = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert len(files) == 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert json.loads(Image.open(tmp_path / "a" / f).info["parameters"])["dtype"] == "float16"  # CUDA default


def test_a_branch_brings_its_base_model_when_model_is_not_given(tiny_model, branches, tmp_path, humanfix_cli):
    """`generate --controlnet RUN/controlnet` draws on the base recorded in humanfix.json (here: tiny)."""
    assert GenerateConfig(prompts=("a",), controlnet=branches["straight"]).model == "tiny"
    assert GenerateConfig(prompts=("a",), controlnet=branches["straight"], model="other").model == "other"
    assert GenerateConfig(prompts=("a",)).model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    code, stdout, err = humanfix_cli(["generate", "a skier", "--controlnet", branches["straight"], "--steps", "1",
                                      "--height", "64", "--width", "64", "--output", tmp_path / "out"])  # fmt: skip
    assert code == 0, err
    assert "1 image(s) written" in stdout and _index(tmp_path / "out")[0]["model"] == "tiny"
