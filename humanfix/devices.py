"""Which torch device a command runs on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from humanfix.errors import UserError


def resolve_device(device: str, default: Any = None) -> Any:
    """``auto``: ``default`` (accelerate's device for this process) or CUDA when present, else CPU."""
    import torch

    if device == "auto":
        if default is not None:
            return torch.device(default)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device (try cpu, cuda, cuda:1, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")
    return dev


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Within the block, only deterministic kernels (``torch.use_deterministic_algorithms``; an op without one
    raises) and cuBLAS with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set, as
    PyTorch's reproducibility notes ask); cuDNN autotuning off. The previous settings come back afterwards."""
    import torch

    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
