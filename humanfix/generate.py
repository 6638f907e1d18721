"""``humanfix generate``: text-to-image with SD 1.5, optionally plus a trained ControlNet branch or LoRA.

Features, in the order the code meets them:

- prompts from the command line and/or a prompts file (plain lines or JSONL with per-prompt seed,
  negative prompt and condition image); per-image seeds as documented in :mod:`humanfix.generation.jobs`;
- one model (plain SD, SD + ``--controlnet``, or SD with ``--lora``) or ``--compare base,DIR1,...``: the same
  prompts and seeds through each model, one folder per model and a labelled grid per prompt (one row per model);
  each folder says whether it is a branch (config.json) or a LoRA (pytorch_lora_weights.safetensors);
- a LoRA is loaded as plain diffusers does (``pipe.load_lora_weights(DIR)``) and drawn at ``--lora-scale``
  (``cross_attention_kwargs={"scale": S}``), so the pixels equal a plain diffusers call's;
- conditioning follows the branch's saved choice: ``none`` gets a black image, ``pose``/``mask`` take
  ``--condition-image`` (or a per-prompt ``condition_image``);
- every image has its own CPU ``torch.Generator``, so batching and the device do not change the starting
  noise; same seed and settings on the same device give identical files;
- resume: images already in OUTPUT (same settings, checked from their PNG metadata) are skipped;
- ``accelerate launch`` splits the images across processes by striding; process 0 writes
  ``index.jsonl`` and the grids once all are done;
- a rich progress bar with ETA; ``--compile`` wraps UNet and branch in ``torch.compile``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humanfix.errors import UserError
from humanfix.generation.jobs import (
    INDEX_KEYS,
    Job,
    ModelSpec,
    index_record,
    make_jobs,
    read_prompts,
    resolve_models,
)
from humanfix.generation.pipelines import DTYPES, SCHEDULERS
from humanfix.generation.prompt_sets import prompt_set
from humanfix.models.weights import SD15_HUB_ID as SD15

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
GRIDS = "grids"
RESUME_IGNORES = ("file", "branch", "lora", "condition_image")  # paths may be spelled differently on a rerun


@dataclass
class GenerateConfig:
    """Everything ``humanfix generate`` needs; checked on creation."""

    prompts: tuple[str, ...] = ()  # prompts given as arguments (drawn before the prompts file's)
    prompts_file: Path | None = None  # one prompt per line, or JSONL {"prompt", "seed", "negative_prompt", ...}
    prompt_set: str | None = None  # a built-in set drawn after the prompts given ("hands": hands large in frame)
    # base SD 1.5: hub id, diffusers folder, single file, or "tiny"; unset: the base recorded in the adapters'
    # humanfix.json (what they were trained on), else SD 1.5
    model: str | None = None
    model_config: Path | None = None  # diffusers folder with the configs when --model is a single file
    controlnet: Path | None = None  # trained branch folder; None draws with plain SD
    lora: Path | None = None  # trained LoRA folder (train --adapter lora's OUTPUT/lora); None: no LoRA
    compare: tuple[str, ...] | None = None  # "base" and/or branch or LoRA folders ("LABEL=DIR"): one grid row each
    conditioning_scale: float = 1.0  # weight of the branch's residuals (ControlNet conditioning scale)
    lora_scale: float = 1.0  # weight of the LoRA (diffusers' cross_attention_kwargs scale; 0 draws plain SD)
    condition_image: Path | None = None  # pose/mask image for branches trained with that conditioning
    negative_prompt: str = ""  # for every prompt without its own
    num_images: int = 1  # images per prompt
    seed: int = 0  # image i of prompt p gets seed + p * num_images + i (unless the prompt has its own seed)
    steps: int = 50  # denoising steps
    guidance_scale: float = 7.5  # classifier-free guidance; <= 1 turns it off
    scheduler: str = "ddim"  # sampler: ddim, unipc, euler or dpm
    height: int = 512  # image height in pixels, a multiple of 8
    width: int = 512  # image width in pixels, a multiple of 8
    batch_size: int = 4  # images per pipeline call (does not change the pixels)
    dtype: str = "auto"  # auto (float16 on CUDA, else float32), float32, float16 or bfloat16
    device: str = "auto"  # auto (this process's accelerate device), cpu, cuda, cuda:1, ...
    output: Path = Path("outputs/generate")  # images, index.jsonl and (with --compare) grids/
    compile: bool = False  # torch.compile the UNet and branch (pays off for long runs)

    def __post_init__(self) -> None:
        self.prompts = tuple(self.prompts)
        prompt_set(self.prompt_set)  # an unknown name fails here, before any model loads
        if self.compare is not None:
            self.compare = tuple(self.compare)
        if self.model is None:
            self.model = _base_of_adapters(self) or SD15
        self.output = Path(self.output)
        for name in ("num_images", "steps", "batch_size", "height", "width"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("height", "width"):
            if getattr(self, name) % 8:
                raise UserError(f"--{name} must be a multiple of 8 (the VAE's factor), got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be a non-negative integer below 2**63, got {self.seed}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        self.guidance_scale, self.conditioning_scale = (
            float(self.guidance_scale),
            float(self.conditioning_scale),
        )
        if self.guidance_scale < 0 or self.conditioning_scale < 0:
            raise UserError("--guidance-scale and --conditioning-scale must not be negative")
        self.lora_scale = float(self.lora_scale)
        if not math.isfinite(self.lora_scale):
            raise UserError(f"--lora-scale must be a finite number, got {self.lora_scale}")

    def settings(self) -> dict[str, Any]:
        """The values every index record carries besides the job's own."""
        keys = ("model", "steps", "guidance_scale", "scheduler", "height", "width", "conditioning_scale", "lora_scale")
        return {k: getattr(self, k) for k in keys}


@dataclass
class GenerateResult:
    """What a run did: counts, where the index is, and how long each pipeline call took."""

    output: Path
    index: Path
    written: int = 0  # images this process drew
    skipped: int = 0  # images this process found already done
    batches: list[tuple[int, float]] = field(default_factory=list)  # (images, seconds) per call, incl. saving
    grids: list[Path] = field(default_factory=list)
    process: tuple[int, int] = (0, 1)  # (this process's index, number of processes)


def _base_of_adapters(config: GenerateConfig) -> str | None:
    """The base model the run's adapters were trained on, from their humanfix.json (``--model`` unset)."""
    from humanfix.models.pipeline import recorded_base_model

    folders = [f for f in (config.controlnet, config.lora) if f is not None]
    folders += [c.split("=", 1)[-1] for c in config.compare or () if c.split("=", 1)[-1] != "base"]
    base = recorded_base_model(folders)
    if base is not None:
        log.info("base model %s (recorded in the adapter's humanfix.json; --model overrides it)", base)
    return base


def _check_conditioning(models: list[ModelSpec], jobs: list[Job], image: Path | None) -> None:
    kinds = sorted({m.conditioning for m in models if m.conditioning in ("pose", "mask")})
    if len(kinds) > 1:
        raise UserError(
            "these branches were trained on different conditioning (pose and mask); one run "
            "takes one condition image: compare them in separate runs"
        )
    if not kinds:
        if image is not None:
            log.warning("--condition-image is ignored: no branch of this run was trained with pose/mask conditioning")
        return
    if image is None and any(j.condition_image is None for j in jobs):
        branch = next(m.branch for m in models if m.conditioning == kinds[0])
        raise UserError(
            f"the branch {branch} was trained with {kinds[0]} conditioning: pass --condition-image PATH "
            f'(a {kinds[0]} image), or a "condition_image" per prompt in a JSONL prompts file'
        )
    if image is not None:
        from humanfix.generation.pipelines import load_condition

        load_condition(image)  # fails now, not after the first model's images


def _check_seeds(jobs: list[Job]) -> None:
    """Every image's seed within what ``--seed`` itself takes (seed + p * num_images + i may pass 2**63)."""
    over = next((j for j in jobs if not 0 <= j.seed < 2**63), None)
    if over is not None:
        raise UserError(
            f"prompt {over.prompt_index + 1}, image {over.image_index + 1} would get seed {over.seed}, past 2**63 - 1: "
            "lower --seed (or the prompts' own seeds) or --num-images"
        )


def warn_long_prompts(tokenizer: Any, jobs: list[Job]) -> None:
    """One warning when prompts (or negative prompts) are longer than the text encoder takes: CLIP cuts them."""
    limit = tokenizer.model_max_length
    texts = sorted({t for j in jobs for t in (j.prompt, j.negative_prompt) if t})
    lengths = {t: len(tokenizer(t, truncation=False).input_ids) for t in texts}
    long = [t for t in texts if lengths[t] > limit]
    if long:
        worst = max(long, key=lengths.get)
        log.warning(
            "%d prompt(s) are longer than the text encoder's %d tokens and are cut there (the longest has %d: %r)",
            len(long), limit, lengths[worst], worst[:80] + ("…" if len(worst) > 80 else ""),
        )  # fmt: skip


def _wants_cpu(device: str) -> bool:
    import torch

    return device.startswith("cpu") or (device == "auto" and not torch.cuda.is_available())


def _is_done(out: Path, record: dict[str, Any]) -> bool:
    """True when ``out/record["file"]`` holds this record's image; one made with other settings is an error."""
    path = out / record["file"]
    if not path.exists():
        return False
    from humanfix.generation.pngmeta import read_parameters

    params = read_parameters(path)
    keys = [k for k in INDEX_KEYS if k not in RESUME_IGNORES]
    if params is None or any(params.get(k) != record[k] for k in keys):
        diff = "unreadable" if params is None else next(k for k in keys if params.get(k) != record[k])
        raise UserError(f"{path} already exists but was made differently ({diff}): pick a new --output or delete it")
    return True


def generate(config: GenerateConfig) -> GenerateResult:
    """Draw every (prompt, image) with every model of ``config``; see the module docstring."""
    from accelerate import PartialState

    from humanfix.models.pipeline import resolve_model

    specs = read_prompts(config.prompts + prompt_set(config.prompt_set), config.prompts_file)
    jobs = make_jobs(specs, config.num_images, config.seed, config.negative_prompt)
    _check_seeds(jobs)
    models = resolve_models(config.controlnet, config.compare, config.lora)
    _check_conditioning(models, jobs, config.condition_image)
    location, _ = resolve_model(config.model)  # prints the tiny model's notice

    state = PartialState(cpu=_wants_cpu(config.device))  # cpu=True lets torchrun's CPU processes find each other
    out = config.output.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    result = GenerateResult(out, out / INDEX, process=(state.process_index, state.num_processes))
    settings = config.settings()
    cond = str(config.condition_image) if config.condition_image else None
    mine = jobs[state.process_index :: state.num_processes]
    todo: list[tuple[ModelSpec, list[Job]]] = []
    for m in models:
        pending = [j for j in mine if not _is_done(out, index_record(j, m, settings, cond))]
        result.skipped += len(mine) - len(pending)
        todo.append((m, pending))
    if any(p for _, p in todo):
        _draw_all(config, location, todo, state, result)
    state.wait_for_everyone()
    if state.is_main_process:
        _write_index(out, jobs, models, settings, cond)
        if config.compare is not None:
            result.grids = _write_grids(out, specs, jobs, models, settings, cond)
    return result


def quiet_loading() -> None:
    """No per-shard progress bars from diffusers/transformers while loading (our own bar follows)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()  # e.g. "modules ... should be kept in float32" on .to(dtype)
    transformers.utils.logging.disable_progress_bar()


def _draw_all(
    config: GenerateConfig,
    location: str,
    todo: list[tuple[ModelSpec, list[Job]]],
    state: Any,
    result: GenerateResult,
) -> None:
    """Load the base once, then each adapter in turn, and draw the pending jobs in batches."""
    import torch
    from diffusers import ControlNetModel
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from humanfix.generation import pipelines as P
    from humanfix.generation.pngmeta import save_png
    from humanfix.models.lora import check_lora_fits
    from humanfix.models.pipeline import check_branch_fits, load_components, make_controlnet

    device = P.resolve_device(config.device, state.device)
    dtype = P.resolve_dtype(config.dtype, device)
    quiet_loading()
    comps = load_components(location, config.model_config, dtype)
    warn_long_prompts(comps.tokenizer, [j for _, js in todo for j in js])
    for m, _ in todo:  # every adapter must fit before any image is drawn
        if m.branch is not None:
            check_branch_fits(ControlNetModel.load_config(str(m.branch)), comps.unet.config, m.branch)
        if m.lora is not None:
            check_lora_fits(m.lora, comps.unet)
    for part in (comps.text_encoder, comps.vae, comps.unet):
        part.to(device).eval()  # already in dtype
    if config.compile:
        comps.unet = torch.compile(comps.unet)
    scheduler = P.make_scheduler(config.scheduler, comps)
    settings = config.settings()
    cond = str(config.condition_image) if config.condition_image else None
    images: dict[str, Any] = {}  # condition images by path, loaded once

    def condition(model: ModelSpec, job: Job) -> Any:
        if model.conditioning == "none":
            return P.blank_condition(config.height, config.width)
        path = job.condition_image or cond
        if path not in images:
            images[path] = P.load_condition(path)
        return images[path]

    total = sum(len(p) for _, p in todo)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not state.is_main_process) as bar:
        task = bar.add_task("generating", total=total)
        for model, pending in todo:
            if not pending:
                continue
            branch = None
            if model.branch is not None:
                branch = make_controlnet(getattr(comps.unet, "_orig_mod", comps.unet), model.branch)
                branch = branch.to(device=device, dtype=dtype).eval()
                if config.compile:
                    branch = torch.compile(branch)
            pipe = P.build_pipeline(comps, scheduler, branch)
            if model.lora is not None:
                pipe.load_lora_weights(str(model.lora))
            bar.update(task, description=f"generating [{model.label}]")
            for start in range(0, len(pending), config.batch_size):
                batch = pending[start : start + config.batch_size]
                t0 = time.perf_counter()
                kw: dict[str, Any] = dict(
                    prompt=[j.prompt for j in batch],
                    negative_prompt=[j.negative_prompt for j in batch],
                    num_inference_steps=config.steps,
                    guidance_scale=config.guidance_scale,
                    height=config.height,
                    width=config.width,
                    generator=[torch.Generator("cpu").manual_seed(j.seed) for j in batch],
                )
                if branch is not None:
                    kw["image"] = [condition(model, j) for j in batch]
                    kw["controlnet_conditioning_scale"] = config.conditioning_scale
                if model.lora is not None:
                    kw["cross_attention_kwargs"] = {"scale": config.lora_scale}
                with torch.inference_mode():
                    drawn = pipe(**kw).images
                for job, image in zip(batch, drawn, strict=True):
                    rec = index_record(job, model, settings, cond)
                    save_png(image, result.output / rec["file"], rec, {"dtype": str(dtype).removeprefix("torch.")})
                result.batches.append((len(batch), time.perf_counter() - t0))
                result.written += len(batch)
                bar.advance(task, len(batch))
            if model.lora is not None:
                pipe.unload_lora_weights()  # the base UNet again, for the next model
            del pipe, branch


def _write_index(out: Path, jobs: list[Job], models: list[ModelSpec], settings: dict, cond: str | None) -> None:
    """``out/index.jsonl``: one record per image on disk, model by model, in job order."""
    lines = []
    for m in models:
        for j in jobs:
            rec = index_record(j, m, settings, cond)
            if (out / rec["file"]).is_file():
                lines.append(json.dumps(rec, ensure_ascii=False))
    tmp = out / f".{INDEX}.{os.getpid()}.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, out / INDEX)


def _write_grids(
    out: Path, specs: list, jobs: list[Job], models: list[ModelSpec], settings: dict, cond: str | None
) -> list[Path]:
    """``out/grids/PPPPP.png`` per prompt: one row per model, one column per image."""
    from PIL import Image

    from humanfix.generation.grid import make_grid, save_grid

    paths = []
    for p, spec in enumerate(specs):
        row_jobs = [j for j in jobs if j.prompt_index == p]
        files = [[out / index_record(j, m, settings, cond)["file"] for j in row_jobs] for m in models]
        if not all(f.is_file() for row in files for f in row):
            log.warning("grid for prompt %d skipped: some of its images are missing", p)
            continue
        rows = [[Image.open(f) for f in row] for row in files]
        sheet, layout = make_grid(spec.prompt, [m.label for m in models], rows, [j.seed for j in row_jobs])
        path = out / GRIDS / f"{p:05d}.png"
        save_grid(sheet, layout, path)
        paths.append(path)
    return paths
