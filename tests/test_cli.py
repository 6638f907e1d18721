"""The CLI's shell: --help, doctor, and one-line errors with exit code 2."""

import subprocess
import sys


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
    assert code == 0
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
