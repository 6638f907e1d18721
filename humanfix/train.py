"""``humanfix train``: a ControlNet branch on a frozen SD 1.5, under the mask-aware objective.

Read top to bottom: the config, then ``train()`` = setup -> fit (with checkpoints and validation) -> save.

Features (the diffusers ``train_controlnet.py`` baseline and past it):

- accelerate throughout: the same command on a CPU, one or several GPUs and machines
  (``accelerate launch``/``torchrun``), DeepSpeed/FSDP through accelerate's own config; only rank 0 writes.
- VAE, UNet and text encoder frozen in the training dtype; the branch trained in fp32.
- The objective of :mod:`humanfix.losses.objective`: per-sample gating at T, every term logged.
- Conditioning ``none`` (blank image, the paper's setting), ``pose`` (skeleton from keypoints) or ``mask``;
  the choice is saved beside the branch (``humanfix.json``) for ``generate``.
- Every random draw (latents, noise, timesteps, captions, empty prompts) comes from a generator seeded
  by (seed, step, rank), and the data order from (seed, epoch): resuming replays the run exactly.
- Atomic checkpoints (a temporary folder, then a rename) holding branch, optimizer, scheduler, RNG states
  and the step; ``--resume latest|PATH``; the ``K`` newest kept.
- An update whose loss or gradient norm is non-finite (on any process) is skipped on every process and
  counted; K in a row stop training, the last checkpoint intact. Under gradient accumulation everything
  logged and counted is per update (the terms are means over all of the update's samples).
- ``--deterministic``: torch's deterministic algorithms and cuBLAS workspace, so resume is bit-exact on CUDA.
- Per step: the loss terms, gated fraction, learning rate, images/s, peak memory: in a rich progress bar,
  in ``OUTPUT/metrics.jsonl`` and in TensorBoard (``--log-with tensorboard``).
- Result: ``OUTPUT/controlnet/`` (diffusers layout), ``OUTPUT/training_config.toml``, ``OUTPUT/metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from humanfix.config import to_toml_dict
from humanfix.errors import UserError
from humanfix.losses.objective import ObjectiveConfig
from humanfix.models.pipeline import CONDITIONINGS
from humanfix.models.weights import SD15_HUB_ID

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainConfig:
    """Everything ``humanfix train`` needs; the CLI flags and a TOML file (``--config``) set these fields."""

    # -- model
    # A hub id, a local diffusers folder, a single .safetensors/.ckpt file, or "tiny".
    model: str = SD15_HUB_ID
    # A local diffusers folder holding the configs for a single-file --model.
    model_config: Path | None = None
    # Start from this branch folder; unset: a fresh copy of the UNet (ControlNetModel.from_unet).
    controlnet: Path | None = None
    # What the branch sees: "none" (blank image, the paper), "pose" (skeleton) or "mask" (person mask).
    conditioning: str = "none"
    # -- data
    # A prepare-data output folder (holding <split>/metadata.jsonl).
    data: Path | None = None
    # Which split of --data to train on.
    split: str = "train"
    # DataLoader worker processes.
    workers: int = 0
    # -- objective (a [objective] table in TOML)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # -- optimisation
    learning_rate: float = 1e-5
    # Per device; the effective batch is batch_size × processes × gradient_accumulation_steps.
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    # Optimizer updates to run; unset: --epochs × updates per epoch.
    max_steps: int | None = None
    epochs: int = 1
    # One of LR_SCHEDULERS (diffusers.optimization.get_scheduler).
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # "no", "fp16" or "bf16": the frozen models' dtype and autocast; the branch stays fp32.
    mixed_precision: str = "no"
    # Recompute activations of the UNet and the branch in the backward pass (saves memory).
    gradient_checkpointing: bool = False
    # bitsandbytes' 8-bit AdamW (pip install 'humanfix[bnb]').
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    # Fraction of captions replaced by the empty prompt (classifier-free guidance training).
    proportion_empty_prompts: float = 0.0
    seed: int = 0
    # -- output
    output: Path = Path("runs/humanfix")
    # Save a checkpoint every N updates (0: never; the final branch is always saved).
    checkpoint_every: int = 500
    # Keep the K newest checkpoints (0: keep all).
    keep_checkpoints: int = 3
    # "latest" or a checkpoint folder to continue from.
    resume: str | None = None
    # Generate validation images every N updates (0: never).
    validate_every: int = 0
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 20
    # "tensorboard" to log there too (metrics.jsonl is always written).
    log_with: str | None = None
    # Stop after this many updates in a row whose loss or gradient was non-finite.
    max_nonfinite_steps: int = 5
    # Deterministic algorithms (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG): a resumed run
    # is bit-identical to a straight one on CUDA too, at some speed. Without it, CUDA runs agree to ~1e-5.
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.data is None:
            raise UserError("train needs --data DIR (a prepare-data output)")
        if self.conditioning not in CONDITIONINGS:
            raise UserError(f"conditioning must be one of {CONDITIONINGS} (got {self.conditioning!r})")
        positive = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_nonfinite_steps": self.max_nonfinite_steps,
        }
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"{name.replace('_', '-')} must be > 0 (got {value})")
        if self.max_steps is not None and self.max_steps <= 0:
            raise UserError(f"max-steps must be > 0 (got {self.max_steps})")
        for name in ("checkpoint_every", "keep_checkpoints", "validate_every", "lr_warmup_steps", "workers"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be >= 0")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(f"mixed-precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise UserError(f"lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        if not 0.0 <= self.proportion_empty_prompts <= 1.0:
            raise UserError("proportion-empty-prompts must lie in [0, 1]")
        if self.log_with not in (None, "tensorboard"):
            raise UserError(f"log-with supports 'tensorboard' (got {self.log_with!r})")
        if self.validate_every and not self.validation_prompts:
            raise UserError("validate-every needs at least one --validation-prompt")
        if self.objective.perceptual_weights is None:
            self.objective.perceptual_weights = "random" if self.model == "tiny" else "pretrained"

    @property
    def split_dir(self) -> Path:
        return Path(self.data) / self.split


class TrainingStopped(UserError):
    """Training cannot go on (e.g. the loss kept being non-finite); the last checkpoint is intact."""


# ---------------------------------------------------------------------------------------------------- setup


@dataclass
class Run:
    """What setup builds and fit uses."""

    config: TrainConfig
    accelerator: Any
    components: Any
    controlnet: Any
    optimizer: Any
    lr_scheduler: Any
    objective: Any
    dataset: Any
    weight_dtype: torch.dtype
    total_steps: int
    batches_per_epoch: int


def setup(config: TrainConfig, components: Any = None) -> Run:
    """Build everything ``fit`` needs; ``components`` replaces loading ``config.model`` (benchmarks use it)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    from humanfix.data.dataset import EpochSampler, PreparedDataset
    from humanfix.losses.objective import MaskAwareObjective
    from humanfix.models.pipeline import load_components, make_controlnet

    dataset = PreparedDataset(config.split_dir, config.conditioning)  # fails fast, before any model loads
    output = Path(config.output)
    # accelerate treats several processes without CUDA as multi-CPU (gloo) only when told cpu=True.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.log_with,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
    )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    components = components or load_components(config.model, config.model_config)
    set_seed(config.seed)  # the branch's fresh layers (its conditioning embedding) are drawn from the seed
    controlnet = make_controlnet(components.unet, config.controlnet)
    for frozen in (components.vae, components.unet, components.text_encoder):
        frozen.requires_grad_(False)
        frozen.eval()
        frozen.to(accelerator.device, dtype=weight_dtype)
    controlnet.train()
    if config.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        components.unet.enable_gradient_checkpointing()

    optimizer_cls = torch.optim.AdamW
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("--use-8bit-adam needs bitsandbytes: pip install 'humanfix[bnb]'") from None
        optimizer_cls = bnb.optim.AdamW8bit
    optimizer = optimizer_cls(
        controlnet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )
    batches_per_epoch = EpochSampler.batches_per_epoch(len(dataset), config.batch_size, accelerator.num_processes)
    updates_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps or config.epochs * updates_per_epoch
    # accelerate steps a prepared scheduler once per process per update, hence the factor (as diffusers does).
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    controlnet, optimizer, lr_scheduler = accelerator.prepare(controlnet, optimizer, lr_scheduler)

    sched = components.noise_scheduler
    objective = MaskAwareObjective(
        config.objective, sched.alphas_cumprod, sched.config.prediction_type, sched.config.num_train_timesteps
    ).to(accelerator.device, dtype=weight_dtype)
    if config.objective.perceptual and config.objective.perceptual_weights == "random":
        log.warning("perceptual networks have RANDOM weights (--perceptual-weights random): for tests and demos only")
    if accelerator.is_main_process and config.log_with:
        accelerator.init_trackers("humanfix", config=_flat_hparams(config))
    return Run(
        config,
        accelerator,
        components,
        controlnet,
        optimizer,
        lr_scheduler,
        objective,
        dataset,
        weight_dtype,
        total_steps,
        batches_per_epoch,
    )


def _flat_hparams(config: TrainConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in to_toml_dict(config).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            flat[f"{key}.{sub}" if sub else key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


# ---------------------------------------------------------------------------------------------------- the step


def step_generator(config: TrainConfig, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator for one micro-batch: seeded by (seed, update step, micro-batch, rank) alone."""
    seed = (config.seed * 1_000_003 + step * 1_009 + micro) * 131 + rank
    return torch.Generator(device=device).manual_seed(seed % (2**63))


def encode_prompts(run: Run, captions: list[list[str]], g: torch.Generator) -> torch.Tensor:
    """Draw one caption per sample (empty with --proportion-empty-prompts) and encode it: N×77×D."""
    draws = torch.rand(len(captions), 2, generator=torch.Generator().manual_seed(int(g.initial_seed()) % 2**63))
    texts = [
        "" if u_empty < run.config.proportion_empty_prompts else options[int(u_pick * len(options))]
        for options, (u_pick, u_empty) in zip(captions, draws.tolist(), strict=True)
    ]
    tok = run.components.tokenizer
    ids = tok(texts, max_length=tok.model_max_length, padding="max_length", truncation=True, return_tensors="pt")
    return run.components.text_encoder(ids.input_ids.to(run.accelerator.device))[0]


def compute_loss(run: Run, batch: dict[str, Any], g: torch.Generator):
    """The diffusers ControlNet training step, with the objective in place of the plain MSE."""
    c, device, dtype = run.components, run.accelerator.device, run.weight_dtype
    pixel_values = batch["pixel_values"].to(device)
    with torch.no_grad():
        latents = c.vae.encode(pixel_values.to(dtype)).latent_dist.sample(generator=g).float()
        latents = latents * c.vae.config.scaling_factor
        encoder_hidden_states = encode_prompts(run, batch["captions"], g)
    # Noise, x_t and the target in fp32 (as diffusers does); the frozen networks see x_t in the training dtype.
    noise = torch.randn(latents.shape, generator=g, device=device, dtype=torch.float32)
    n_t = c.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, n_t, (latents.shape[0],), generator=g, device=device).long()
    noisy_fp32 = c.noise_scheduler.add_noise(latents, noise, timesteps)
    noisy_latents = noisy_fp32.to(dtype)
    down, mid = run.controlnet(
        noisy_latents,
        timesteps,
        encoder_hidden_states=encoder_hidden_states,
        controlnet_cond=batch["conditioning"].to(device, dtype=dtype),
        return_dict=False,
    )
    model_pred = c.unet(
        noisy_latents,
        timesteps,
        encoder_hidden_states=encoder_hidden_states,
        down_block_additional_residuals=[s.to(dtype) for s in down],
        mid_block_additional_residual=mid.to(dtype),
        return_dict=False,
    )[0]
    prediction_type = c.noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = c.noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = latents
    return run.objective(
        c.vae,
        model_pred,
        target,
        noisy_fp32,
        timesteps,
        images=pixel_values,
        masks=batch["mask"].to(device),
        person_boxes=[b.to(device) for b in batch["person_boxes"]],
        face_boxes=[b.to(device) for b in batch["face_boxes"]],
    )


# ---------------------------------------------------------------------------------------------------- fit


def batches(run: Run, epoch: int, skip: int):
    from humanfix.data.dataset import EpochSampler, collate

    acc = run.accelerator
    sampler = EpochSampler(
        len(run.dataset), run.config.batch_size, run.config.seed, epoch, acc.process_index, acc.num_processes, skip
    )
    return torch.utils.data.DataLoader(
        run.dataset,
        batch_size=run.config.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=run.config.workers,
        drop_last=False,
    )


def fit(run: Run) -> dict[str, Any]:
    """The training loop; returns the final state (step, skipped, last metrics)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cfg, acc = run.config, run.accelerator
    output = Path(cfg.output)
    state = {"step": 0, "nonfinite_total": 0, "nonfinite_in_a_row": 0, "overflow_total": 0}
    if cfg.resume:
        state.update(load_checkpoint(run, resolve_resume(cfg.resume, output)))
    metrics_path = output / "metrics.jsonl"
    if acc.is_main_process:
        _truncate_metrics(metrics_path, state["step"])
    acc.wait_for_everyone()

    step = state["step"]
    micro = step * cfg.gradient_accumulation_steps
    last: dict[str, Any] = {}
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not acc.is_main_process,
        transient=False,
    )
    images_per_update = cfg.batch_size * acc.num_processes * cfg.gradient_accumulation_steps
    params = [p for p in run.controlnet.parameters() if p.requires_grad]
    sums = None  # this update's terms (SUM_KEYS), summed over its micro-batches on the device
    with progress:
        task = progress.add_task("train", total=run.total_steps, completed=step, info="")
        tick = time.perf_counter()
        while step < run.total_steps:
            epoch, skip = divmod(micro, run.batches_per_epoch)
            for batch in batches(run, epoch, skip):
                g = step_generator(cfg, step, micro, acc.process_index, acc.device)
                micro += 1
                with acc.accumulate(run.controlnet):
                    out = compute_loss(run, batch, g)
                    sums = out.sums() if sums is None else sums + out.sums()
                    acc.backward(out.total)
                    if acc.sync_gradients:
                        update = _apply_update(run, params, sums)
                    run.lr_scheduler.step()
                    run.optimizer.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                sums = None
                step += 1
                state["step"] = step
                if update["nonfinite"]:
                    state["nonfinite_total"] += 1
                    state["nonfinite_in_a_row"] += 1
                    log.warning("non-finite loss or gradient at step %d: update skipped", step)
                    if state["nonfinite_in_a_row"] >= cfg.max_nonfinite_steps:
                        raise TrainingStopped(
                            f"the loss or its gradient was non-finite {state['nonfinite_in_a_row']} times in a row "
                            f"at step {step}; stopping (lower --learning-rate or check the data). "
                            "The last checkpoint is intact"
                        )
                else:
                    state["nonfinite_in_a_row"] = 0
                state["overflow_total"] += int(update["overflow"])
                now = time.perf_counter()
                last = {
                    "step": step,
                    "epoch": epoch,
                    **update["terms"],
                    "grad_norm": update["grad_norm"],
                    "skipped": update["nonfinite"] or update["overflow"],
                    "lr": run.lr_scheduler.get_last_lr()[0],
                    "images_per_s": images_per_update / (now - tick),
                    "peak_memory_gb": peak_memory_gb(acc.device),
                    "nonfinite_total": state["nonfinite_total"],
                    "overflow_total": state["overflow_total"],
                }
                tick = now
                if acc.is_main_process:  # absent or non-finite terms are written as null: strict JSON
                    with metrics_path.open("a") as f:
                        f.write(json.dumps({k: _json_number(v) for k, v in last.items()}) + "\n")
                if cfg.log_with:
                    acc.log({k: v for k, v in last.items() if isinstance(v, (int, float)) and v == v}, step=step)
                progress.update(
                    task, completed=step, info=f"loss {last['loss']:.4f} · {last['images_per_s']:.2f} img/s"
                )
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save_checkpoint(run, state)
                if cfg.validate_every and step % cfg.validate_every == 0:
                    validate(run, step)
                if step >= run.total_steps:
                    break
    print(f"rank {acc.process_index}/{acc.num_processes} finished at step {step}", file=sys.stderr)
    return {**state, "last": last}


def _apply_update(run: Run, params: list[torch.Tensor], sums: torch.Tensor) -> dict[str, Any]:
    """Clip, then step the optimizer unless the update's loss or gradient norm is non-finite on any process.

    One reduction and one device-to-host read per update carry both the decision (the same on every process)
    and the terms to log. Under fp16's dynamic loss scaling an overflowing gradient is the scaler's to skip
    (it lowers the scale and tries again): counted as ``overflow``, not as non-finite, as long as the loss is.
    """
    from humanfix.losses.objective import SUM_KEYS

    acc, cfg = run.accelerator, run.config
    norm = acc.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)  # inf: measure only
    norm = sums.new_zeros(()) if norm is None else torch.as_tensor(norm, device=sums.device).double()
    values = acc.reduce(torch.cat([sums, norm.reshape(1)]), reduction="sum").tolist()
    totals, grad_norm = dict(zip(SUM_KEYS, values[:-1], strict=True)), values[-1]
    loss_ok, grad_ok = math.isfinite(totals["loss"]), math.isfinite(grad_norm)
    scaled = acc.scaler is not None
    if scaled or (loss_ok and grad_ok):
        run.optimizer.step()  # the scaler itself skips a step whose gradients are not finite
    n = totals["n_samples"]
    return {
        "nonfinite": not loss_ok or not (grad_ok or scaled),
        "overflow": loss_ok and scaled and acc.optimizer_step_was_skipped,
        "grad_norm": grad_norm / acc.num_processes,
        "terms": {
            "loss": totals["loss"] / n,
            "loss_ldm": totals["loss_ldm"] / n,
            "loss_lpips": totals["lpips"] / totals["n_lpips"] if totals["n_lpips"] else math.nan,
            "loss_face": totals["face"] / totals["n_face"] if totals["n_face"] else math.nan,
            "gated_fraction": totals["n_gated"] / n,
        },
    }


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on the CPU, in GB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep metrics.jsonl lines up to ``step`` (a resumed run rewrites what comes after)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


# ---------------------------------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(output: Path) -> list[Path]:
    """Finished checkpoints (``checkpoints/step-XXXXXXXX``), oldest first; temporary folders are ignored."""
    root = output / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(resume: str, output: Path) -> Path:
    if resume == "latest":
        found = checkpoint_dirs(output)
        if not found:
            raise UserError(f"--resume latest: no checkpoint in {output / CHECKPOINTS}")
        return found[-1]
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).is_file():
        raise UserError(f"--resume {path}: not a humanfix checkpoint ({STATE_FILE} not found)")
    return path


def save_checkpoint(run: Run, state: dict[str, Any]) -> Path | None:
    """Write ``checkpoints/step-N`` atomically: everything goes into a temporary folder, renamed when complete.

    A process killed mid-save leaves only a ``.tmp-step-N`` folder, which resume ignores.
    """
    acc = run.accelerator
    root = Path(run.config.output) / CHECKPOINTS
    final = root / f"step-{state['step']:08d}"
    tmp = root / f".tmp-step-{state['step']:08d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return None
    (tmp / STATE_FILE).write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    keep = run.config.keep_checkpoints
    if keep:
        for old in checkpoint_dirs(Path(run.config.output))[:-keep]:
            shutil.rmtree(old)
    return final


def load_checkpoint(run: Run, path: Path) -> dict[str, Any]:
    run.accelerator.load_state(str(path))
    state = json.loads((path / STATE_FILE).read_text())
    log.info("resumed from %s at step %d", path, state["step"])
    return state


# ---------------------------------------------------------------------------------------------------- validate


def validate(run: Run, step: int) -> list[Path]:
    """Generate the validation prompts with the branch so far; images to ``OUTPUT/validation/step-N/``."""
    from diffusers import StableDiffusionControlNetPipeline

    acc = run.accelerator
    if not acc.is_main_process:
        return []
    c, cfg = run.components, run.config
    pipe = StableDiffusionControlNetPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        controlnet=acc.unwrap_model(run.controlnet),
        scheduler=_inference_scheduler(c),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    cond = run.dataset[0]["conditioning"][None].to(acc.device, dtype=run.weight_dtype)
    folder = Path(cfg.output) / "validation" / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    with torch.no_grad(), acc.autocast():
        for k, prompt in enumerate(cfg.validation_prompts):
            g = torch.Generator(device=acc.device).manual_seed(cfg.seed + k)
            image = pipe(
                prompt,
                image=cond,
                num_inference_steps=cfg.validation_steps,
                generator=g,
                height=run.dataset.height,
                width=run.dataset.width,
            ).images[0]
            path = folder / f"{k:02d}.png"
            image.save(path)
            paths.append(path)
            images.append(image)
    run.controlnet.train()
    for tracker in acc.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            stacked = np.stack([np.asarray(i) for i in images])
            tracker.writer.add_images("validation", stacked, step, dataformats="NHWC")
    return paths


def _inference_scheduler(components: Any) -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(components.noise_scheduler.config)


# ---------------------------------------------------------------------------------------------------- save


def save_branch(run: Run) -> Path:
    """``OUTPUT/controlnet/`` in the diffusers layout (fp32) plus ``humanfix.json``, written atomically."""
    from humanfix.models.pipeline import write_branch_meta

    acc, cfg = run.accelerator, run.config
    acc.wait_for_everyone()
    final = Path(cfg.output) / "controlnet"
    if not acc.is_main_process:
        return final
    tmp = Path(cfg.output) / ".tmp-controlnet"
    shutil.rmtree(tmp, ignore_errors=True)
    acc.unwrap_model(run.controlnet).to(torch.float32).save_pretrained(tmp, safe_serialization=True)
    write_branch_meta(
        tmp,
        conditioning=cfg.conditioning,
        base_model=cfg.model,
        objective=to_toml_dict(cfg.objective),
        perceptual_weights=cfg.objective.perceptual_weights,
        steps=run.total_steps,
        resolution=[run.dataset.width, run.dataset.height],
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def save_config(config: TrainConfig) -> Path:
    import tomli_w

    path = Path(config.output) / "training_config.toml"
    path.write_text(tomli_w.dumps(to_toml_dict(config)))
    return path


def train(config: TrainConfig) -> Path:
    """Run training; returns ``OUTPUT/controlnet``."""
    from humanfix.devices import deterministic_algorithms

    with deterministic_algorithms(config.deterministic):
        run = setup(config)
        acc = run.accelerator
        if acc.is_main_process:
            Path(config.output).mkdir(parents=True, exist_ok=True)
            save_config(config)
        try:
            final_state = fit(run)
            path = save_branch(run)
        finally:
            acc.end_training()
    if acc.is_main_process:
        skipped = final_state["nonfinite_total"]
        log.info("trained %d steps (%d skipped as non-finite); branch saved to %s", final_state["step"], skipped, path)
    return path
