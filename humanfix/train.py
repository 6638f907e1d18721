"""``humanfix train``: an adapter on a frozen SD 1.5, under the mask-aware objective.

The adapter (``--adapter``) is a ControlNet branch (the paper's method, the default) or a LoRA on the UNet's
layers (:mod:`humanfix.models.lora`). It is a choice inside the one training loop: everything below holds for
both; the LoRA step simply has no branch to run.

Read top to bottom: the config, then ``train()`` = setup -> fit (with checkpoints and validation) -> save.

Features (the diffusers ``train_controlnet.py`` baseline and past it):

- accelerate throughout: the same command on a CPU, one or several GPUs and machines
  (``accelerate launch``/``torchrun``), DeepSpeed/FSDP through accelerate's own config; only rank 0 writes.
- VAE, UNet and text encoder frozen in the training dtype; the adapter (branch or LoRA) trained in fp32.
- The objective of :mod:`humanfix.losses.objective`: per-sample gating at T, every term logged.
- Conditioning ``none`` (blank image, the paper's setting), ``pose`` (skeleton from keypoints) or ``mask``;
  the choice is saved beside the branch (``humanfix.json``) for ``generate``.
- Every random draw (latents, noise, timesteps, captions, empty prompts) comes from a generator seeded
  by (seed, step, rank), and the data order from (seed, epoch): resuming replays the run exactly.
- Atomic checkpoints (a temporary folder, then a rename) holding the adapter (a LoRA alone, not the UNet it
  sits in), optimizer, scheduler, RNG states and the step; ``--resume latest|PATH``; the ``K`` newest kept.
- An update whose loss or gradient norm is non-finite (on any process) is skipped on every process and
  counted; K in a row stop training, the last checkpoint intact. Under gradient accumulation everything
  logged and counted is per update (the terms are means over all of the update's samples).
- ``--deterministic``: torch's deterministic algorithms and cuBLAS workspace, so resume is bit-exact on CUDA.
- Per step: the loss terms, gated fraction, learning rate, images/s, peak memory: in a rich progress bar,
  in ``OUTPUT/metrics.jsonl`` and in TensorBoard (``--log-with tensorboard``).
- Result: ``OUTPUT/controlnet/`` (diffusers layout) or ``OUTPUT/lora/`` (diffusers and kohya files),
  ``OUTPUT/training_config.toml``, ``OUTPUT/metrics.jsonl``.
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
from humanfix.models.lora import LORA_TARGETS
from humanfix.models.pipeline import CONDITIONINGS
from humanfix.models.weights import SD15_HUB_ID

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTERS = ("controlnet", "lora")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainConfig:
    """Everything ``humanfix train`` needs; the CLI flags and a TOML file (``--config``) set these fields."""

    # -- model
    # A hub id, a local diffusers folder, a single .safetensors/.ckpt file, or "tiny".
    model: str = SD15_HUB_ID
    # A local diffusers folder holding the configs for a single-file --model.
    model_config: Path | None = None
    # What trains: "controlnet" (a branch copied from the UNet, the paper) or "lora" (a LoRA on the UNet).
    adapter: str = "controlnet"
    # Start from this branch folder; unset: a fresh copy of the UNet (ControlNetModel.from_unet).
    controlnet: Path | None = None
    # What the branch sees: "none" (blank image, the paper), "pose" (skeleton) or "mask" (person mask).
    conditioning: str = "none"
    # LoRA rank (adapter "lora"; default 32).
    lora_rank: int | None = None
    # LoRA alpha: the LoRA's output is scaled by alpha / rank (adapter "lora"; default: the rank).
    lora_alpha: float | None = None
    # Which UNet layers get a LoRA: a preset of models.lora.LORA_TARGETS (adapter "lora"; default "attn").
    lora_targets: str | None = None
    # -- data
    # A prepare-data output folder (holding <split>/metadata.jsonl).
    data: Path | None = None
    # Which split of --data to train on.
    split: str = "train"
    # DataLoader worker processes; unset: 0 on the CPU, up to 8 per process on a GPU (pinned memory, prefetch).
    workers: int | None = None
    # Encode every image once into a cache of VAE posteriors ($HUMANFIX_HOME/latents) and draw each step's
    # latent from it: the same draws and loss as without, minus the VAE encoder (docs/training.md).
    cache_latents: bool = False
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
    # torch.compile the UNet and the branch (slow first steps; pays off on long GPU runs).
    compile: bool = False
    # TF32 matmuls and convolutions for what runs in fp32 on Ampere and newer GPUs (the branch, x̂0's decode).
    allow_tf32: bool = True
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
        self._check_adapter()
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
            if (getattr(self, name) or 0) < 0:
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

    def _check_adapter(self) -> None:
        """Each adapter's options only with that adapter; the LoRA's defaults filled in."""
        if self.adapter not in ADAPTERS:
            raise UserError(f"adapter must be controlnet or lora (got {self.adapter!r})")
        lora_options = {"lora-rank": self.lora_rank, "lora-alpha": self.lora_alpha, "lora-targets": self.lora_targets}
        if self.adapter == "controlnet":
            given = [name for name, value in lora_options.items() if value is not None]
            if given:
                raise UserError(f"--{given[0]} applies to --adapter lora (this run trains a ControlNet branch)")
            return
        if self.controlnet is not None:
            raise UserError("--controlnet DIR starts from a branch: it cannot go with --adapter lora")
        if self.conditioning != "none":
            raise UserError("--conditioning feeds a ControlNet branch: a LoRA has no conditioning input")
        self.lora_rank = 32 if self.lora_rank is None else self.lora_rank
        if self.lora_rank <= 0:
            raise UserError(f"lora-rank must be > 0 (got {self.lora_rank})")
        self.lora_alpha = float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)
        if not self.lora_alpha > 0:
            raise UserError(f"lora-alpha must be > 0 (got {self.lora_alpha})")
        self.lora_targets = self.lora_targets or "attn"
        if self.lora_targets not in LORA_TARGETS:
            raise UserError(f"lora-targets must be one of {', '.join(LORA_TARGETS)} (got {self.lora_targets!r})")

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
    trainable: Any  # the prepared module that trains: the branch, or the UNet carrying the LoRA
    params: list[torch.nn.Parameter]  # its trainable parameters (the whole branch, or the LoRA's)
    optimizer: Any
    lr_scheduler: Any
    objective: Any
    dataset: Any
    weight_dtype: torch.dtype
    total_steps: int
    batches_per_epoch: int

    @property
    def controlnet(self) -> Any:
        """The branch the step runs before the UNet; None with a LoRA."""
        return self.trainable if self.config.adapter == "controlnet" else None

    @property
    def unet(self) -> Any:
        """The UNet the step calls: the prepared one carrying the LoRA, or the frozen base."""
        return self.trainable if self.config.adapter == "lora" else self.components.unet


def setup(config: TrainConfig, components: Any = None) -> Run:
    """Build everything ``fit`` needs; ``components`` replaces loading ``config.model`` (benchmarks use it)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    from humanfix.data.dataset import EpochSampler, PreparedDataset
    from humanfix.losses.objective import MaskAwareObjective
    from humanfix.models.lora import add_lora
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
    set_seed(config.seed)  # the adapter's fresh weights (branch conditioning embedding, LoRA A) come from the seed
    lora = config.adapter == "lora"
    trainable = None if lora else make_controlnet(components.unet, config.controlnet)
    for frozen in (components.vae, components.unet, components.text_encoder):
        frozen.requires_grad_(False)
        frozen.eval()
        frozen.to(accelerator.device, dtype=weight_dtype)
    if lora:  # on the UNet already in the training dtype, as diffusers does; the LoRA itself in fp32
        add_lora(components.unet, config.lora_rank, config.lora_alpha, config.lora_targets)
        trainable = components.unet
        _checkpoint_lora_alone(accelerator)
    trainable.train()
    if config.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        if not lora:
            trainable.enable_gradient_checkpointing()
    params = [p for p in trainable.parameters() if p.requires_grad]
    if config.cache_latents:
        from humanfix.data.latents import ensure_latent_cache

        # One builder per key (the others wait on its lock): on this device, with the loader's workers.
        sizes = [(r.height, r.width) for r in dataset.records]
        workers = loader_workers(config.workers, accelerator.device, accelerator.num_processes)
        dataset.latents = ensure_latent_cache(
            config.split_dir, dataset.image, sizes, components.vae, accelerator.device, workers
        )

    # Fused AdamW: one kernel for all weights, and it skips a non-finite update on the device (found_inf).
    optimizer_cls, fused = torch.optim.AdamW, {"fused": True}
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("--use-8bit-adam needs bitsandbytes: pip install 'humanfix[bnb]'") from None
        optimizer_cls, fused = bnb.optim.AdamW8bit, {}
    optimizer = optimizer_cls(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
        **fused,
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
    trainable, optimizer, lr_scheduler = accelerator.prepare(trainable, optimizer, lr_scheduler)
    if config.compile:  # after prepare: accelerate keeps (and checkpoints) the plain adapter, keys unchanged
        if not lora:
            components.unet = torch.compile(components.unet)
        trainable = torch.compile(trainable)

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
        trainable,
        params,
        optimizer,
        lr_scheduler,
        objective,
        dataset,
        weight_dtype,
        total_steps,
        batches_per_epoch,
    )


def _checkpoint_lora_alone(accelerator: Any) -> None:
    """Checkpoints hold the LoRA (the diffusers file, which diffusers loads as is), not the whole UNet it sits in.

    accelerate's save/load pre-hooks, as diffusers' LoRA training scripts use them: the UNet's entry is taken out
    of what accelerate writes and reads, and the LoRA is written and read here instead. (Under DeepSpeed or FSDP,
    which save models their own way, accelerate hands the hooks no entry and they leave the checkpoint alone.)
    """
    from humanfix.models.lora import load_diffusers_lora, save_diffusers_lora

    def save(models: list, weights: list, folder: str) -> None:
        if weights:
            if accelerator.is_main_process:
                save_diffusers_lora(accelerator.unwrap_model(models[0]), folder)
            weights.pop(0)

    def load(models: list, folder: str) -> None:
        if models:
            load_diffusers_lora(accelerator.unwrap_model(models.pop(0)), folder)

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _flat_hparams(config: TrainConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in to_toml_dict(config).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            flat[f"{key}.{sub}" if sub else key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


# ---------------------------------------------------------------------------------------------------- the step


@dataclass
class StepRandom:
    """One micro-batch's generators, both seeded by (seed, update step, micro-batch, rank) alone.

    ``device`` draws the latent from its posterior and the noise; ``host`` draws the captions and the
    timesteps, so the host knows which samples are gated (and what to decode) without asking the device.
    """

    device: torch.Generator
    host: torch.Generator


def step_generator(config: TrainConfig, step: int, micro: int, rank: int, device: torch.device) -> StepRandom:
    seed = ((config.seed * 1_000_003 + step * 1_009 + micro) * 131 + rank) % (2**63)
    return StepRandom(torch.Generator(device=device).manual_seed(seed), torch.Generator().manual_seed(seed))


def encode_prompts(run: Run, captions: list[list[str]], host: torch.Generator) -> torch.Tensor:
    """Draw one caption per sample (empty with --proportion-empty-prompts) and encode it: N×77×D."""
    draws = torch.rand(len(captions), 2, generator=host)
    texts = [
        "" if u_empty < run.config.proportion_empty_prompts else options[int(u_pick * len(options))]
        for options, (u_pick, u_empty) in zip(captions, draws.tolist(), strict=True)
    ]
    tok = run.components.tokenizer
    ids = tok(texts, max_length=tok.model_max_length, padding="max_length", truncation=True, return_tensors="pt")
    return run.components.text_encoder(ids.input_ids.to(run.accelerator.device, non_blocking=True))[0]


def compute_loss(run: Run, batch: dict[str, Any], g: StepRandom):
    """The diffusers ControlNet (or LoRA) training step, with the objective in place of the plain MSE.

    Nothing here waits for the device: inputs are copied without blocking, timesteps are drawn on the host,
    and boxes stay there (the objective plans its decoding from them).
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    c, device, dtype = run.components, run.accelerator.device, run.weight_dtype
    pixel_values = batch["pixel_values"].to(device, non_blocking=True)
    with torch.no_grad():
        if "latent_params" in batch:  # --cache-latents: the encoder's posterior, computed once
            posterior = DiagonalGaussianDistribution(batch["latent_params"].to(device, non_blocking=True))
        else:
            posterior = c.vae.encode(pixel_values.to(dtype)).latent_dist
        latents = posterior.sample(generator=g.device).float() * c.vae.config.scaling_factor
        encoder_hidden_states = encode_prompts(run, batch["captions"], g.host)
    # Noise, x_t and the target in fp32 (as diffusers does); the frozen networks see x_t in the training dtype.
    noise = torch.randn(latents.shape, generator=g.device, device=device, dtype=torch.float32)
    n_t = c.noise_scheduler.config.num_train_timesteps
    host_timesteps = torch.randint(0, n_t, (latents.shape[0],), generator=g.host)
    timesteps = host_timesteps.to(device, non_blocking=True)
    noisy_fp32 = c.noise_scheduler.add_noise(latents, noise, timesteps)
    noisy_latents = noisy_fp32.to(dtype)
    residuals = {}  # a LoRA sits inside the UNet: no branch to run
    if run.controlnet is not None:
        down, mid = run.controlnet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            controlnet_cond=batch["conditioning"].to(device, dtype=dtype, non_blocking=True),
            return_dict=False,
        )
        residuals = dict(
            down_block_additional_residuals=[s.to(dtype) for s in down], mid_block_additional_residual=mid.to(dtype)
        )
    model_pred = run.unet(
        noisy_latents, timesteps, encoder_hidden_states=encoder_hidden_states, **residuals, return_dict=False
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
        masks=batch["mask"].to(device, non_blocking=True),
        person_boxes=batch["person_boxes"],
        face_boxes=batch["face_boxes"],
        host_timesteps=host_timesteps.tolist(),
        hand_boxes=batch.get("hand_boxes"),
    )


# ---------------------------------------------------------------------------------------------------- fit


def batches(run: Run, start: int = 0) -> torch.utils.data.DataLoader:
    """This process's micro-batches from micro-batch ``start`` of the run on, epoch after epoch (one loader, so
    its workers live for the whole run). On a GPU: worker processes, pinned memory and prefetching by default."""
    from humanfix.data.dataset import EpochSampler, collate

    acc, cfg = run.accelerator, run.config
    on_gpu = acc.device.type == "cuda"
    workers = loader_workers(cfg.workers, acc.device, acc.num_processes)
    sampler = EpochSampler(len(run.dataset), cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes, start)
    return torch.utils.data.DataLoader(
        run.dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=on_gpu,
        prefetch_factor=4 if workers else None,
    )


def loader_workers(workers: int | None, device: torch.device, processes: int) -> int:
    """``--workers``, or by default: none on the CPU (it computes too), on a GPU a share of the cores per process."""
    if workers is not None:
        return workers
    return min(8, (os.cpu_count() or 1) // max(1, processes)) if device.type == "cuda" else 0


def fit(run: Run) -> dict[str, Any]:
    """The training loop; returns the final state (step, skipped, last metrics).

    An update is queued on the device without waiting for it: its numbers (terms, gradient norm, whether it
    was applied) are read one update later, when the device has long finished it, and at checkpoints,
    validation and the end, so the host never stalls the device for logging.
    """
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
    sums = None  # this update's terms (SUM_KEYS), summed over its micro-batches on the device
    pending: list[dict[str, Any]] = []  # queued updates whose numbers are not read yet (at most one)
    last: dict[str, Any] = {}
    clock = {"tick": time.perf_counter()}

    def finish() -> None:
        """Read the queued update's numbers: count, warn, stop, log."""
        nonlocal last
        for update in pending:
            last = _log_update(run, state, update, images_per_update, clock, metrics_path)
            progress.update(
                task, completed=last["step"], info=f"loss {last['loss']:.4f} · {last['images_per_s']:.2f} img/s"
            )
        pending.clear()

    with progress:
        task = progress.add_task("train", total=run.total_steps, completed=step, info="")
        for batch in batches(run, micro):
            g = step_generator(cfg, step, micro, acc.process_index, acc.device)
            micro += 1
            with acc.accumulate(run.trainable):
                out = compute_loss(run, batch, g)
                sums = out.sums() if sums is None else sums + out.sums()
                acc.backward(out.total)
                if acc.sync_gradients:
                    update = _apply_update(run, run.params, sums)
                run.lr_scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
            if not acc.sync_gradients:
                continue
            sums = None
            step += 1
            finish()  # the previous update: done on the device by now, or nearly
            pending.append({**update, "step": step, "epoch": (micro - 1) // run.batches_per_epoch,
                            "lr": run.lr_scheduler.get_last_lr()[0], "queued": time.perf_counter()})  # fmt: skip
            state["step"] = step
            checkpoint = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            validation = cfg.validate_every and step % cfg.validate_every == 0
            if checkpoint or validation or step >= run.total_steps:
                finish()
            if checkpoint:
                save_checkpoint(run, state)
            if validation:
                validate(run, step)
            if step >= run.total_steps:
                break
    print(f"rank {acc.process_index}/{acc.num_processes} finished at step {step}", file=sys.stderr)
    return {**state, "last": last}


def _apply_update(run: Run, params: list[torch.Tensor], sums: torch.Tensor) -> dict[str, Any]:
    """Clip, then step the optimizer unless the update's loss or gradient norm is non-finite on any process.

    The decision is taken on the device: one reduction gives every process the same statistics (SUM_KEYS,
    then the gradient norm), and fused AdamW skips the step when told ``found_inf`` (no host sync). An
    optimizer without that (8-bit AdamW) asks the host. Under fp16's dynamic loss scaling, an overflowing
    gradient is the scaler's to skip (it lowers the scale and tries again).
    Returns the device statistics (with a last entry 1.0 where the update was not applied) and, under the
    scaler, whether it skipped.
    """
    acc, cfg = run.accelerator, run.config
    norm = acc.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)  # inf: measure only
    norm = sums.new_zeros(()) if norm is None else torch.as_tensor(norm).to(sums.device, torch.float64)
    stats = acc.reduce(torch.cat([sums, norm.reshape(1)]), reduction="sum")
    bad = ~(torch.isfinite(stats[0]) & torch.isfinite(stats[-1]))
    inner = run.optimizer.optimizer
    scaler_skipped = None
    if acc.scaler is not None:
        run.optimizer.step()
        scaler_skipped = acc.optimizer_step_was_skipped
    elif inner.defaults.get("fused"):
        inner.found_inf = bad.float()
        run.optimizer.step()
        del inner.found_inf
    elif not bad.item():
        run.optimizer.step()
    return {"stats": _read_later(torch.cat([stats, bad.double().reshape(1)])), "scaler_skipped": scaler_skipped}


def _read_later(values: torch.Tensor) -> Any:
    """A function returning ``values`` as a list; on CUDA the copy to the host is queued now, read when called."""
    if values.device.type != "cuda":
        return values.tolist
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def read() -> list[float]:
        done.synchronize()
        return host.tolist()

    return read


def _log_update(
    run: Run, state: dict[str, Any], update: dict[str, Any], images: int, clock: dict, path: Path
) -> dict[str, Any]:
    """Count, warn about and log one finished update (a metrics.jsonl line, TensorBoard); returns the line."""
    from humanfix.losses.objective import SUM_KEYS

    cfg, acc = run.config, run.accelerator
    values = update["stats"]()
    totals, grad_norm, bad = dict(zip(SUM_KEYS, values[:-2], strict=True)), values[-2], values[-1] > 0
    loss_ok = math.isfinite(totals["loss"])
    nonfinite = not loss_ok or (bad and update["scaler_skipped"] is None)
    overflow = loss_ok and bool(update["scaler_skipped"])
    step = update["step"]
    if nonfinite:
        state["nonfinite_total"] += 1
        state["nonfinite_in_a_row"] += 1
        log.warning("non-finite loss or gradient at step %d: update skipped", step)
        if state["nonfinite_in_a_row"] >= cfg.max_nonfinite_steps:
            raise TrainingStopped(
                f"the loss or its gradient was non-finite {state['nonfinite_in_a_row']} times in a row "
                f"at step {step}; stopping (lower --learning-rate or check the data). The last checkpoint is intact"
            )
    else:
        state["nonfinite_in_a_row"] = 0
    state["overflow_total"] += int(overflow)
    n = totals["n_samples"]
    line = {
        "step": step,
        "epoch": update["epoch"],
        "loss": totals["loss"] / n,
        "loss_ldm": totals["loss_ldm"] / n,
        "loss_lpips": totals["lpips"] / totals["n_lpips"] if totals["n_lpips"] else math.nan,
        "loss_face": totals["face"] / totals["n_face"] if totals["n_face"] else math.nan,
        "loss_hand": totals["hand"] / totals["n_hand"] if totals["n_hand"] else math.nan,
        "gated_fraction": totals["n_gated"] / n,
        "grad_norm": grad_norm / acc.num_processes,
        "skipped": nonfinite or overflow,
        "lr": update["lr"],
        "images_per_s": images / (update["queued"] - clock["tick"]),  # the host runs at most an update ahead
        "peak_memory_gb": peak_memory_gb(acc.device),
        "nonfinite_total": state["nonfinite_total"],
        "overflow_total": state["overflow_total"],
    }
    clock["tick"] = update["queued"]
    if acc.is_main_process:  # absent or non-finite terms are written as null: strict JSON
        with path.open("a") as f:
            f.write(json.dumps({k: _json_number(v) for k, v in line.items()}) + "\n")
    if cfg.log_with:
        acc.log({k: v for k, v in line.items() if isinstance(v, (int, float)) and v == v}, step=step)
    return line


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
    """Generate the validation prompts with the adapter so far; images to ``OUTPUT/validation/step-N/``."""
    from dataclasses import replace

    from humanfix.generation.pipelines import build_pipeline

    acc = run.accelerator
    if not acc.is_main_process:
        return []
    c, cfg = run.components, run.config
    branch = acc.unwrap_model(run.controlnet) if run.controlnet is not None else None
    pipe = build_pipeline(replace(c, unet=acc.unwrap_model(run.unet)), _inference_scheduler(c), branch)
    extra = {}
    if branch is not None:
        extra["image"] = run.dataset[0]["conditioning"][None].to(acc.device, dtype=run.weight_dtype)
    folder = Path(cfg.output) / "validation" / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    with torch.no_grad(), acc.autocast():
        for k, prompt in enumerate(cfg.validation_prompts):
            g = torch.Generator(device=acc.device).manual_seed(cfg.seed + k)
            image = pipe(
                prompt,
                **extra,
                num_inference_steps=cfg.validation_steps,
                generator=g,
                height=run.dataset.height,
                width=run.dataset.width,
            ).images[0]
            path = folder / f"{k:02d}.png"
            image.save(path)
            paths.append(path)
            images.append(image)
    run.trainable.train()
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


def save_adapter(run: Run) -> Path:
    """The trained adapter, written atomically (a temporary folder, then a rename), with ``humanfix.json``.

    ``OUTPUT/controlnet/``: the branch in the diffusers layout (fp32). ``OUTPUT/lora/``: the LoRA as the diffusers
    file and the kohya single file (:mod:`humanfix.models.lora`).
    """
    from humanfix.models.lora import kohya_metadata, save_diffusers_lora, write_kohya_lora
    from humanfix.models.pipeline import write_branch_meta

    acc, cfg = run.accelerator, run.config
    acc.wait_for_everyone()
    final = Path(cfg.output) / cfg.adapter
    if not acc.is_main_process:
        return final
    tmp = Path(cfg.output) / f".tmp-{cfg.adapter}"
    shutil.rmtree(tmp, ignore_errors=True)
    resolution = [run.dataset.width, run.dataset.height]
    meta = dict(
        adapter=cfg.adapter,
        base_model=cfg.model,
        objective=to_toml_dict(cfg.objective),
        perceptual_weights=cfg.objective.perceptual_weights,
        steps=run.total_steps,
        resolution=resolution,
    )
    if cfg.adapter == "lora":
        save_diffusers_lora(acc.unwrap_model(run.trainable, keep_torch_compile=False), tmp)
        header = kohya_metadata(cfg.lora_rank, cfg.lora_alpha, run.total_steps, resolution, config_toml(cfg))
        write_kohya_lora(tmp, cfg.lora_alpha, header)
        meta.update(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)
    else:
        acc.unwrap_model(run.trainable).to(torch.float32).save_pretrained(tmp, safe_serialization=True)
        meta.update(conditioning=cfg.conditioning)
    write_branch_meta(tmp, **meta)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def config_toml(config: TrainConfig) -> str:
    """The resolved config as TOML: ``OUTPUT/training_config.toml``, which ``--config`` reads back unchanged."""
    import tomli_w

    return tomli_w.dumps(to_toml_dict(config))


def save_config(config: TrainConfig) -> Path:
    path = Path(config.output) / "training_config.toml"
    path.write_text(config_toml(config))
    return path


def train(config: TrainConfig) -> Path:
    """Run training; returns ``OUTPUT/controlnet`` or ``OUTPUT/lora``."""
    from humanfix.devices import deterministic_algorithms, tf32

    with deterministic_algorithms(config.deterministic), tf32(config.allow_tf32):
        run = setup(config)
        acc = run.accelerator
        if acc.is_main_process:
            Path(config.output).mkdir(parents=True, exist_ok=True)
            save_config(config)
        try:
            final_state = fit(run)
            path = save_adapter(run)
        finally:
            acc.end_training()
    if acc.is_main_process:
        skipped = final_state["nonfinite_total"]
        log.info(
            "trained %d steps (%d skipped as non-finite); %s saved to %s",
            final_state["step"],
            skipped,
            config.adapter,
            path,
        )
    return path
