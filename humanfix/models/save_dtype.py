"""``train --save-dtype``: the saved adapter's floating-point tensors in fp16 or bf16 (what UIs' LoRA files are).

Training keeps the adapter in fp32; only the files are cast, after they are written, so every writer (the
diffusers branch, the diffusers LoRA, the kohya LoRA) is covered by one function and their metadata is kept.
"""

from __future__ import annotations

from pathlib import Path

import torch

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cast_safetensors(folder: str | Path, save_dtype: str) -> list[Path]:
    """Rewrite every ``*.safetensors`` in ``folder`` with its floating tensors as ``save_dtype``; returns the files."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dtype = SAVE_DTYPES[save_dtype]
    files = sorted(Path(folder).glob("*.safetensors"))
    if dtype == torch.float32:
        return files
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(path), metadata=metadata)
    return files
