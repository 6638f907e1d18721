"""humanfix train on the tiny model and a tiny prepared set made here."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from humanfix.config import build_config
from humanfix.errors import UserError
from humanfix.train import TrainConfig, TrainingStopped, checkpoint_dirs, train


def config(data, output, **kw):
    # L_lpips only by default: the face network is the slowest part of a tiny step (λ2 = 0 said explicitly: its
    # default is the paper's 0.5).
    objective = kw.pop("objective", {"lambda_lpips": 0.6, "lambda_face": 0.0, "timestep_threshold": 1000})
    values = dict(
        model="tiny",
        data=data,
        split="val",
        batch_size=2,
        seed=0,
        output=output,
        checkpoint_every=2,
        max_steps=4,
        objective=objective,
    )
    values.update(kw)
    return build_config(TrainConfig, None, **values)


def zero_convs(state):
    return {k: v for k, v in state.items() if k.startswith(("controlnet_down_blocks", "controlnet_mid_block"))}


def test_a_few_steps_write_every_output(prepared_set, tmp_path):
    out = tmp_path / "run"
    objective = {"lambda_lpips": 0.6, "lambda_face": 0.4, "timestep_threshold": 1000}
    branch = train(config(prepared_set, out, objective=objective))
    assert branch == out / "controlnet"
    assert (branch / "config.json").is_file() and (branch / "diffusion_pytorch_model.safetensors").is_file()
    meta = json.loads((branch / "humanfix.json").read_text())
    assert meta["conditioning"] == "none" and meta["perceptual_weights"] == "random"
    saved = tomllib.loads((out / "training_config.toml").read_text())
    assert saved["objective"]["lambda_lpips"] == 0.6 and saved["model"] == "tiny"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in (
        "loss",
        "loss_ldm",
        "loss_lpips",
        "loss_face",
        "gated_fraction",
        "lr",
        "images_per_s",
        "peak_memory_gb",
    ):
        assert all(r[key] is not None for r in rows), key
    assert all(r["gated_fraction"] == 1.0 for r in rows)
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002", "step-00000004"]
    # The resolved config reloads into the same config.
    again = build_config(TrainConfig, out / "training_config.toml")
    assert again == config(prepared_set, out, objective=objective, mixed_precision="no")  # recorded: what it used


def test_perceptual_terms_alone_move_the_zero_convolutions(prepared_set, tmp_path):
    objective = {"lambda_lpips": 0.5, "lambda_face": 0.5, "timestep_threshold": 1000}
    branch = train(config(prepared_set, tmp_path / "run", objective=objective, max_steps=2, checkpoint_every=0))
    moved = sum(
        v.abs().sum().item() for v in zero_convs(load_file(branch / "diffusion_pytorch_model.safetensors")).values()
    )
    assert moved > 0


def test_hand_term_alone_moves_the_zero_convolutions_is_logged_and_resumes_exactly(prepared_set, tmp_path):
    """λ3 = 1 (L_LDM weight 0 on every sample: each has two hands), cached latents, TensorBoard; 2 steps straight
    against 1 step then a resume."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kw = dict(objective={"lambda_lpips": 0.0, "lambda_face": 0.0, "lambda_hand": 1.0, "timestep_threshold": 1000},
              cache_latents=True, checkpoint_every=1)  # fmt: skip
    straight = train(config(prepared_set, tmp_path / "straight", max_steps=2, log_with="tensorboard", **kw))
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    assert sum(v.abs().sum().item() for v in zero_convs(a).values()) > 0
    rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["loss_hand"], float) and r["loss_hand"] > 0 and r["loss_lpips"] is None for r in rows)
    runs = [EventAccumulator(str(f.parent)).Reload() for f in (tmp_path / "straight" / "logs").rglob("events.*")]
    assert any("loss_hand" in r.Tags()["scalars"] for r in runs)
    train(config(prepared_set, tmp_path / "resumed", max_steps=1, **kw))
    resumed = train(config(prepared_set, tmp_path / "resumed", max_steps=2, resume="latest", **kw))
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_replays_the_run_exactly(prepared_set, tmp_path):
    straight = train(config(prepared_set, tmp_path / "straight"))
    train(config(prepared_set, tmp_path / "resumed", max_steps=2))
    resumed = train(config(prepared_set, tmp_path / "resumed", resume="latest"))
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_a_kill_during_save_leaves_the_previous_checkpoint_loadable(
    prepared_set, tmp_path, monkeypatch, fresh_accelerate_state
):
    from accelerate import Accelerator

    real_save = Accelerator.save_state

    def dying_save(self, output_dir=None, **kw):
        if output_dir.endswith("step-00000004"):
            Path(output_dir, "model.safetensors").write_bytes(b"half a file")
            raise KeyboardInterrupt("killed during save")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config(prepared_set, out))
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002"]
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    fresh_accelerate_state()
    branch = train(config(prepared_set, out, resume="latest"))
    assert (branch / "diffusion_pytorch_model.safetensors").is_file()


def test_nonfinite_losses_are_skipped_then_stop_training(prepared_set, tmp_path, wrap_loss):
    def poison(n, run, out):
        if n == 2 or n >= 4:  # one isolated NaN, then NaNs for good
            out.total = out.total * float("nan")

    wrap_loss(poison)
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped, match="non-finite 2 times in a row"):
        train(config(prepared_set, out, max_steps=10, max_nonfinite_steps=2, checkpoint_every=1))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False, True]
    assert rows[-1]["nonfinite_total"] == 2
    good = load_file(checkpoint_dirs(out)[-1] / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())


def test_saved_branch_generates_through_plain_diffusers(prepared_set, tmp_path, tiny_model):
    branch = train(config(prepared_set, tmp_path / "run", max_steps=1, checkpoint_every=0))
    cn = ControlNetModel.from_pretrained(branch)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_model, controlnet=cn, safety_checker=None, requires_safety_checker=False
    )
    image = pipe(
        "a person",
        image=torch.zeros(1, 3, 64, 64),
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 64, 64, 3) and float(image.std()) > 0


@pytest.mark.parametrize("conditioning", ["pose", "mask"])
def test_pose_and_mask_conditioning_train_and_are_saved(prepared_set, tmp_path, conditioning):
    branch = train(config(prepared_set, tmp_path / "run", max_steps=1, checkpoint_every=0, conditioning=conditioning))
    assert json.loads((branch / "humanfix.json").read_text())["conditioning"] == conditioning


def test_validation_images_and_tensorboard_logs_are_written(prepared_set, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(
        config(
            prepared_set,
            out,
            max_steps=2,
            checkpoint_every=0,
            validation_image_every=2,
            validation_prompts=("a skier",),
            validation_inference_steps=2,
            log_with="tensorboard",
        )
    )
    assert (out / "validation" / "step-00000002" / "00.png").is_file()
    runs = [EventAccumulator(str(f.parent)).Reload() for f in (out / "logs").rglob("events.out.tfevents.*")]
    main = [r for r in runs if "loss" in r.Tags()["scalars"]]  # (accelerate writes the hparams as a second run)
    assert len(main) == 1
    assert {"loss", "loss_lpips", "lr", "gated_fraction"} <= set(main[0].Tags()["scalars"])
    assert [e.step for e in main[0].Scalars("loss")] == [1, 2]
    assert "validation" in main[0].Tags()["images"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"split": "train"}, "no prepared split"),
        ({"data": None}, "--data"),
        ({"objective": {"lambda_lpips": 0.8, "lambda_face": 0.5}}, "<= 1"),
        ({"batch_size": 0}, "batch-size"),
        ({"conditioning": "depth"}, "conditioning"),
        ({"resume": "latest"}, "no checkpoint"),
    ],
)
def test_bad_input_is_a_user_error(prepared_set, tmp_path, kw, match):
    data = kw.pop("data", prepared_set)
    with pytest.raises(UserError, match=match):
        train(config(data, tmp_path / "run", **kw))


def test_empty_set_and_foreign_branch_are_user_errors(prepared_set, tmp_path, fresh_accelerate_state):
    empty = tmp_path / "empty" / "val"
    empty.mkdir(parents=True)
    (empty / "metadata.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        train(config(tmp_path / "empty", tmp_path / "run"))
    fresh_accelerate_state()
    foreign = tmp_path / "foreign"
    ControlNetModel(
        block_out_channels=(16, 32),
        cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        norm_num_groups=8,
        attention_head_dim=4,
    ).save_pretrained(foreign)
    with pytest.raises(UserError, match="does not fit"):
        train(config(prepared_set, tmp_path / "run2", controlnet=foreign))


def test_cli_train_end_to_end(prepared_set, tmp_path, humanfix_cli):
    toml = tmp_path / "train.toml"
    toml.write_text("max_steps = 1\n[objective]\nlambda_lpips = 0.3\n")
    code, out, err = humanfix_cli(
        [
            "train",
            "--config",
            toml,
            "--model",
            "tiny",
            "--data",
            prepared_set,
            "--split",
            "val",
            "--batch-size",
            "2",
            "--lambda-face",
            "0.2",
            "--cache-latents",
            "--no-tf32",
            "--deterministic",
            "--output",
            tmp_path / "run",
        ]
    )
    assert code == 0, err
    assert "branch saved" in out
    saved = tomllib.loads((tmp_path / "run" / "training_config.toml").read_text())
    assert saved["objective"]["lambda_lpips"] == 0.3 and saved["objective"]["lambda_face"] == 0.2
    assert saved["cache_latents"] is True and saved["tf32"] is False and saved["deterministic"] is True
    code, _, err = humanfix_cli(
        [
            "train",
            "--model",
            "tiny",
            "--data",
            prepared_set,
            "--split",
            "val",
            "--lambda-lpips",
            "0.8",
            "--lambda-face",
            "0.5",
            "--output",
            tmp_path / "bad",
        ]
    )
    assert code == 2 and "Traceback" not in err and "<= 1" in err


@pytest.mark.slow
def test_two_processes_step_together_and_only_rank_zero_writes(prepared_set, tmp_path, tiny_model, free_port):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port),
        "-m",
        "humanfix.cli",
        "train",
        "--model",
        "tiny",
        "--data",
        str(prepared_set),
        "--split",
        "val",
        "--batch-size",
        "1",
        "--max-steps",
        "3",
        "--lambda-lpips",
        "0.5",
        "--lambda-face",
        "0",
        "--timestep-threshold",
        "1000",
        "--checkpoint-every",
        "2",
        "--cache-latents",
        "--output",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rank 0/2 finished at step 3" in r.stderr and "rank 1/2 finished at step 3" in r.stderr
    assert r.stdout.count("branch saved") == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one writer, no duplicated lines
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "controlnet",
        "metrics.jsonl",
        "training_config.toml",
    ]
    # one rank built the latent cache, the other waited for it and read it; no temporary folder is left
    from humanfix.data.latents import LatentCache

    caches = [p.parent for p in (Path(os.environ["HUMANFIX_HOME"]) / "latents").glob("*/meta.json")]
    assert not list((Path(os.environ["HUMANFIX_HOME"]) / "latents").glob(".*.tmp"))
    assert caches and all(LatentCache(c)[2].abs().sum() > 0 for c in caches)


def test_a_nonfinite_gradient_under_a_finite_loss_skips_the_update(prepared_set, tmp_path, wrap_loss):
    def poison(n, run, out):
        if n == 2:  # the loss stays finite (+0), its gradient is 0 × ∞ = NaN in every branch weight
            first = next(p for p in run.controlnet.parameters() if p.requires_grad)
            out.total = out.total + (0 * first.sum()).sqrt()
            assert torch.isfinite(out.total)

    wrap_loss(poison)
    out = tmp_path / "run"
    branch = train(config(prepared_set, out, max_steps=3, checkpoint_every=1, keep_checkpoints=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False]
    assert [r["nonfinite_total"] for r in rows] == [0, 1, 1]
    one, two, _ = (load_file(p / "model.safetensors") for p in checkpoint_dirs(out))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the poisoned update changed nothing
    final = load_file(branch / "diffusion_pytorch_model.safetensors")
    assert all(torch.isfinite(v).all() for v in final.values())


@pytest.fixture
def fp16_scaler(monkeypatch):
    """``fp16_scaler(init_scale)``: the next ``setup`` trains under a ``torch.amp.GradScaler`` as accelerate uses it
    for fp16 on CUDA (scaled backward, unscale before clipping, the scaler's step for the fused AdamW), on the CPU
    and in fp32 (CPU fp16 has no autocast). Returns the list that receives the scaler."""
    from accelerate.optimizer import patch_optimizer_step

    import humanfix.train as train_module

    real, made = train_module.setup, []

    def install(init_scale: float) -> list:
        def setup(config, components=None):
            run = real(config, components)
            acc, opt = run.accelerator, run.optimizer
            scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
            acc.scaler, acc.native_amp = scaler, True
            monkeypatch.setattr(acc, "unscale_gradients", lambda optimizer=None: scaler.unscale_(opt.optimizer))
            opt.scaler, opt._accelerate_step_called = scaler, False
            opt._optimizer_original_step_method = opt.optimizer.step
            opt._optimizer_patched_step_method = patch_optimizer_step(opt, opt.optimizer.step)
            made.append(scaler)
            return run

        monkeypatch.setattr(train_module, "setup", setup)
        return made

    return install


def nan_gradient(run, out):
    """The loss stays finite (+0); its gradient is 0 × ∞ = NaN in every branch weight."""
    first = next(p for p in run.controlnet.parameters() if p.requires_grad)
    out.total = out.total + (0 * first.sum()).sqrt()


def test_an_fp16_overflow_is_counted_skipped_and_holds_the_lr_schedule(prepared_set, tmp_path, wrap_loss, fp16_scaler):
    """The fused AdamW skips an overflowed step on the device, so accelerate never sees it skipped: the count, the
    ``skipped`` flag and the LR schedule come from the reduced flag. The logged ``lr`` is the one the update used."""
    scalers = fp16_scaler(init_scale=2.0**10)
    wrap_loss(lambda n, run, out: nan_gradient(run, out) if n == 2 else None)
    out = tmp_path / "run"
    train(config(prepared_set, out, lr_scheduler="linear", learning_rate=1e-4, checkpoint_every=1, keep_checkpoints=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False, False]
    assert [r["overflow_total"] for r in rows] == [0, 1, 1, 1]
    assert [r["nonfinite_total"] for r in rows] == [0, 0, 0, 0]
    # linear over 4 updates: 1e-4, 0.75e-4 (skipped: the schedule holds), 0.75e-4 again, 0.5e-4
    assert [r["lr"] for r in rows] == pytest.approx([1e-4, 0.75e-4, 0.75e-4, 0.5e-4])
    assert scalers[0].get_scale() == 2.0**9  # the scaler saw the overflow and halved its scale
    one, two, *_ = (load_file(p / "model.safetensors") for p in checkpoint_dirs(out))
    assert all(torch.equal(one[k], two[k]) for k in one)  # the overflowed update changed nothing
    state = json.loads((checkpoint_dirs(out)[-1] / "trainer_state.json").read_text())
    assert state["overflow_total"] == 1


def test_an_fp16_gradient_that_stays_nonfinite_stops_the_run(prepared_set, tmp_path, wrap_loss, fp16_scaler):
    """Overflows are the scaler's while it can lower the scale; at a scale of 1 or below the gradient is non-finite
    by itself, and --max-nonfinite-steps of those in a row stop the run as in every other precision."""
    fp16_scaler(init_scale=4.0)
    wrap_loss(lambda n, run, out: nan_gradient(run, out))
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped, match="non-finite 2 times in a row"):
        train(config(prepared_set, out, max_steps=10, max_nonfinite_steps=2, checkpoint_every=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # at scales 4, 2 and 1 (the first non-finite one); the stopping update (scale 0.5) is not logged
    assert [r["skipped"] for r in rows] == [True] * 3
    assert [r["overflow_total"] for r in rows] == [1, 2, 3]
    assert [r["nonfinite_total"] for r in rows] == [0, 0, 1]


@pytest.mark.gpu
def test_an_fp16_overflow_on_cuda_is_counted_skipped_and_holds_the_lr_schedule(prepared_set, tmp_path, wrap_loss):
    """The same as the CPU test above under accelerate's own fp16 GradScaler and fused AdamW on CUDA."""
    wrap_loss(lambda n, run, out: nan_gradient(run, out) if n == 2 else None)
    out = tmp_path / "run"
    train(config(prepared_set, out, mixed_precision="fp16", lr_scheduler="linear", learning_rate=1e-4))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows][:3] == [False, True, False]
    assert rows[-1]["overflow_total"] >= 1 and rows[1]["overflow_total"] == 1
    assert [r["nonfinite_total"] for r in rows] == [0, 0, 0, 0]
    assert rows[0]["lr"] == pytest.approx(1e-4) and rows[2]["lr"] == pytest.approx(rows[1]["lr"])


def test_gradient_accumulation_counts_and_logs_per_update(prepared_set, tmp_path, wrap_loss, caplog):
    losses = []

    def poison(n, run, out):
        losses.append(out.total.item())
        if n in (3, 4):  # both micro-batches of the second update
            out.total = out.total * float("nan")

    wrap_loss(poison)
    out = tmp_path / "run"
    train(config(prepared_set, out, max_steps=3, gradient_accumulation_steps=2, checkpoint_every=1, keep_checkpoints=0))
    assert len(losses) == 6
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["skipped"] for r in rows] == [False, True, False]
    assert [r["nonfinite_total"] for r in rows] == [0, 1, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "non-finite" in r.getMessage()]
    assert warnings == ["non-finite loss or gradient at step 2: update skipped"]
    assert rows[0]["loss"] == pytest.approx((losses[0] + losses[1]) / 2)  # the update's mean, not the last
    assert rows[2]["loss"] == pytest.approx((losses[4] + losses[5]) / 2)
    assert rows[1]["loss"] is None  # the skipped update's loss was not finite
    one, two, _ = (load_file(p / "model.safetensors") for p in checkpoint_dirs(out))
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_deterministic_mode_is_set_for_the_run_and_restored(prepared_set, tmp_path, wrap_loss):
    seen = {}
    wrap_loss(lambda n, run, out: seen.__setitem__("deterministic", torch.are_deterministic_algorithms_enabled()))
    objective = {"lambda_lpips": 0.5, "lambda_face": 0.5, "timestep_threshold": 1000}
    a = train(config(prepared_set, tmp_path / "a", max_steps=2, checkpoint_every=0, objective=objective))
    assert seen["deterministic"] is False
    b = train(
        config(prepared_set, tmp_path / "b", max_steps=2, checkpoint_every=0, objective=objective, deterministic=True)
    )
    assert seen["deterministic"] is True and not torch.are_deterministic_algorithms_enabled()
    wa = load_file(a / "diffusion_pytorch_model.safetensors")
    wb = load_file(b / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the CPU was deterministic already


def test_cached_latents_give_the_uncached_loss_and_resume_exactly(prepared_set, tmp_path, fresh_accelerate_state):
    from humanfix.train import batches, compute_loss, setup, step_generator

    objective = {"lambda_lpips": 0.5, "lambda_face": 0.3, "timestep_threshold": 1000}
    losses = {}
    for cache in (False, True):
        run = setup(config(prepared_set, tmp_path / f"probe-{cache}", cache_latents=cache, objective=objective))
        batch = next(iter(batches(run)))
        assert ("latent_params" in batch) is cache
        with torch.no_grad():
            losses[cache] = compute_loss(run, batch, step_generator(run.config, 0, 0, 0, run.accelerator.device))
        fresh_accelerate_state()
    for term in ("total", "ldm", "lpips", "face"):  # the same draw of the latent, so the same loss
        torch.testing.assert_close(getattr(losses[True], term), getattr(losses[False], term), rtol=1e-5, atol=1e-6)

    straight = train(config(prepared_set, tmp_path / "straight", cache_latents=True))
    fresh_accelerate_state()
    train(config(prepared_set, tmp_path / "resumed", max_steps=2, cache_latents=True))
    fresh_accelerate_state()
    resumed = train(config(prepared_set, tmp_path / "resumed", resume="latest", cache_latents=True))
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_wraps_unet_and_branch_and_changes_nothing_else(prepared_set, tmp_path, monkeypatch,
                                                                fresh_accelerate_state):  # fmt: skip
    """--compile with TorchDynamo's eager backend (the real tracing, no code generation, so it runs in seconds):
    same weights as an uncompiled run, and checkpoints that resume either way."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kw):
        compiled.append(type(model).__name__)
        return real_compile(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    hands = {"objective": {"lambda_lpips": 0.6, "lambda_face": 0.0, "lambda_hand": 0.2, "timestep_threshold": 1000}}
    plain = train(config(prepared_set, tmp_path / "plain", max_steps=2, checkpoint_every=1, **hands))
    fresh_accelerate_state()
    fast = train(config(prepared_set, tmp_path / "fast", max_steps=2, checkpoint_every=1, compile=True, **hands))
    assert compiled == ["UNet2DConditionModel", "ControlNetModel"]
    a = load_file(plain / "diffusion_pytorch_model.safetensors")
    b = load_file(fast / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_file(checkpoint_dirs(tmp_path / "fast")[0] / "model.safetensors")
    assert not any(k.startswith("_orig_mod") for k in ckpt)
    fresh_accelerate_state()
    resumed = train(
        config(prepared_set, tmp_path / "fast", max_steps=2, resume=str(checkpoint_dirs(tmp_path / "fast")[0]), **hands)
    )
    c = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)  # a compiled run's checkpoint resumes without compiling


@pytest.mark.gpu
@pytest.mark.parametrize("term", ["lpips", "face", "hand"])
def test_bf16_step_sends_each_perceptual_term_into_the_branch(prepared_set, tmp_path, term):
    from humanfix.train import batches, compute_loss, setup, step_generator

    objective = {"lambda_lpips": 0.0, "lambda_face": 0.0, f"lambda_{term}": 1.0, "timestep_threshold": 1000}  # no LDM
    run = setup(config(prepared_set, tmp_path / "run", mixed_precision="bf16", objective=objective))
    acc = run.accelerator
    assert acc.device.type == "cuda" and run.weight_dtype == torch.bfloat16
    batch = next(iter(batches(run)))
    out = compute_loss(run, batch, step_generator(run.config, 0, 0, 0, acc.device))
    assert getattr(out, term) is not None and torch.isfinite(out.total)
    acc.backward(out.total)
    grads = [
        p.grad
        for n, p in acc.unwrap_model(run.controlnet).named_parameters()
        if n.startswith(("controlnet_down_blocks", "controlnet_mid_block"))
    ]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


@pytest.mark.gpu
def test_deterministic_resume_is_bit_exact_on_cuda(prepared_set, tmp_path, fresh_accelerate_state):
    objective = {"lambda_lpips": 0.5, "lambda_face": 0.3, "timestep_threshold": 1000}
    straight = train(config(prepared_set, tmp_path / "straight", deterministic=True, objective=objective))
    fresh_accelerate_state()
    train(config(prepared_set, tmp_path / "resumed", max_steps=2, deterministic=True, objective=objective))
    fresh_accelerate_state()
    resumed = train(
        config(prepared_set, tmp_path / "resumed", resume="latest", deterministic=True, objective=objective)
    )
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


class DeviceWaits(TorchDispatchMode):
    """Records, per op, what makes the host wait for an accelerator: a read of a device value (``.item()``,
    ``bool()``, ``float()``: ``_local_scalar_dense``), a copy from the device to the host, and a blocking copy from
    the host to the device (a pageable ``.to(device)`` waits for the device's queue; ``non_blocking=True`` does not).
    Draws from a CPU generator (diffusers' ``randn_tensor``) are left out: training draws on the device."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.found = device, []

    def _record(self, what: str) -> None:
        import traceback

        stack = traceback.extract_stack()
        if not any(f.name == "randn_tensor" for f in stack):
            self.found.append(f"{what} at " + " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stack[-12:]))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs, aten, dev = kwargs or {}, torch.ops.aten, self.device.type
        if func is aten._local_scalar_dense.default:
            self._record("a host read of a device value")
            return 0.0 if args[0].is_floating_point() else 0  # the meta device has no values: go on, record all
        if func is aten._to_copy.default:
            src, dst = args[0].device.type, torch.device(kwargs.get("device") or args[0].device).type
            if src == "cpu" and dst == dev and not kwargs.get("non_blocking", False):
                self._record("a blocking host-to-device copy")
            if src == dev and dst == "cpu":
                self._record("a device-to-host copy")
        if func is aten.copy_.default:
            (dst, src), blocking = args[:2], not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            if src.device.type == "cpu" and dst.device.type == dev and blocking:
                self._record("a blocking host-to-device copy")
            if src.device.type == dev and dst.device.type == "cpu":
                self._record("a device-to-host copy")
        return func(*args, **kwargs)


def test_a_training_step_never_waits_for_the_device_without_a_gpu(prepared_set, tmp_path):
    """The loss and its backward (every perceptual term gated in) run on the meta device, a device with no values
    whose copies from the CPU are real dispatches, under :class:`DeviceWaits`: the class of bug that makes a GPU
    step wait (a host read, a blocking copy inside the step) shows here without a GPU.
    (It caught ``torch.tensor(area).to(device)`` in the perceptual loss.)"""
    import dataclasses
    import types

    from humanfix.train import StepRandom, batches, compute_loss, setup

    objective = {"lambda_lpips": 0.5, "lambda_face": 0.3, "timestep_threshold": 1000}
    run = setup(config(prepared_set, tmp_path / "run", objective=objective))
    meta = torch.device("meta")
    for module in (run.components.vae, run.components.unet, run.components.text_encoder, run.trainable, run.objective):
        module.to(meta)
    on_meta = dataclasses.replace(run, accelerator=types.SimpleNamespace(device=meta))
    loader = iter(batches(run))

    def step(k):
        g = StepRandom(torch.Generator().manual_seed(k), torch.Generator().manual_seed(k))
        out = compute_loss(on_meta, next(loader), g)
        out.total.backward()
        return out

    step(0)  # first use: the noise schedule moves to the device once, as on a GPU
    waits = DeviceWaits(meta)
    with waits:
        out = step(1)
    assert out.total.device == meta and out.sums().device == meta
    assert waits.found == []


@pytest.mark.gpu
@pytest.mark.parametrize("cache", [False, True])
def test_a_training_update_never_waits_for_the_gpu(prepared_set, tmp_path, cache):
    """compute_loss, backward, clipping and the (skippable) optimizer step under CUDA's sync debug mode
    "error": any .item(), .tolist(), bool() of a device tensor or blocking copy in the hot path raises."""
    from humanfix.train import _apply_update, batches, compute_loss, setup, step_generator

    objective = {"lambda_lpips": 0.5, "lambda_face": 0.3, "lambda_hand": 0.1, "timestep_threshold": 1000}
    run = setup(config(prepared_set, tmp_path / "run", mixed_precision="bf16", cache_latents=cache,
                       objective=objective))  # fmt: skip
    acc = run.accelerator
    params = [p for p in run.controlnet.parameters() if p.requires_grad]
    loader = iter(batches(run))
    staged = [next(loader) for _ in range(3)]

    def update(k):
        out = compute_loss(run, staged[k], step_generator(run.config, k, k, 0, acc.device))
        acc.backward(out.total)
        _apply_update(run, params, out.sums())
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)

    update(0)  # first use: the noise schedule moves to the GPU once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        update(1)
        update(2)
    finally:
        torch.cuda.set_sync_debug_mode(0)
