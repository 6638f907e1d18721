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
from humanfix.train import TrainConfig, batches, checkpoint_dirs, compute_loss, setup, step_generator, train


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
        objective={"lambda_lpips": 0.6, "lambda_face": 0.0, "timestep_threshold": 1000},  # λ2 = 0 said explicitly
    )
    values.update(kw)
    return build_config(TrainConfig, None, **values)


@pytest.mark.parametrize(
    "term, extra",
    [("lpips", {}), ("face", {"gradient_checkpointing": True}), ("hand", {})],
)
def test_each_perceptual_term_alone_reaches_the_lora_and_nothing_else(prepared_set, tmp_path, term, extra):
    """λ = 1 on one term: L_LDM has zero weight; its gradients land on LoRA parameters only."""
    objective = {"lambda_lpips": 0.0, "lambda_face": 0.0, f"lambda_{term}": 1.0, "timestep_threshold": 1000}
    run = setup(config(prepared_set, tmp_path / "run", objective=objective, **extra))
    c = run.components
    frozen_before = {k: v.clone() for k, v in c.unet.state_dict().items() if "lora_" not in k}
    batch = next(iter(batches(run)))
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
    assert saved == config(prepared_set, tmp_path / "straight", mixed_precision="no")  # recorded: what it used

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


def _bf16_step_reaches_the_lora(prepared_set, output, term: str) -> None:
    """One bf16 step with ``term`` alone (L_LDM weight 0): the LoRA stays fp32 and gets finite, nonzero gradients."""
    objective = {"lambda_lpips": 0.0, "lambda_face": 0.0, f"lambda_{term}": 1.0, "timestep_threshold": 1000}
    run = setup(config(prepared_set, output, mixed_precision="bf16", objective=objective))
    unet, acc = run.components.unet, run.accelerator
    assert {p.dtype for n, p in unet.named_parameters() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in unet.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    out = compute_loss(run, next(iter(batches(run))), step_generator(run.config, 0, 0, 0, acc.device))
    assert getattr(out, term) is not None and torch.isfinite(out.total)
    acc.backward(out.total)
    grads = [p.grad for n, p in unet.named_parameters() if "lora_B" in n]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_mixed_precision_keeps_the_lora_in_fp32(prepared_set, tmp_path):
    _bf16_step_reaches_the_lora(prepared_set, tmp_path / "run", "lpips")


@pytest.mark.gpu
@pytest.mark.parametrize("term", ["lpips", "face"])
def test_bf16_step_on_cuda_sends_each_perceptual_term_into_the_lora(prepared_set, tmp_path, term):
    _bf16_step_reaches_the_lora(prepared_set, tmp_path / "run", term)


def test_compile_changes_nothing_and_saves_plain_keys(prepared_set, tmp_path, monkeypatch, fresh_accelerate_state):
    """--compile with TorchDynamo's eager backend (real tracing, no code generation): the same LoRA as uncompiled."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    plain = train(config(prepared_set, tmp_path / "plain", max_steps=2, checkpoint_every=1))
    fresh_accelerate_state()
    fast = train(config(prepared_set, tmp_path / "fast", max_steps=2, checkpoint_every=1, compile=True))
    a, b = load_file(plain / LORA_WEIGHTS), load_file(fast / LORA_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("_orig_mod" in k for k in load_file(checkpoint_dirs(tmp_path / "fast")[0] / LORA_WEIGHTS))


def test_a_nonfinite_lora_gradient_under_a_finite_loss_skips_the_update(prepared_set, tmp_path, wrap_loss):
    """The non-finite guard covers the LoRA: a NaN gradient in one LoRA matrix leaves every LoRA weight as it was."""

    def poison(n, run, out):
        if n == 2:  # the loss stays finite (+0), its gradient is 0 × ∞ = NaN in the first LoRA matrix
            out.total = out.total + (0 * run.params[0].sum()).sqrt()
            assert torch.isfinite(out.total)

    wrap_loss(poison)
    out = tmp_path / "run"
    lora = train(config(prepared_set, out, max_steps=3, checkpoint_every=1, keep_checkpoints=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False]
    assert [r["nonfinite_total"] for r in rows] == [0, 1, 1]
    one, two, three = (load_file(p / LORA_WEIGHTS) for p in checkpoint_dirs(out))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the poisoned update changed nothing
    assert not all(torch.equal(two[k], three[k]) for k in two)  # the next one did
    assert all(torch.isfinite(v).all() for v in load_file(lora / LORA_WEIGHTS).values())


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
    toml.write_text(
        'validation_inference_steps = 2\nvalidation_prompts = ["a skier"]\n'
        "[objective]\nlambda_lpips = 0.0\nlambda_face = 0.5\n"
    )
    args = ["train", "--model", "tiny", "--data", prepared_set, "--split", "val", "--batch-size", "2"]
    code, out, err = humanfix_cli(
        [*args, "--config", toml, "--adapter", "lora", "--lora-rank", "8", "--lora-alpha", "4",
         "--lora-targets", "attn-ff-conv", "--max-steps", "1", "--validation-image-every", "1",
         "--timestep-threshold", "1000", "--output", tmp_path / "run"]
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
def test_two_cpu_processes_checkpoint_and_resume_the_lora_exactly(prepared_set, tmp_path, tiny_model, free_port):
    """torchrun, 2 CPU processes (CUDA hidden): rank 0 alone writes the LoRA checkpoint; every rank reads it back."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(out, steps, port, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "humanfix.cli", "train", "--model", "tiny", "--adapter", "lora", "--lora-rank", "4", "--data",
               str(prepared_set), "--split", "val", "--batch-size", "1", "--max-steps", str(steps), "--learning-rate",
               "1e-3", "--lambda-lpips", "0.5", "--lambda-face", "0", "--timestep-threshold", "1000",
               "--output", str(out), *extra,
        ]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, [line for line in r.stderr.splitlines() if "error" in line.lower()][:5]
        assert r.stdout.count("LoRA saved") == 1 and f"rank 1/2 finished at step {steps}" in r.stderr
        return out / "lora" / LORA_WEIGHTS

    straight = launch(tmp_path / "straight", 3, free_port, "--checkpoint-every", "0")
    launch(tmp_path / "resumed", 2, free_port, "--checkpoint-every", "2")
    assert {p.name for p in (tmp_path / "resumed" / "checkpoints" / "step-00000002").iterdir()} == {
        LORA_WEIGHTS, "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin",
        "trainer_state.json", "checksums.json",
    }  # fmt: skip
    resumed = launch(tmp_path / "resumed", 3, free_port, "--resume", "latest")
    a, b = load_file(straight), load_file(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
