"""Checkpoints and resume: a finished run resumed changes nothing; damaged checkpoints are named (or skipped,
saying so); non-finite weights are never saved; a full disk is one line, or room is made when that is safe."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file

from humanfix.errors import UserError
from humanfix.train import TrainingStopped, checkpoint_dirs, train

STEP2, STEP4 = "step-00000002", "step-00000004"


def weights(run):
    return load_file(run / "controlnet" / "diffusion_pytorch_model.safetensors")


def test_resuming_a_finished_run_changes_nothing_and_says_so(run_copy, train_config, caplog):
    data, run = run_copy
    before = {p: p.read_bytes() for p in [run / "metrics.jsonl", *sorted((run / "controlnet").iterdir())]}
    with caplog.at_level(logging.WARNING, logger="humanfix"):
        train(train_config(data, run, resume="latest"))
    assert "already finished (step 4 of 4)" in caplog.text
    assert {p: p.read_bytes() for p in before} == before  # the weights, humanfix.json, every metrics line
    assert [p.name for p in checkpoint_dirs(run)] == [STEP2, STEP4]


def _garble(path, offset=-4096):
    data = bytearray(path.read_bytes())
    data[offset:] = os.urandom(len(data[offset:]))
    path.write_bytes(bytes(data))


DAMAGE = {
    "model garbled": ("model.safetensors", _garble),
    "model truncated": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:1000])),
    "model empty": ("model.safetensors", lambda p: p.write_bytes(b"")),
    "model missing": ("model.safetensors", lambda p: p.unlink()),
    "optimizer truncated": ("optimizer.bin", lambda p: p.write_bytes(p.read_bytes()[:500])),
    "scheduler garbage": ("scheduler.bin", lambda p: p.write_bytes(os.urandom(300))),
    "state not JSON": ("trainer_state.json", lambda p: p.write_text("{step: 4")),
    "state wrong type": ("trainer_state.json", lambda p: p.write_text(json.dumps({"step": "4"}))),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_named_by_path_stops_with_its_file(run_copy, train_config, damage):
    data, run = run_copy
    name, hurt = DAMAGE[damage]
    hurt(run / "checkpoints" / STEP4 / name)
    with pytest.raises(UserError, match=f"{STEP4}/{name}|{STEP4}.*{name}"):
        train(train_config(data, run, resume=str(run / "checkpoints" / STEP4), max_steps=6))


def test_latest_falls_back_to_the_previous_complete_checkpoint_saying_so(run_copy, train_config, caplog):
    data, run = run_copy
    _garble(run / "checkpoints" / STEP4 / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="humanfix"):
        train(train_config(data, run, resume="latest"))
    assert f"skipping {STEP4}" in caplog.text and "model.safetensors" in caplog.text
    assert all(torch.isfinite(v).all() for v in weights(run).values())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # steps 3-4 replayed from step 2, logged once


def test_no_checkpoint_loading_cleanly_is_one_line(run_copy, train_config):
    data, run = run_copy
    for step in (STEP2, STEP4):
        (run / "checkpoints" / step / "optimizer.bin").write_bytes(b"")
    with pytest.raises(UserError, match="no checkpoint .* loads cleanly .*optimizer.bin"):
        train(train_config(data, run, resume="latest"))


def test_a_checkpoint_without_checksums_is_checked_by_loading_it(run_copy, train_config):
    data, run = run_copy
    ckpt = run / "checkpoints" / STEP4
    (ckpt / "checksums.json").unlink()  # as written before checksums existed
    state = load_file(ckpt / "model.safetensors")
    state[next(iter(state))][0] = float("nan")
    from safetensors.torch import save_file

    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(UserError, match="model.safetensors holds non-finite values"):
        train(train_config(data, run, resume=str(ckpt), max_steps=6))


def test_non_finite_weights_are_never_saved(prepared_set, tmp_path, train_config, wrap_loss):
    def poison_weights(n, run, out):
        if n == 3:  # the third update: a weight turns NaN (a bug, a bad resume): neither checkpoint nor result
            run.params[0].data.view(-1)[0] = float("nan")

    wrap_loss(poison_weights)
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped, match="non-finite values at step 4: no checkpoint"):
        train(train_config(prepared_set, out))
    assert [p.name for p in checkpoint_dirs(out)] == [STEP2]
    assert not (out / "controlnet").exists()


def test_a_run_whose_every_update_was_skipped_is_not_done(prepared_set, tmp_path, train_config, wrap_loss):
    wrap_loss(lambda n, run, out: setattr(out, "total", out.total * float("nan")))
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped, match=r"every update of this run \(2\) was skipped"):
        train(train_config(prepared_set, out, max_steps=2, checkpoint_every=0))
    assert not (out / "controlnet").exists()


def test_leftover_temporary_folders_are_removed_on_the_next_start(run_copy, train_config):
    data, run = run_copy
    (run / "checkpoints" / ".tmp-step-00000005").mkdir()
    (run / "checkpoints" / ".tmp-step-00000005" / "model.safetensors").write_bytes(b"half")
    (run / ".tmp-controlnet").mkdir()
    train(train_config(data, run, resume="latest", max_steps=6))
    assert not list((run / "checkpoints").glob(".tmp-*")) and not (run / ".tmp-controlnet").exists()


def _full_disk_once(monkeypatch, when: str):
    """accelerate's save_state raises ENOSPC (as a full disk does) the first time it writes ``when``."""
    from accelerate import Accelerator

    real, hits = Accelerator.save_state, []

    def save(self, output_dir=None, **kw):
        if output_dir.endswith(when) and not hits:
            hits.append(output_dir)
            open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", save)
    return hits


def test_a_full_disk_rotates_the_oldest_checkpoint_first_when_safe(
    prepared_set, tmp_path, train_config, monkeypatch, caplog
):
    hits = _full_disk_once(monkeypatch, "step-00000003")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="humanfix"):
        train(train_config(prepared_set, out, max_steps=3, checkpoint_every=1, keep_checkpoints=2))
    assert hits
    assert "deleting" in caplog.text and "step-00000001" in caplog.text
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002", "step-00000003"]
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_a_full_disk_with_nothing_safe_to_delete_is_one_line(prepared_set, tmp_path, train_config, monkeypatch):
    _full_disk_once(monkeypatch, "step-00000002")
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"disk full writing checkpoint step 2 in .*checkpoints: it needs about"):
        train(train_config(prepared_set, out, max_steps=2, checkpoint_every=1, keep_checkpoints=1))
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000001"]  # the earlier checkpoint survives
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_a_full_disk_at_the_final_save_is_one_line(prepared_set, tmp_path, train_config, monkeypatch):
    import humanfix.train as train_module

    def full(run):
        (tmp_path / "run" / ".tmp-controlnet").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "save_adapter", full)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=rf"disk full writing the trained controlnet in {out}: it needs about"):
        train(train_config(prepared_set, out, max_steps=2, checkpoint_every=2))
    assert [p.name for p in checkpoint_dirs(out)] == [STEP2] and not (out / ".tmp-controlnet").exists()


def test_a_full_disk_as_safetensors_reports_it_is_recognised():
    from humanfix.diskfull import is_disk_full

    class SafetensorError(Exception):
        pass

    assert is_disk_full(SafetensorError("Error while serializing: IoError(Os { code: 28, ... os error 28"))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
