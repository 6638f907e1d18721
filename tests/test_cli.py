"""The CLI's shell: --help, doctor, and one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(humanfix_cli):
    code, out, _ = humanfix_cli(["--help"])
    assert code == 0
    for command in ("doctor", "prepare-data", "train", "generate", "evaluate"):
        assert command in out


def test_console_script_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "humanfix.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "prepare-data" in r.stdout


def test_doctor_reports_assets_and_the_tiny_model(humanfix_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = humanfix_cli(["doctor"])
    assert code == 1  # no SD 1.5, no VGG16 here: what training needs is missing
    for needle in ("python", "torch", "device", "vgg16-397923af.pth", "20180402-114759-vggface2.pt",
                   "inception-2015-12-05.pt", "models/tiny", "missing", "rtdetr_r50vd_coco_o365",
                   "vitpose-base-simple", "hf download"):  # fmt: skip
        assert needle in out, needle


def test_user_errors_are_one_line_with_exit_code_2(humanfix_cli, tmp_path):
    cases = [
        ["train", "--model", "tiny", "--data", tmp_path / "nowhere", "--max-steps", "1"],
        ["train", "--data", tmp_path, "--lambda-lpips", "-1"],
        ["train", "--config", tmp_path / "missing.toml"],
        ["generate", "a person", "--model", "tiny", "--controlnet", tmp_path / "no-branch"],
    ]
    for args in cases:
        code, out, err = humanfix_cli(args)
        assert code == 2, args
        assert "Traceback" not in err + out
        assert err.startswith("humanfix: error: ") and err.count("\n") == 1, err


def test_unknown_toml_key_is_refused(humanfix_cli, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("learning_rat = 1e-4\n")
    code, _, err = humanfix_cli(["train", "--config", toml, "--data", tmp_path])
    assert code == 2 and "learning_rat" in err


def test_version_and_commands_in_workflow_order(humanfix_cli):
    from humanfix import __version__

    code, out, _ = humanfix_cli(["--version"])
    assert code == 0 and out.strip() == f"humanfix {__version__}"
    _, out, _ = humanfix_cli(["--help"])
    order = ["doctor", "prepare-data", "train", "generate", "evaluate"]
    positions = [out.index(f"│ {name} ") for name in order]  # the commands panel: one per line
    assert positions == sorted(positions), out


def test_train_help_shows_the_defaults_that_were_hidden(humanfix_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    _, out, _ = humanfix_cli(["train", "--help"])
    flat = " ".join(out.split())
    needles = ["stable-diffusion-v1-5", "default 3; 0: all", "accelerate launch", "1e-4 for a LoRA", "(default 0.2)"]
    needles += ["(default 0.5)", "--adam-beta1", "--snr-gamma", "--use-ema", "--save-dtype"]
    for needle in needles:
        assert needle in flat, needle
    assert "--validate-every" not in flat and "--validation-image-every" in flat  # the old name is hidden


def test_doctor_exit_code_and_whole_paths(humanfix_cli, tmp_path, monkeypatch):
    """Each detail sits whole on one line (no table folding a path); a missing needed asset exits 1."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / ("a-rather-long-folder-name" * 4)))
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = humanfix_cli(["doctor"])
    assert code == 1
    vgg = str(tmp_path / ("a-rather-long-folder-name" * 4) / "hub" / "checkpoints" / "vgg16-397923af.pth")
    assert vgg in out and "MISSING" in out and "absent (optional)" in out
    assert out.rstrip().splitlines()[-1].startswith("missing: ")


def test_every_train_option_has_a_flag_and_a_line_in_the_docs():
    """Every TrainConfig and [objective] key can be set on the command line and is documented."""
    import dataclasses

    import typer.main

    from humanfix.cli import app
    from humanfix.losses.objective import ObjectiveConfig
    from humanfix.train import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    flags = {p.name for p in command.params}
    keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "objective"]
    keys += [f.name for f in dataclasses.fields(ObjectiveConfig)]
    spelled = {"validation_prompts": "validation_prompt"}
    assert [k for k in keys if spelled.get(k, k) not in flags] == []
    docs = (REPO / "docs" / "training.md").read_text() + (REPO / "docs" / "objective.md").read_text()
    assert [k for k in keys if f"`{k}`" not in docs and f"--{k.replace('_', '-')}" not in docs] == []


def test_old_names_work_with_one_deprecation_line(humanfix_cli, tmp_path, monkeypatch):
    import humanfix.config
    import humanfix.evaluate.run as evaluate_run

    seen = {}
    monkeypatch.setattr(humanfix.config, "build_config", lambda cls, toml, **kw: seen.setdefault("kw", kw))
    monkeypatch.setattr(evaluate_run, "evaluate", lambda cfg: None)
    code, _, err = humanfix_cli(["evaluate", "--num-workers", "3", "--output", tmp_path / "e"])
    assert code == 0, err
    assert seen["kw"]["workers"] == 3 and "--num-workers is deprecated: use --workers" in err
    monkeypatch.undo()
    code, _, err = humanfix_cli(["prepare-data", "--out", tmp_path / "p"])  # no input: fails, after the line
    assert "--out is deprecated: use --output" in err
    toml = tmp_path / "p.toml"
    toml.write_text('out = "somewhere"\n')
    from humanfix.config import build_config
    from humanfix.data.prepare import PrepareConfig

    assert build_config(PrepareConfig, toml).output == Path("somewhere")


def test_a_key_in_the_wrong_table_gets_the_hint(humanfix_cli, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("lambda_lpips = 0.3\n")
    code, _, err = humanfix_cli(["train", "--config", toml, "--data", tmp_path])
    assert code == 2 and "lambda_lpips belongs under [objective]" in err
