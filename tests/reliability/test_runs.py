"""Whole runs under faults: two runs into one folder, SIGINT/SIGTERM during training, a full disk in prepare-data."""

from __future__ import annotations

import errno
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from humanfix.errors import UserError
from humanfix.runlock import LOCK_FILE
from humanfix.train import checkpoint_dirs, train


def _train_process(data: Path, out: Path, steps: int = 500) -> subprocess.Popen:
    args = ["--model", "tiny", "--data", data, "--split", "val", "--batch-size", "2", "--max-steps", steps,
            "--checkpoint-every", "0", "--lambda-lpips", "0", "--output", out]  # fmt: skip
    cmd = [sys.executable, "-m", "humanfix.cli", "train", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while time.time() < end:
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"train ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("train made no progress")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_update_writes_a_checkpoint_and_says_how_to_resume(
    prepared_set, tmp_path, train_config, sig
):
    out = tmp_path / "run"
    proc = _train_process(prepared_set, out)
    try:
        _wait_for_steps(out, 2, proc)
        if sig == signal.SIGTERM:  # meanwhile, a second run into the same folder stops with one line
            with pytest.raises(UserError, match=rf"in use by another humanfix train \(PID {proc.pid} on host "):
                train(train_config(prepared_set, out))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"humanfix: {sig.name} at step" in err and "--resume latest" in err and "Traceback" not in err
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    (ckpt,) = checkpoint_dirs(out)
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == steps[-1] >= 2  # no update lost
    assert f"checkpoint saved to {ckpt}" in err
    assert not list((out / "checkpoints").glob(".tmp-*")) and not (out / LOCK_FILE).exists()


def test_a_second_signal_aborts_at_once(prepared_set, tmp_path):
    out = tmp_path / "run"
    proc = _train_process(prepared_set, out)
    try:
        _wait_for_steps(out, 1, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)  # two signals before Python's handler runs count as one
        proc.send_signal(signal.SIGINT)
        t0 = time.time()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT  # killed by the signal itself, as its default action does
    assert time.time() - t0 < 30


def _lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "command": "train", "started": "earlier"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))


def test_a_live_run_holds_the_output_folder_and_a_dead_ones_lock_is_taken_over(
    prepared_set, tmp_path, train_config, caplog, fresh_accelerate_state
):
    out = tmp_path / "run"
    sleeper = subprocess.Popen(["sleep", "60"])
    _lock(out, sleeper.pid)
    with pytest.raises(UserError, match=rf"PID {sleeper.pid} on host {socket.gethostname()}"):
        train(train_config(prepared_set, out, max_steps=1, checkpoint_every=0))
    assert not (out / "metrics.jsonl").exists()
    sleeper.kill()
    sleeper.wait()  # now a PID nobody has: a stale lock, taken over
    fresh_accelerate_state()
    train(train_config(prepared_set, out, max_steps=1, checkpoint_every=0))
    assert "taking over a stale lock" in caplog.text and not (out / LOCK_FILE).exists()


def test_a_lock_held_from_another_host_is_never_taken_over(prepared_set, tmp_path, train_config):
    out = tmp_path / "run"
    _lock(out, 1, "node-17")
    with pytest.raises(UserError, match=r"PID 1 on host node-17.*if that run is gone, delete .*\.humanfix\.lock"):
        train(train_config(prepared_set, out, max_steps=1))


def _coco(tmp_path: Path, n: int = 2) -> tuple[Path, Path]:
    """A minimal COCO split: n grey 64×48 images, one big rectangular person each."""
    from PIL import Image

    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    ims, anns = [], []
    for i in range(1, n + 1):
        Image.new("RGB", (64, 48), (128, 128, 128)).save(images / f"{i}.jpg")
        ims.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        anns.append({"id": 10 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 1200.0,
                     "bbox": [12, 4, 40, 40], "segmentation": [[12, 4, 52, 4, 52, 44, 12, 44]],
                     "keypoints": [0] * 51})  # fmt: skip
    kp = tmp_path / "coco" / "person_keypoints.json"
    kp.write_text(json.dumps({"images": ims, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return kp, images


def _prepare_args(kp: Path, images: Path, out: Path) -> list:
    return ["prepare-data", "--keypoints", kp, "--images", images, "--split", "val", "--default-caption", "a person",
            "--face-detector", "none", "--workers", "1", "--resolution", "32", "--out", out]  # fmt: skip


def test_prepare_data_holds_its_output_folder(tmp_path, humanfix_cli):
    kp, images = _coco(tmp_path)
    out = tmp_path / "set"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _lock(out, sleeper.pid)
        code, _, err = humanfix_cli(_prepare_args(kp, images, out))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 2 and f"PID {sleeper.pid}" in err and "Traceback" not in err
    assert not (out / "val").exists()


def test_a_full_disk_in_prepare_data_is_one_line_and_the_rerun_resumes(tmp_path, humanfix_cli, monkeypatch):
    import humanfix.data.prepare as prepare_module

    kp, images = _coco(tmp_path, n=3)
    out = tmp_path / "set"
    real = prepare_module.write_atomic
    calls = []

    def full_after_one_image(path, data):
        calls.append(path)
        if len(calls) > 5:  # the settings file, then the first image's image, mask, person crop, record: then full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(prepare_module, "write_atomic", full_after_one_image)
    code, _, err = humanfix_cli(_prepare_args(kp, images, out))
    assert code == 2, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("humanfix: error: disk full")
    assert f"disk full writing 2 more image(s) in {out / 'val'}: it needs about" in err
    monkeypatch.setattr(prepare_module, "write_atomic", real)
    code, _, err = humanfix_cli(_prepare_args(kp, images, out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())["splits"]["val"]
    assert summary["kept"] == 3 and summary["reused"] == 1
