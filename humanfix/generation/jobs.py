"""What to draw: prompts, per-image seeds, the models to draw with, file names and index records.

Everything here is plain data, decided before any model loads, so a rerun knows which images exist
already and every process of a multi-process run derives the same work list.

Seeds: image ``i`` of prompt ``p`` (both counted from 0) gets ``base + i``, where ``base`` is the prompt's
own ``"seed"`` from a JSONL prompts file, or else ``--seed + p * num_images``. So by default every image
of a run has its own seed (no two prompts share their starting noise), and ``--compare`` draws the same
seeds through every model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humanfix.errors import UserError
from humanfix.models.lora import LORA_WEIGHTS
from humanfix.models.pipeline import CONDITIONINGS, read_branch_meta

BASE_LABEL = "base"  # --compare's name for plain SD (no adapter)
INDEX_KEYS = (
    "file",
    "prompt",
    "negative_prompt",
    "seed",
    "model",
    "branch",
    "lora",
    "label",
    "steps",
    "guidance_scale",
    "scheduler",
    "height",
    "width",
    "conditioning",
    "conditioning_scale",
    "lora_scale",
    "condition_image",
)  # one record of OUTPUT/index.jsonl, in this order; evaluate reads it


@dataclass(frozen=True)
class PromptSpec:
    """One prompt as given; ``None`` fields fall back to the command-line values."""

    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    condition_image: str | None = None


@dataclass(frozen=True)
class Job:
    """One image to draw (with every model of the run)."""

    prompt_index: int
    image_index: int
    prompt: str
    negative_prompt: str
    seed: int
    condition_image: str | None  # path of this prompt's conditioning image, or None for --condition-image

    @property
    def name(self) -> str:
        """File name, unique within one model's folder: ``00012_03_seed48.png``."""
        return f"{self.prompt_index:05d}_{self.image_index:02d}_seed{self.seed}.png"


@dataclass(frozen=True)
class ModelSpec:
    """One row of a comparison: plain SD, SD plus a ControlNet branch, or SD with a LoRA (at most one adapter)."""

    label: str
    branch: Path | None
    conditioning: str | None  # the branch's saved training choice; None without a branch
    subdir: str  # where its images go inside OUTPUT ("" without --compare)
    lora: Path | None = None  # a LoRA folder (pytorch_lora_weights.safetensors)


def read_prompts(prompts: Sequence[str], prompts_file: Path | None) -> list[PromptSpec]:
    """The command-line prompts, then the file's: one prompt per line, or JSONL objects.

    A ``.jsonl`` file (or any file whose first non-blank line starts with ``{``) holds one object per
    line with ``"prompt"`` and optionally ``"seed"``, ``"negative_prompt"`` and ``"condition_image"``
    (relative to the file's folder). Blank lines are skipped. No prompt at all is a :class:`UserError`.
    """
    specs = [PromptSpec(p) for p in prompts]
    if prompts_file is not None:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise UserError(f"prompts file not found: {path}")
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        jsonl = path.suffix == ".jsonl" or (bool(lines) and lines[0][1].startswith("{"))
        for n, line in lines:
            specs.append(_json_prompt(line, path, n) if jsonl else PromptSpec(line))
    for s in specs:
        if not s.prompt.strip():
            raise UserError("empty prompt: every prompt must have some text")
    if not specs:
        raise UserError("no prompts: give prompts as arguments or with --prompts-file")
    return specs


def _json_prompt(line: str, path: Path, n: int) -> PromptSpec:
    where = f"{path}:{n}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise UserError(f'{where}: each JSONL line must be an object with a "prompt" string')
    unknown = sorted(set(obj) - {"prompt", "seed", "negative_prompt", "condition_image"})
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: prompt, seed, negative_prompt, condition_image)"
        )
    seed = obj.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UserError(f'{where}: "seed" must be a non-negative integer, got {seed!r}')
    neg = obj.get("negative_prompt")
    if neg is not None and not isinstance(neg, str):
        raise UserError(f'{where}: "negative_prompt" must be a string')
    cond = obj.get("condition_image")
    if cond is not None:
        cond_path = (path.parent / str(cond)).expanduser()
        if not cond_path.is_file():
            raise UserError(f"{where}: condition image not found: {cond_path}")
        cond = str(cond_path)
    return PromptSpec(obj["prompt"], neg, seed, cond)


def make_jobs(specs: Sequence[PromptSpec], num_images: int, seed: int, negative_prompt: str) -> list[Job]:
    """``num_images`` jobs per prompt, prompt-major, with the seeds of the module docstring."""
    jobs = []
    for p, s in enumerate(specs):
        base = s.seed if s.seed is not None else seed + p * num_images
        neg = s.negative_prompt if s.negative_prompt is not None else negative_prompt
        jobs += [Job(p, i, s.prompt, neg, base + i, s.condition_image) for i in range(num_images)]
    return jobs


def _safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "branch"


ADAPTER_FILES = {"controlnet": "config.json", "lora": LORA_WEIGHTS}  # the file that says what a folder holds
ADAPTER_NAMES = {"controlnet": "ControlNet branch", "lora": "LoRA"}


def adapter_kind(path: Path) -> str | None:
    """What a folder holds: ``"controlnet"`` (config.json), ``"lora"`` (pytorch_lora_weights.safetensors) or None."""
    return next((kind for kind, name in ADAPTER_FILES.items() if (path / name).is_file()), None)


def _adapter_spec(label: str | None, folder: str, taken: set[str], subdir: bool, want: str | None) -> ModelSpec:
    """The row of a branch or LoRA folder; ``want`` is what the flag asks for (None: either, as --compare)."""
    path = Path(folder).expanduser()
    what = ADAPTER_NAMES.get(want, "adapter")
    if not path.is_dir():
        raise UserError(f"{what} not found: {path} is not a folder")
    kind = adapter_kind(path)
    if kind is None or want not in (None, kind):
        needs = f"no {ADAPTER_FILES[want]}" if want else f"neither config.json nor {LORA_WEIGHTS}"
        hint = f" (it holds a {ADAPTER_NAMES[kind]}: pass it with --{kind})" if kind else ""
        raise UserError(f"{what} not found: {path} has {needs}{hint}")
    conditioning = None
    if kind == "controlnet":
        conditioning = read_branch_meta(path).get("conditioning", "none")
        if conditioning not in CONDITIONINGS:
            raise UserError(f"{path}: unknown conditioning {conditioning!r} in its humanfix.json")
    if label is None:  # the folder's name; for training's generic RUN/controlnet or RUN/lora, the run's name
        parts = path.resolve().parts
        label = _safe_label(parts[-2] if parts[-1] == kind and len(parts) > 1 else parts[-1])
        if label in taken:
            label = _safe_label("-".join(parts[-2:]))
    label = _safe_label(label)
    base, k = label, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    if kind == "lora":
        return ModelSpec(label, None, None, label if subdir else "", lora=path)
    return ModelSpec(label, path, conditioning, label if subdir else "")


def resolve_models(controlnet: Path | None, compare: Sequence[str] | None, lora: Path | None = None) -> list[ModelSpec]:
    """The models of the run, in row order; each adapter folder is checked here to be what it is used as.

    Without ``compare``: one model (plain SD, SD plus ``controlnet``, or SD with ``lora``) writing into OUTPUT
    itself. With it: ``base`` means plain SD, anything else a branch or LoRA folder (each folder says which),
    optionally as ``LABEL=DIR``; each model writes into ``OUTPUT/LABEL``.
    """
    if compare is None:
        if controlnet is not None and lora is not None:
            raise UserError("give either --controlnet or --lora: one adapter per model (compare them with --compare)")
        if controlnet is not None:
            return [_adapter_spec(None, str(controlnet), set(), subdir=False, want="controlnet")]
        if lora is not None:
            return [_adapter_spec(None, str(lora), set(), subdir=False, want="lora")]
        return [ModelSpec(BASE_LABEL, None, None, "")]
    if controlnet is not None or lora is not None:
        raise UserError("give either --controlnet/--lora or --compare (list the adapter in --compare instead)")
    items = [c.strip() for c in compare if c.strip()]
    if not items:
        raise UserError("--compare needs at least one model: base and/or adapter folders, comma-separated")
    models: list[ModelSpec] = []
    for item in items:
        taken = {m.label for m in models}
        label, _, folder = item.rpartition("=") if "=" in item else (None, "", item)
        if folder == BASE_LABEL:
            name = _safe_label(label) if label else BASE_LABEL
            if name in taken:
                raise UserError(f"--compare lists {name!r} twice")
            models.append(ModelSpec(name, None, None, name))
        else:
            models.append(_adapter_spec(label or None, folder, taken | {BASE_LABEL}, subdir=True, want=None))
    return models


def index_record(job: Job, model: ModelSpec, settings: dict[str, Any], condition_image: str | None) -> dict:
    """The index.jsonl record (and PNG "parameters" chunk) of ``job`` drawn by ``model``.

    ``settings`` holds ``model, steps, guidance_scale, scheduler, height, width, conditioning_scale, lora_scale``.
    Without a branch, ``branch``, ``conditioning``, ``conditioning_scale`` and ``condition_image`` are null;
    without a LoRA, ``lora`` and ``lora_scale``.
    """
    has_branch = model.branch is not None
    has_lora = model.lora is not None
    needs_image = model.conditioning in ("pose", "mask")
    rec = {
        "file": f"{model.subdir}/{job.name}" if model.subdir else job.name,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "model": settings["model"],
        "branch": str(model.branch) if has_branch else None,
        "lora": str(model.lora) if has_lora else None,
        "label": model.label,
        "steps": settings["steps"],
        "guidance_scale": settings["guidance_scale"],
        "scheduler": settings["scheduler"],
        "height": settings["height"],
        "width": settings["width"],
        "conditioning": model.conditioning if has_branch else None,
        "conditioning_scale": settings["conditioning_scale"] if has_branch else None,
        "lora_scale": settings["lora_scale"] if has_lora else None,
        "condition_image": (job.condition_image or condition_image) if needs_image else None,
    }
    assert tuple(rec) == INDEX_KEYS
    return rec
