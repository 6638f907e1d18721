"""``humanfix doctor``: the environment, and for each pretrained asset whether it is here or where it goes."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from humanfix.models import weights
from humanfix.models.tiny import tiny_model_dir


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    needed: bool = True  # training with the defaults needs it; False: only some options do (doctor says which)


def device_summary() -> str:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"cuda ({names})"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu (no CUDA or MPS device found)"


def run_checks(sd_model: str = weights.SD15_HUB_ID) -> list[Check]:
    """Every check ``doctor`` prints; ``ok`` False means the asset is missing, ``detail`` says where it goes."""
    import torch

    checks = [
        Check("python", True, platform.python_version()),
        Check("torch", True, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})"),
        Check("device", True, device_summary()),
    ]
    present, where = weights.sd15_location(sd_model)
    checks.append(Check(f"SD 1.5 pipeline ({sd_model})", present, where if present else f"missing: belongs in {where}"))
    for asset in weights.FILE_ASSETS:
        path = asset.path()
        ok = path.is_file()
        detail = str(path) if ok else f"missing: put {asset.url} at {path}"
        checks.append(Check(asset.description, ok, detail, needed=asset in weights.TRAINING_ASSETS))
    for model in weights.HUB_MODELS:
        present, where = model.location()
        detail = where if present else f"missing: `hf download {model.hub_id}` (belongs in {where})"
        checks.append(Check(f"{model.description} ({model.hub_id})", present, detail, needed=False))
    from humanfix.evaluate.hands import mediapipe_status

    checks.append(Check("MediaPipe Hands (evaluate --hands; optional)", *mediapipe_status(), needed=False))
    heads = weights.lpips_heads_path()
    checks.append(Check("LPIPS linear heads (ship with lpips)", heads.is_file(), str(heads)))
    tiny = tiny_model_dir()
    built = (tiny / "model_index.json").is_file()
    checks.append(Check("built-in tiny model", True, f"{tiny} ({'written' if built else 'written on first use'})"))
    return checks


def report_lines(checks: list[Check]) -> list[str]:
    """``doctor``'s output: a status and a name per line, the detail on the next, never wrapped inside a path.

    Plain lines (no table): a terminal soft-wraps a long path or command whole, and a copy-paste gets it back intact.
    """
    lines = []
    for c in checks:
        status = "ok" if c.ok else ("MISSING" if c.needed else "absent (optional)")
        lines.append(f"{status:<18} {c.name}")
        lines.append(f"{'':<18} {c.detail}")
    missing = [c.name for c in checks if c.needed and not c.ok]
    lines.append("")
    lines.append(f"missing: {', '.join(missing)}" if missing else "everything training needs is here")
    return lines
