"""Which torch device a command runs on."""

from __future__ import annotations

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
