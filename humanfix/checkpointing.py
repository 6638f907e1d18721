"""Checkpoint integrity for ``train``: checksums, validation before a resume, room on the disk.

A checkpoint folder (``OUTPUT/checkpoints/step-N``) is complete once ``trainer_state.json`` is in it (written
last, after a rename makes the folder appear whole). Just before that, ``checksums.json`` records every file's
size and CRC-32, so that a file damaged later (truncated, overwritten with garbage, emptied) is found before a
resume loads it, and named. Checkpoints written before checksums existed are checked by loading each file.

``--resume latest`` falls back to the newest checkpoint that checks out, saying which one it skipped and why;
``--resume PATH`` stops with one line naming the damaged file.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any

import torch

from humanfix.errors import UserError

log = logging.getLogger(__name__)

CHECKSUMS = "checksums.json"
_CHUNK = 16 << 20
# The counters trainer_state.json holds, each a non-negative integer.
STATE_KEYS = ("step", "nonfinite_total", "nonfinite_in_a_row", "overflow_total")


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path, skip: tuple[str, ...] = ()) -> None:
    """``folder/checksums.json``: {relative path: [bytes, crc32]} of every file in it but ``skip``."""
    sums = {p.relative_to(folder).as_posix(): [p.stat().st_size, _crc32(p)] for p in _files(folder)}
    (folder / CHECKSUMS).write_text(json.dumps({k: v for k, v in sums.items() if k not in skip}, indent=0))


def read_state(folder: Path, state_file: str) -> dict[str, Any]:
    """``trainer_state.json`` checked: a JSON object whose counters are non-negative integers."""
    path = folder / state_file
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: not a complete humanfix checkpoint") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged: not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is damaged: not a JSON object")
    for key in STATE_KEYS:
        value = state.get(key, 0 if key != "step" else None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"{path} is damaged: {key!r} must be a non-negative integer, got {value!r}")
    return state


def problem(folder: Path, state_file: str) -> str | None:
    """What is wrong with the checkpoint ``folder`` (naming the file), or None when it can be resumed from."""
    try:
        read_state(folder, state_file)
    except UserError as e:
        return str(e)
    sums_path = folder / CHECKSUMS
    if sums_path.is_file():
        try:
            sums = json.loads(sums_path.read_text())
        except (OSError, ValueError):
            return f"{sums_path} is damaged: not valid JSON"
        for name, (size, crc) in sums.items():
            path = folder / name
            if not path.is_file():
                return f"{path} is missing"
            if path.stat().st_size != size:
                return f"{path} is damaged: {path.stat().st_size} bytes, {size} were written (truncated?)"
            if _crc32(path) != crc:
                return f"{path} is damaged: its contents changed since it was written (checksum)"
        return None
    return _load_each(folder)


def _load_each(folder: Path) -> str | None:
    """For checkpoints without checksums: every file must load (and the weights be finite)."""
    from safetensors.torch import load_file

    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return f"{folder} holds no model file (model.safetensors or pytorch_lora_weights.safetensors)"
    for name in ("optimizer.bin", "scheduler.bin"):
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
    for path in weights:
        try:
            tensors = load_file(path)
        except Exception as e:  # safetensors raises its own error type for every kind of damage
            return f"{path} is damaged: {str(e).splitlines()[0][:200]}"
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            return f"{path} holds non-finite values ({bad[0]}{' …' if len(bad) > 1 else ''})"
    for path in sorted([*folder.glob("*.bin"), *folder.glob("*.pkl")]):
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            return f"{path} is damaged: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
    return None


def all_finite(params: list[torch.Tensor]) -> bool:
    """Whether every value of ``params`` is finite (one reduction, one host sync: for save time only)."""
    if not params:
        return True
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all().item())


def rotatable(existing: list[Path], keep: int) -> list[Path]:
    """The checkpoints the next save would rotate out anyway, when deleting them *before* it is safe.

    After a save, ``keep`` checkpoints remain (0: all). Deleting the oldest beyond ``keep - 1`` first leaves at
    least one complete checkpoint on disk while the new one is written: safe when ``keep >= 2``. With
    ``keep == 1`` that would delete the only one: never.
    """
    if keep < 2 or len(existing) < keep:
        return []
    return existing[: len(existing) - (keep - 1)]
