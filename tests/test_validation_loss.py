"""The validation loss: its grid, its determinism (batch size, processes, resume), that it leaves training alone,
that it measures learning, and --keep-best."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import humanfix.validation_loss as vl
from humanfix.config import build_config
from humanfix.errors import UserError
from humanfix.train import TrainConfig, train

TERMS = ("loss_ldm", "loss_lpips", "total")


@pytest.fixture(autouse=True)
def small_grid(monkeypatch):
    """Two timesteps below T and one above: the tiny runs stay quick; what is tested does not depend on the size."""
    monkeypatch.setattr(vl, "LOW_TIMESTEPS", 2)
    monkeypatch.setattr(vl, "HIGH_TIMESTEPS", 1)


def config(data, output, **kw):
    values = dict(
        model="tiny",
        data=data,
        split="val",
        validation_split="val",
        batch_size=1,
        seed=0,
        output=output,
        checkpoint_every=0,
        max_steps=2,
        validation_every=1,
        objective={"lambda_lpips": 0.6, "lambda_face": 0.0, "timestep_threshold": 500},
    )
    values.update(kw)
    return build_config(TrainConfig, None, **values)


def rows(output: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (output / "validation.jsonl").read_text().splitlines())}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "diffusion_pytorch_model.safetensors")


def test_the_grid_splits_the_range_at_the_threshold():
    grid = vl.timestep_grid(100, 1000, 5, 3)
    assert grid.low == (10, 30, 50, 70, 90) and grid.high == (250, 550, 850) and grid.low_share == 0.1
    assert vl.timestep_grid(1000, 1000, 5, 3).high == () and vl.timestep_grid(0, 1000, 5, 3).low == ()
    assert vl.timestep_grid(3, 1000, 5, 3).low == (0, 1, 2)  # never a timestep twice


def test_epochs_subsets_and_the_default_split(tmp_path, write_split):
    assert [s for s in range(1, 8) if vl.epoch_ended(s, 2, 3)] == [2, 3, 5, 6]  # 3 batches per epoch, 2 per update
    subset = vl.validation_indices(10, 4, seed=3)
    assert subset == sorted(subset) and len(set(subset)) == 4 and subset == vl.validation_indices(10, 4, seed=3)
    assert vl.validation_indices(10, 4, seed=4) != subset and vl.validation_indices(3, 0, 0) == [0, 1, 2]
    for split in ("train", "val"):
        write_split(tmp_path / "data" / split)
    base = dict(model="tiny", data=tmp_path / "data", output=tmp_path / "out")
    assert build_config(TrainConfig, None, **base).validation_split == "val"  # beside --split train
    assert build_config(TrainConfig, None, **base, split="val").validation_split == "none"
    assert build_config(TrainConfig, None, **base, validation_split="none").validation_split == "none"
    with pytest.raises(UserError, match="no prepared split"):
        build_config(TrainConfig, None, **base, validation_split="test")
    with pytest.raises(UserError, match="keep-best needs"):
        build_config(TrainConfig, None, **base, validation_split="none", keep_best=True)


def test_numbers_depend_only_on_weights_and_data_and_training_ignores_them(
    prepared_set, tmp_path, fresh_accelerate_state
):
    """Batch size 1 or 3, a run resumed halfway: the same lines; without validation: the same final weights;
    --keep-best: the adapter of the step with the lowest logged total."""
    straight = tmp_path / "straight"
    train(config(prepared_set, straight, keep_best=True, checkpoint_every=1, keep_checkpoints=0))
    lines = rows(straight)
    assert sorted(lines) == [0, 1, 2]
    for line in lines.values():
        assert line["images"] == 3 and all(math.isfinite(line[k]) for k in TERMS) and line["seconds"] > 0
    best = min(lines, key=lambda s: lines[s]["total"])
    meta = json.loads((straight / "best" / "humanfix.json").read_text())
    assert meta["validation_step"] == best and meta["validation_total"] == lines[best]["total"]
    if best:
        saved = load_file(straight / "checkpoints" / f"step-{best:08d}" / "model.safetensors")
        assert all(torch.equal(saved[k], v) for k, v in weights(straight / "best").items())

    fresh_accelerate_state()
    resumed = tmp_path / "resumed"
    train(config(prepared_set, resumed, max_steps=1, checkpoint_every=1))
    fresh_accelerate_state()
    train(config(prepared_set, resumed, resume="latest"))
    again = rows(resumed)
    assert sorted(again) == [0, 1, 2]
    assert all(again[s][k] == lines[s][k] for s in lines for k in TERMS)

    fresh_accelerate_state()
    without = train(config(prepared_set, tmp_path / "without", validation_split="none"))
    assert not (tmp_path / "without" / "validation.jsonl").exists()
    a, b = weights(straight / "controlnet"), weights(without)
    assert all(torch.equal(a[k], b[k]) for k in a)  # validation changed nothing in training

    fresh_accelerate_state()
    wide = tmp_path / "batch3"
    train(config(prepared_set, wide, batch_size=3, max_steps=1, validation_every=0))
    for key in TERMS:
        assert rows(wide)[0][key] == lines[0][key]


def test_training_lowers_the_validation_total_of_its_own_images(tmp_path, write_split):
    """Two images, trained on for 20 updates: their validation total (fixed noise and timesteps that training never
    drew) falls, and not by construction: the step-0 line is measured with the untrained branch."""
    for split in ("train", "val"):
        write_split(tmp_path / "data" / split, n=2, size=32)
    out = tmp_path / "run"
    cfg = config(tmp_path / "data", out, split="train", batch_size=2, max_steps=20, validation_every=20,
                 learning_rate=2e-3, objective={"timestep_threshold": 500})  # fmt: skip
    train(cfg)
    lines = rows(out)
    assert sorted(lines) == [0, 20]
    print("validation total", lines[0]["total"], "->", lines[20]["total"])
    assert lines[20]["total"] < 0.98 * lines[0]["total"], lines


@pytest.mark.slow
def test_two_processes_measure_what_one_does(prepared_set, tmp_path, free_port, fresh_accelerate_state):
    """3 images over 2 processes (2 + 1): the step-0 line of one process, to float rounding of other thread counts."""
    one = tmp_path / "one"
    train(config(prepared_set, one, max_steps=1))
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = (
        "import sys, humanfix.validation_loss as vl; vl.LOW_TIMESTEPS, vl.HIGH_TIMESTEPS = 2, 1; "
        "from humanfix.cli import main; sys.argv[0] = 'humanfix'; main()"
    )
    script = tmp_path / "run_cli.py"
    script.write_text(code)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
           str(script), "train", "--model", "tiny", "--data", str(prepared_set), "--split", "val",
           "--validation-split", "val", "--validation-every", "1", "--batch-size", "1", "--max-steps", "1",
           "--lambda-lpips", "0.6", "--lambda-face", "0", "--timestep-threshold", "500", "--checkpoint-every", "0",
           "--keep-best",
           "--output", str(two)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(rows(two)) == [0, 1]  # one writer
    for key in TERMS:
        assert rows(two)[0][key] == pytest.approx(rows(one)[0][key], rel=1e-6, abs=1e-9)
    assert rows(two)[0]["images"] == 3 and (two / "best" / "humanfix.json").is_file()


def test_a_lora_run_is_measured_and_its_best_kept_in_the_lora_layout(prepared_set, tmp_path):
    out = tmp_path / "lora"
    train(config(prepared_set, out, adapter="lora", lora_rank=4, max_steps=1, keep_best=True))
    assert sorted(rows(out)) == [0, 1]
    best = out / "best"
    assert {p.name for p in (out / "lora").iterdir()} == {p.name for p in best.iterdir()}
    meta = json.loads((best / "humanfix.json").read_text())
    assert meta["adapter"] == "lora" and meta["validation_step"] in (0, 1)
