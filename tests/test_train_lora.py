"""humanfix train --adapter lora: the same loop and objective with a LoRA on the UNet in place of the branch."""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from humanfix.config import build_config
from humanfix.errors import UserError
from humanfix.models.lora import KOHYA_WEIGHTS, LORA_WEIGHTS
from humanfix.train import TrainConfig, checkpoint_dirs, compute_loss, setup, step_generator, train


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    """These tests mean the CPU (bit-exact resume): accelerate's switch pins it on CUDA machines too."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def config(data, output, **kw):
    values = dict(
        model="tiny",
        adapter="lora",
        lora_rank=4,
        data=data,
        split="val",
        batch_size=2,
        seed=0,
        learning_rate=1e-3,
        output=output,
        checkpoint_every=2,
        max_steps=4,
        objective={"lambda_lpips": 0.6, "timestep_threshold": 1000},
    )
    values.update(kw)
    return build_config(TrainConfig, None, **values)


@pytest.mark.parametrize(
    "term, extra",
    [("lpips", {}), ("face", {"gradient_checkpointing": True})],
)
def test_each_perceptual_term_alone_reaches_the_lora_and_nothing_else(prepared_set, tmp_path, term, extra):
    """λ = 1 on one term: L_LDM has zero weight; its gradients land on LoRA parameters only."""
    objective = {f"lambda_{term}": 1.0, "timestep_threshold": 1000}
    run = setup(config(prepared_set, tmp_path / "run", objective=objective, **extra))
    c = run.components
    frozen_before = {k: v.clone() for k, v in c.unet.state_dict().items() if "lora_" not in k}
    batch = next(iter(torch.utils.data.DataLoader(run.dataset, batch_size=2, collate_fn=_collate())))
    out = compute_loss(run, batch, step_generator(run.config, 0, 0, 0, run.accelerator.device))
    assert bool((out.per_sample[f"w_{term}"] == 1.0).all())  # every sample: the term alone, L_LDM weight 0
    run.accelerator.backward(out.total)
    lora = {n: p for n, p in c.unet.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad and p.dtype == torch.float32 for p in lora.values())
    assert {id(p) for p in run.params} == {id(p) for p in lora.values()}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    others = [(n, p) for n, p in c.unet.named_parameters() if "lora_" not in n]
    for module in (c.vae, c.text_encoder, run.objective):
        others += list(module.named_parameters())
    assert others and all(p.grad is None and not p.requires_grad for _, p in others)
    run.optimizer.step()
    after = c.unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())  # the base UNet untouched


def _collate():
    from humanfix.data.dataset import collate

    return collate


def test_resume_replays_the_lora_run_exactly_and_plain_diffusers_loads_it(prepared_set, tmp_path, tiny_model):
    straight = train(config(prepared_set, tmp_path / "straight"))
    assert straight == tmp_path / "straight" / "lora"
    train(config(prepared_set, tmp_path / "resumed", max_steps=2))
    ckpt = checkpoint_dirs(tmp_path / "resumed")[-1]
    assert (ckpt / LORA_WEIGHTS).is_file() and not list(ckpt.glob("model*.safetensors"))  # the LoRA, not the UNet
    resumed = train(config(prepared_set, tmp_path / "resumed", resume="latest"))
    a, b = load_file(straight / LORA_WEIGHTS), load_file(resumed / LORA_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora.up" in k or "lora_B" in k)  # B has moved off zero
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss_lpips"] is not None for r in rows)
    meta = json.loads((straight / "humanfix.json").read_text())
    assert (meta["adapter"], meta["rank"], meta["alpha"], meta["targets"]) == ("lora", 4, 4.0, "attn")
    saved = build_config(TrainConfig, tmp_path / "straight" / "training_config.toml")
    assert saved == config(prepared_set, tmp_path / "straight")

    def draw(weight_name=None):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        if weight_name:
            pipe.load_lora_weights(straight, weight_name=weight_name)
        g = torch.Generator().manual_seed(0)
        return pipe("a person", num_inference_steps=2, height=64, width=64, generator=g, output_type="np").images[0]

    diffusers_file, kohya_file = draw(LORA_WEIGHTS), draw(KOHYA_WEIGHTS)
    assert np.abs(diffusers_file - kohya_file).max() <= 1e-5
    assert np.abs(diffusers_file - draw()).max() > 0


def test_mixed_precision_keeps_the_lora_in_fp32(prepared_set, tmp_path):
    run = setup(config(prepared_set, tmp_path / "run", mixed_precision="bf16"))
    unet = run.components.unet
    assert {p.dtype for n, p in unet.named_parameters() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in unet.named_parameters() if "lora_" not in n} == {torch.bfloat16}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"controlnet": "runs/a/controlnet"}, "cannot go with --adapter lora"),
        ({"lora_rank": 0}, "lora-rank must be > 0"),
        ({"lora_alpha": -1.0}, "lora-alpha must be > 0"),
        ({"lora_targets": "mlp"}, "lora-targets must be one of attn, attn-ff-conv"),
        ({"conditioning": "pose"}, "no conditioning input"),
        ({"adapter": "dora"}, "adapter must be controlnet or lora"),
        ({"adapter": "controlnet"}, "--lora-rank applies to --adapter lora"),
    ],
)
def test_bad_adapter_options_are_user_errors(prepared_set, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        config(prepared_set, tmp_path / "run", **kw)


def test_cli_train_lora_end_to_end(prepared_set, tmp_path, humanfix_cli):
    toml = tmp_path / "train.toml"
    toml.write_text('validation_steps = 2\nvalidation_prompts = ["a skier"]\n[objective]\nlambda_face = 0.5\n')
    args = ["train", "--model", "tiny", "--data", prepared_set, "--split", "val", "--batch-size", "2"]
    code, out, err = humanfix_cli(
        [*args, "--config", toml, "--adapter", "lora", "--lora-rank", "8", "--lora-alpha", "4",
         "--lora-targets", "attn-ff-conv", "--max-steps", "1", "--validate-every", "1", "--timestep-threshold", "1000",
         "--output", tmp_path / "run"]
    )  # fmt: skip
    assert code == 0, err
    assert f"LoRA saved to {tmp_path / 'run' / 'lora'}" in out
    assert (tmp_path / "run" / "validation" / "step-00000001" / "00.png").is_file()
    saved = tomllib.loads((tmp_path / "run" / "training_config.toml").read_text())
    assert (saved["adapter"], saved["lora_rank"], saved["lora_alpha"], saved["lora_targets"]) == (
        "lora", 8, 4.0, "attn-ff-conv"
    )  # fmt: skip
    branch = tmp_path / "branch"
    branch.mkdir()
    for bad, message in (
        (["--adapter", "lora", "--controlnet", branch], "cannot go with --adapter lora"),
        (["--adapter", "lora", "--lora-rank", "0"], "lora-rank must be > 0"),
        (["--adapter", "lora", "--lora-targets", "everything"], "lora-targets must be one of"),
    ):
        code, _, err = humanfix_cli([*args, *bad, "--output", tmp_path / "bad"])
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_two_cpu_processes_checkpoint_and_resume_the_lora_exactly(prepared_set, tmp_path, tiny_model):
    """torchrun, 2 CPU processes (CUDA hidden): rank 0 alone writes the LoRA checkpoint; every rank reads it back."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def launch(out, steps, port, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "humanfix.cli", "train", "--model", "tiny", "--adapter", "lora", "--lora-rank", "4", "--data",
               str(prepared_set), "--split", "val", "--batch-size", "1", "--max-steps", str(steps), "--learning-rate",
               "1e-3", "--lambda-lpips", "0.5", "--timestep-threshold", "1000", "--output", str(out), *extra,
        ]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, [line for line in r.stderr.splitlines() if "error" in line.lower()][:5]
        assert r.stdout.count("LoRA saved") == 1 and f"rank 1/2 finished at step {steps}" in r.stderr
        return out / "lora" / LORA_WEIGHTS

    straight = launch(tmp_path / "straight", 3, 29581, "--checkpoint-every", "0")
    launch(tmp_path / "resumed", 2, 29582, "--checkpoint-every", "2")
    assert {p.name for p in (tmp_path / "resumed" / "checkpoints" / "step-00000002").iterdir()} == {
        LORA_WEIGHTS, "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin",
        "trainer_state.json",
    }  # fmt: skip
    resumed = launch(tmp_path / "resumed", 3, 29583, "--resume", "latest")
    a, b = load_file(straight), load_file(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
