"""What a kohya or diffusers user expects of ``humanfix train`` (issue 25): precision from accelerate's launcher,
the paper's objective by default, a checkpoint at the end, the config written once the run has started, progress
lines for batch jobs, validation images with prompts alone, and the usual knobs (none changing a run when off)."""

import json
import math
import tomllib

import pytest
import torch
from safetensors import safe_open

from humanfix.config import build_config
from humanfix.train import TrainConfig, checkpoint_dirs, train


def cfg(data, output, **kw):
    values = dict(model="tiny", data=data, split="val", batch_size=2, max_steps=1, output=output)
    values.setdefault("objective", {"lambda_lpips": 0.0, "lambda_face": 0.0})  # the fastest tiny step
    values.update(kw)
    return build_config(TrainConfig, None, **values)


def test_precision_comes_from_accelerate_launch_unless_given_and_is_recorded(
    prepared_set, tmp_path, monkeypatch, wrap_loss, caplog, fresh_accelerate_state
):
    """`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION; it used to be overridden by "no"."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    seen = {}
    wrap_loss(lambda n, run, out: seen.setdefault("dtype", run.weight_dtype))
    caplog.set_level("INFO", logger="humanfix")
    train(cfg(prepared_set, tmp_path / "launched"))
    assert seen["dtype"] == torch.bfloat16
    saved = tomllib.loads((tmp_path / "launched" / "training_config.toml").read_text())
    assert saved["mixed_precision"] == "bf16"
    assert "precision bf16 (from accelerate launch)" in caplog.text
    fresh_accelerate_state()
    seen.clear()
    train(cfg(prepared_set, tmp_path / "explicit", mixed_precision="no"))  # an explicit setting wins
    assert seen["dtype"] == torch.float32
    assert tomllib.loads((tmp_path / "explicit" / "training_config.toml").read_text())["mixed_precision"] == "no"


def test_defaults_are_the_papers_objective_and_each_adapters_learning_rate(tmp_path):
    c = build_config(TrainConfig, None, data=tmp_path)
    o = c.objective
    assert (o.lambda_lpips, o.lambda_face, o.timestep_threshold) == (0.2, 0.5, 100)
    assert c.learning_rate == 1e-5
    assert build_config(TrainConfig, None, data=tmp_path, adapter="lora").learning_rate == 1e-4
    assert build_config(TrainConfig, None, data=tmp_path, adapter="lora", learning_rate=3e-4).learning_rate == 3e-4


def test_a_finished_run_ends_with_a_checkpoint_prints_progress_and_validates(prepared_set, tmp_path, humanfix_cli):
    """Prompts alone give validation images (at the end too); stdout that is no terminal gets progress lines;
    the last step is checkpointed (500 does not divide 2), so the run can be extended with --resume."""
    out = tmp_path / "run"
    args = ["train", "--model", "tiny", "--data", prepared_set, "--split", "val", "--batch-size", "2",
            "--lambda-lpips", "0", "--lambda-face", "0", "--max-steps", "2", "--log-every", "1",
            "--validation-prompt", "a skier", "--validation-inference-steps", "1", "--output", out]  # fmt: skip
    code, stdout, err = humanfix_cli(args)
    assert code == 0, err
    lines = [x for x in stdout.splitlines() if x.startswith("step ")]
    assert len(lines) == 2, stdout
    assert lines[0].startswith("step 1/2 · loss ") and "img/s" in lines[0] and "ETA" in lines[1]
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002"]
    assert (out / "validation" / "step-00000002" / "00.png").is_file()
    config_before = (out / "training_config.toml").read_text()
    # A failed resume leaves the run's config alone.
    code, _, err = humanfix_cli(["train", "--config", out / "training_config.toml", "--max-steps", "9",
                                 "--resume", tmp_path / "no-such-checkpoint"])  # fmt: skip
    assert code == 2 and "not a humanfix checkpoint" in err
    assert (out / "training_config.toml").read_text() == config_before
    # Extending the finished run: from its final checkpoint to step 3.
    code, stdout, err = humanfix_cli(["train", "--config", out / "training_config.toml", "--max-steps", "3",
                                      "--resume", "latest", "--validation-image-every", "0"])  # fmt: skip
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert tomllib.loads((out / "training_config.toml").read_text())["max_steps"] == 3


def test_validation_image_every_defaults_with_prompts_and_old_names_still_work(tmp_path, caplog):
    assert build_config(TrainConfig, None, data=tmp_path, validation_prompts=("a",)).validation_image_every == 100
    assert build_config(TrainConfig, None, data=tmp_path).validation_image_every == 0
    toml = tmp_path / "old.toml"
    toml.write_text('validate_every = 7\nvalidation_steps = 3\nallow_tf32 = false\nvalidation_prompts = ["a"]\n')
    c = build_config(TrainConfig, toml, data=tmp_path)
    assert (c.validation_image_every, c.validation_inference_steps, c.tf32) == (7, 3, False)
    assert caplog.text.count("is deprecated") == 3


# Losses of two tiny updates at the commit before the knobs (5db67ce), λ1 = 0.2, λ2 = 0.5, T = 1000, lr 1e-4:
# with every new knob off, a run must give them again. Rows: loss, loss_ldm, loss_lpips, loss_face, grad_norm.
BEFORE_KNOBS = {
    "controlnet": [[0.394791424, 1.202598273, 0.158898875, 0.004464355, 0.106200113],
                   [0.339572280, 1.025518953, 0.150838159, 0.003497882, 0.087369039]],
    "lora": [[0.394791424, 1.202598273, 0.158898875, 0.004464355, 0.006406547],
             [0.339646488, 1.025769352, 0.150833338, 0.003498021, 0.007639252]],
}  # fmt: skip


@pytest.mark.parametrize("adapter", ["controlnet", "lora"])
def test_knobs_off_give_the_numbers_from_before_the_knobs(prepared_set, tmp_path, adapter):
    objective = {"lambda_lpips": 0.2, "lambda_face": 0.5, "timestep_threshold": 1000, "snr_gamma": None}
    out = tmp_path / adapter
    train(cfg(prepared_set, out, adapter=adapter, max_steps=2, learning_rate=1e-4, checkpoint_every=0,
              objective=objective, noise_offset=0.0, use_ema=False, save_dtype="fp32"))  # fmt: skip
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    got = [[r["loss"], r["loss_ldm"], r["loss_lpips"], r["loss_face"], r["grad_norm"]] for r in rows]
    for g, want in zip(got, BEFORE_KNOBS[adapter], strict=True):
        assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(g, want, strict=True)), (g, want)
    assert not (out / f"{adapter}-ema").exists()


def test_noise_offset_and_snr_gamma_change_the_loss(prepared_set, tmp_path, wrap_loss, fresh_accelerate_state):
    losses = {}
    for name, kw in {
        "off": {},
        "offset": {"noise_offset": 0.5},
        "snr": {"objective": {"lambda_lpips": 0.0, "lambda_face": 0.0, "snr_gamma": 1e-4}},  # < SNR at every t
    }.items():
        wrap_loss(lambda n, run, out, name=name: losses.setdefault(name, (out.total.item(), out.ldm.item())))
        train(cfg(prepared_set, tmp_path / name, checkpoint_every=0, **kw))
        fresh_accelerate_state()
    assert losses["offset"][1] != pytest.approx(losses["off"][1])  # other noise, other loss
    assert losses["snr"][1] == pytest.approx(losses["off"][1])  # the logged L_LDM stays the plain MSE …
    assert losses["snr"][0] < losses["off"][0]  # … the trained total is min-SNR weighted (weights < 1 at this γ)


def test_ema_and_save_dtype_write_a_half_precision_average_beside_the_lora(prepared_set, tmp_path):
    out = tmp_path / "run"
    lora = train(cfg(prepared_set, out, adapter="lora", lora_rank=4, max_steps=2, learning_rate=1e-2,
                     use_ema=True, save_dtype="fp16"))  # fmt: skip
    ema = out / "lora-ema"
    for folder in (lora, ema):
        for name in ("pytorch_lora_weights.safetensors", "humanfix_lora.safetensors"):
            with safe_open(str(folder / name), framework="pt") as f:
                dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
            assert dtypes == {torch.float16}, (folder, name, dtypes)
    meta = json.loads((ema / "humanfix.json").read_text())
    assert meta["ema_decay"] == 0.9999 and meta["save_dtype"] == "fp16"
    trained = load(lora / "pytorch_lora_weights.safetensors")
    averaged = load(ema / "pytorch_lora_weights.safetensors")
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)  # the average lags the last update
    assert any(p.name.startswith("custom_checkpoint") for p in checkpoint_dirs(out)[-1].iterdir())  # resumable


def load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_log_with_wandb_without_the_package_is_one_line(prepared_set, tmp_path, humanfix_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, _, err = humanfix_cli(["train", "--model", "tiny", "--data", prepared_set, "--split", "val",
                                 "--log-with", "wandb", "--output", tmp_path / "run"])  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "pip install 'humanfix[wandb]'" in err
