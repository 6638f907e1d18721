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

import contextlib
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
from typing import Any, ClassVar

import torch

from humanfix.config import to_toml_dict
from humanfix.errors import UserError
from humanfix.launcher import launch_settings
from humanfix.losses.objective import ObjectiveConfig
from humanfix.models.lora import LORA_TARGETS
from humanfix.models.pipeline import CONDITIONINGS
from humanfix.models.save_dtype import SAVE_DTYPES
from humanfix.models.weights import SD15_HUB_ID
from humanfix.run_summary import start_lines
from humanfix.validation_loss import ValidationLoss, best_step

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTERS = ("controlnet", "lora")
# The learning rate each adapter gets unless --learning-rate says otherwise: diffusers' train_controlnet.py (a
# branch) and train_text_to_image_lora.py (a LoRA; docs/training.md explains why a LoRA needs ~10x more).
DEFAULT_LEARNING_RATES = {"controlnet": 1e-5, "lora": 1e-4}
TRACKERS = ("tensorboard", "wandb")
DEFAULT_VALIDATION_IMAGE_EVERY = 100  # diffusers' --validation_steps default
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainConfig:
    """Everything ``humanfix train`` needs; the CLI flags and a TOML file (``--config``) set these fields."""

    # Older TOML keys, read with a deprecation line (humanfix/renames.py).
    RENAMED: ClassVar[dict[str, str]] = {
        "allow_tf32": "tf32",
        "validate_every": "validation_image_every",
        "validation_steps": "validation_inference_steps",
    }

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
    # Unset: the adapter's default (DEFAULT_LEARNING_RATES: 1e-5 for a branch, 1e-4 for a LoRA).
    learning_rate: float | None = None
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
    # "no", "fp16" or "bf16": the frozen models' dtype and autocast; the branch stays fp32. Unset: what
    # `accelerate launch` (or the `accelerate config` file it reads) says, else "no"; the run records what it used.
    mixed_precision: str | None = None
    # Recompute activations of the UNet and the branch in the backward pass (saves memory).
    gradient_checkpointing: bool = False
    # torch.compile the UNet and the branch (slow first steps; pays off on long GPU runs).
    compile: bool = False
    # TF32 matmuls and convolutions for what runs in fp32 on Ampere and newer GPUs (the branch, x̂0's decode).
    # (TOML key `tf32`; the older `allow_tf32` is read with a deprecation warning.)
    tf32: bool = True
    # bitsandbytes' 8-bit AdamW (pip install 'humanfix[bnb]').
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    # Fraction of captions replaced by the empty prompt (classifier-free guidance training).
    proportion_empty_prompts: float = 0.0
    # Offset noise (Guttenberg 2023): noise += noise_offset · N(0, 1) per sample and channel; 0.05-0.1 is usual.
    noise_offset: float = 0.0
    # Keep an exponential moving average of the trained weights, saved beside the adapter (humanfix/ema.py).
    use_ema: bool = False
    ema_decay: float = 0.9999
    seed: int = 0
    # -- output
    output: Path = Path("runs/humanfix")
    # Save a checkpoint every N updates and at the end, so a finished run can be extended (0: never).
    checkpoint_every: int = 500
    # Keep the K newest checkpoints (0: keep all).
    keep_checkpoints: int = 3
    # "latest" or a checkpoint folder to continue from.
    resume: str | None = None
    # Validation images every N updates and at the end (0: never); unset: 100 when prompts are given.
    # (TOML key `validation_image_every`; the older `validate_every` is read with a deprecation warning.)
    validation_image_every: int | None = None
    validation_prompts: tuple[str, ...] = ()
    # Denoising steps per validation image (the older TOML key `validation_steps` is read with a warning).
    validation_inference_steps: int = 20
    # The split of --data whose validation loss (every term at fixed noise and timesteps) is measured as training
    # goes; unset: "val" when --data has it and it is not --split; "none": off (docs/training.md).
    validation_split: str | None = None
    # Measure it every N updates (0: at the end of each epoch); always before the first update and at the end.
    validation_every: int = 0
    # Measure it on M images of the split, a subset fixed by --seed (0: all).
    validation_images: int = 0
    # Keep the adapter with the lowest validation total in OUTPUT/best/ (the final adapter's layout).
    keep_best: bool = False
    # "tensorboard" or "wandb" (pip install 'humanfix[wandb]') to log there too (metrics.jsonl is always written).
    log_with: str | None = None
    # A progress line every N updates when stdout is not a terminal (nohup, SLURM); 0: none.
    log_every: int = 10
    # The saved adapter's dtype: fp32, or fp16/bf16 (half the file; what UIs' LoRA files usually are).
    save_dtype: str = "fp32"
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
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.adapter]
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
        if not 0 <= self.seed < 2**32:  # numpy's seed (accelerate's set_seed) takes 32 bits
            raise UserError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise UserError(f"max-steps must be > 0 (got {self.max_steps})")
        if self.validation_image_every is None:
            self.validation_image_every = DEFAULT_VALIDATION_IMAGE_EVERY if self.validation_prompts else 0
        names = ("checkpoint_every", "keep_checkpoints", "validation_image_every", "lr_warmup_steps", "workers")
        for name in (*names, "log_every"):
            if (getattr(self, name) or 0) < 0:
                raise UserError(f"{name.replace('_', '-')} must be >= 0")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise UserError(f"mixed-precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise UserError(f"lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        if not 0.0 <= self.proportion_empty_prompts <= 1.0:
            raise UserError("proportion-empty-prompts must lie in [0, 1]")
        if self.log_with not in (None, *TRACKERS):
            raise UserError(f"log-with supports {' or '.join(TRACKERS)} (got {self.log_with!r})")
        if self.validation_image_every and not self.validation_prompts:
            raise UserError("validation-image-every needs at least one --validation-prompt")
        if self.save_dtype not in SAVE_DTYPES:
            raise UserError(f"save-dtype must be one of {', '.join(SAVE_DTYPES)} (got {self.save_dtype!r})")
        if self.noise_offset < 0:
            raise UserError(f"noise-offset must be >= 0 (got {self.noise_offset})")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"ema-decay must lie in (0, 1) (got {self.ema_decay})")
        if self.objective.perceptual_weights is None:
            self.objective.perceptual_weights = "random" if self.model == "tiny" else "pretrained"
        self._check_validation_loss()

    def _check_validation_loss(self) -> None:
        """The validation split resolved ("val" beside --split when there, else "none") and checked."""
        if self.validation_every < 0 or self.validation_images < 0:
            raise UserError("validation-every and validation-images must be >= 0")

        def has(name: str) -> bool:
            return (Path(self.data) / name / "metadata.jsonl").is_file()

        if self.validation_split is None:
            self.validation_split = "val" if self.split != "val" and has("val") else "none"
        elif self.validation_split != "none" and not has(self.validation_split):
            raise UserError(
                f"--validation-split {self.validation_split}: no prepared split at "
                f"{Path(self.data) / self.validation_split} (prepare it, or give --validation-split none)"
            )
        if self.keep_best and self.validation_split == "none":
            raise UserError("--keep-best needs a validation split (--validation-split NAME, or a val split in --data)")

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
    launch: Any = None  # launcher.LaunchSettings: the precision and processes the run uses, and why
    ema: Any = None  # ema.EMA with --use-ema

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

    from humanfix.data.dataset import PreparedDataset
    from humanfix.data.sampler import BucketBatchSampler
    from humanfix.losses.objective import MaskAwareObjective
    from humanfix.models.lora import add_lora
    from humanfix.models.pipeline import load_components, make_controlnet

    dataset = PreparedDataset(config.split_dir, config.conditioning)  # fails fast, before any model loads
    if config.log_with == "wandb":
        require_wandb()
    _require_perceptual_weights(config.objective)  # a missing file fails now, not after the model has loaded
    output = Path(config.output)
    # accelerate treats several processes without CUDA as multi-CPU (gloo) only when told cpu=True.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,  # None: accelerate launch's / accelerate config's choice
        log_with=config.log_with,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
    )
    launch = launch_settings(accelerator, config.mixed_precision)
    if launch.mixed_precision not in ("no", "fp16", "bf16"):
        where = launch.precision_source
        raise UserError(f"mixed precision {launch.mixed_precision!r} (from {where}): use no, fp16 or bf16")
    config.mixed_precision = launch.mixed_precision  # what training_config.toml records: what the run used
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
    world = accelerator.num_processes
    batches_per_epoch = BucketBatchSampler.batches_per_epoch(dataset.sizes, config.batch_size, world)
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

    ema = None
    if config.use_ema:
        from humanfix.ema import EMA, register

        ema = EMA(params, config.ema_decay)
        register(accelerator, ema)
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
        launch,
        ema,
    )


def _require_perceptual_weights(objective: ObjectiveConfig) -> None:
    """The pretrained perceptual networks' files, checked before anything loads (weights.py says where they go)."""
    from humanfix.models.weights import FACENET_VGGFACE2, VGG16

    if objective.perceptual_weights == "random":
        return
    if objective.lambda_lpips > 0:
        VGG16.require(objective.vgg_weights)
    if objective.lambda_face > 0:
        FACENET_VGGFACE2.require(objective.facenet_weights)


def require_wandb() -> None:
    """``--log-with wandb`` needs the wandb package: one clear line when it is missing."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise UserError("--log-with wandb needs the wandb package: pip install 'humanfix[wandb]'")


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
    if run.config.noise_offset:  # drawn only when on: without it, the draws (and the numbers) are unchanged
        offset = torch.randn(latents.shape[:2] + (1, 1), generator=g.device, device=device, dtype=torch.float32)
        noise = noise + run.config.noise_offset * offset
    n_t = c.noise_scheduler.config.num_train_timesteps
    host_timesteps = torch.randint(0, n_t, (latents.shape[0],), generator=g.host)
    return loss_at(run, {**batch, "pixel_values": pixel_values}, latents, noise, host_timesteps, encoder_hidden_states)


def loss_at(
    run: Run,
    batch: dict[str, Any],
    latents: torch.Tensor,
    noise: torch.Tensor,
    host_timesteps: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
):
    """The step at given latents and noise (N×4×h×w fp32), timesteps (N integers, on the host) and text states:
    branch, UNet, target, objective. ``compute_loss`` draws them; the validation loss fixes them."""
    c, device, dtype = run.components, run.accelerator.device, run.weight_dtype
    pixel_values = batch["pixel_values"].to(device, non_blocking=True)
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
    from humanfix.data.dataset import collate
    from humanfix.data.sampler import BucketBatchSampler

    acc, cfg = run.accelerator, run.config
    on_gpu = acc.device.type == "cuda"
    workers = loader_workers(cfg.workers, acc.device, acc.num_processes)
    # One bucket (image size) per micro-batch; a square set gets EpochSampler's batches exactly.
    sampler = BucketBatchSampler(
        run.dataset.sizes, cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes, start
    )
    return torch.utils.data.DataLoader(
        run.dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=on_gpu,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_ignore_stop_signals if workers else None,
    )


def loader_workers(workers: int | None, device: torch.device, processes: int) -> int:
    """``--workers``, or by default: none on the CPU (it computes too), on a GPU a share of the cores per process."""
    if workers is not None:
        return workers
    return min(8, (os.cpu_count() or 1) // max(1, processes)) if device.type == "cuda" else 0


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops cleanly (humanfix.signals)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def fit(run: Run, stop: Any = None) -> dict[str, Any]:
    """The training loop; returns the final state (step, skipped, last metrics, ``steps_run``, ``skipped_run``).

    ``stop`` (a :class:`humanfix.signals.StopFlag`): once raised, the update in flight is finished, a checkpoint
    written and :class:`humanfix.signals.Interrupted` raised. A run resumed at its last step runs nothing.

    An update is queued on the device without waiting for it: its numbers (terms, gradient norm, whether it
    was applied) are read one update later, when the device has long finished it, and at checkpoints,
    validation and the end, so the host never stalls the device for logging.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from humanfix.progress_log import ProgressLines, is_terminal

    cfg, acc = run.config, run.accelerator
    output = Path(cfg.output)
    state = {"step": 0, "nonfinite_total": 0, "nonfinite_in_a_row": 0, "overflow_total": 0}
    if cfg.resume:
        state.update(load_checkpoint(run, resolve_resume(cfg.resume, output)))
    if state["step"] >= run.total_steps:  # a finished run, resumed (a requeue): nothing to do, and nothing changes
        return {**state, "last": {}, "steps_run": 0, "skipped_run": 0}
    metrics_path = output / "metrics.jsonl"
    if acc.is_main_process:
        _truncate_metrics(metrics_path, state["step"])
        save_config(cfg)  # only now that the run has started: a failed --resume leaves the old config alone
    acc.wait_for_everyone()
    val_loss = None if cfg.validation_split == "none" else ValidationLoss(run, state["step"])
    if val_loss is not None and state["step"] == 0:
        val_loss(0)  # the starting point

    step = state["step"]
    start = {"step": step, "skipped": state["nonfinite_total"]}
    stop_votes: list[Any] = []  # several processes: the queued all-reduced stop flags (see _stop_agreed)
    micro = step * cfg.gradient_accumulation_steps
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not acc.is_main_process or not is_terminal(),
        transient=False,
    )
    lines = ProgressLines(run.total_steps, step, cfg.log_every, enabled=acc.is_main_process)
    images_per_update = cfg.batch_size * acc.num_processes * cfg.gradient_accumulation_steps
    sums = None  # this update's terms (SUM_KEYS), summed over its micro-batches on the device
    pending: list[dict[str, Any]] = []  # queued updates whose numbers are not read yet (at most one)
    last: dict[str, Any] = {}
    clock = {"tick": time.perf_counter()}

    def finish() -> None:
        """Read the queued update's numbers: count, warn, stop, log; advance the LR schedule if it was applied."""
        nonlocal last
        for update in pending:
            last = _log_update(run, state, update, images_per_update, clock, metrics_path)
            if not last["skipped"]:  # a skipped update holds the schedule (the next one gets the same rate)
                _advance_scheduler(run)
            lines.update(last)
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
                    # The previous update, done on the device by now (this one's backward is queued behind it):
                    # read it before this update takes its learning rate, so a skipped one holds the schedule.
                    finish()
                    lr = run.optimizer.param_groups[0]["lr"]  # the rate this update uses, logged with it
                    update = _apply_update(run, run.params, sums)
                    if run.ema is not None:
                        run.ema.step()
                run.optimizer.zero_grad(set_to_none=True)
            if not acc.sync_gradients:
                continue
            sums = None
            step += 1
            pending.append({**update, "step": step, "epoch": (micro - 1) // run.batches_per_epoch,
                            "lr": lr, "queued": time.perf_counter()})  # fmt: skip
            state["step"] = step
            end = step >= run.total_steps
            checkpoint = cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or end)  # the end: extendable
            validation = cfg.validation_image_every and (step % cfg.validation_image_every == 0 or end)
            measure = val_loss is not None and val_loss.due(step)
            if checkpoint or validation or measure or end:
                finish()
            if measure:  # before the checkpoint: a run resumed from it has this line already
                val_loss(step)
                clock["tick"] = time.perf_counter()  # the next update's images/s leaves the validation out
            if checkpoint:
                save_checkpoint(run, state)
            if validation:
                validate(run, step)
            if step >= run.total_steps:
                break
            if stop is not None and _stop_agreed(acc, stop, stop_votes):
                finish()
                _stop_with_checkpoint(run, state, stop, saved=bool(checkpoint))
    print(f"rank {acc.process_index}/{acc.num_processes} finished at step {step}", file=sys.stderr)
    if val_loss is not None and acc.is_main_process:
        from rich.console import Console

        Console().print(val_loss.table())
    return {**state, "last": last, "steps_run": step - start["step"],
            "skipped_run": state["nonfinite_total"] - start["skipped"]}  # fmt: skip


def _stop_agreed(acc: Any, stop: Any, votes: list[Any]) -> bool:
    """Whether every process stops after this update. One process: the flag itself. Several: each queues an
    all-reduce of its flag (a fill kernel and a collective, no host sync) and reads the one queued an update
    earlier, which the device has finished by now; every process reads the same sum, so all stop together."""
    if acc.num_processes == 1:
        return bool(stop)
    flag = torch.full((1,), float(stop.signum), device=acc.device)
    votes.append(_read_later(acc.reduce(flag, reduction="sum")))
    if len(votes) < 2:
        return False
    agreed = votes.pop(0)()[0] > 0
    if agreed and not stop:
        stop.signum = 15  # another process was signalled: stop as for SIGTERM
    return agreed


def _stop_with_checkpoint(run: Run, state: dict[str, Any], stop: Any, saved: bool) -> None:
    """Write a checkpoint at this update (unless one was just written), say where and how to resume, stop."""
    from humanfix.signals import Interrupted

    path = Path(run.config.output) / CHECKPOINTS / f"step-{state['step']:08d}"
    if not saved:
        save_checkpoint(run, state)
    raise Interrupted(
        f"{stop.name} at step {state['step']}/{run.total_steps}: checkpoint saved to {path}; "
        "rerun the same command with --resume latest to continue",
        stop.signum,
    )


def _apply_update(run: Run, params: list[torch.Tensor], sums: torch.Tensor) -> dict[str, Any]:
    """Clip, then step the optimizer unless the update's loss or gradient norm is non-finite on any process.

    The decision is taken on the device: one reduction gives every process the same statistics (SUM_KEYS,
    then the gradient norm), and fused AdamW skips the step when told ``found_inf`` (no host sync). An
    optimizer without that (8-bit AdamW) asks the host. Under fp16's dynamic loss scaling, an overflowing
    gradient is the scaler's to skip (it lowers the scale and tries again): its found_inf comes from the same
    unscaled gradients whose norm is in the statistics, so the reduced flag says whether it skipped.
    Returns the device statistics, read later: SUM_KEYS, the gradient norm, 1.0 where the update was not
    applied, and under the scaler the loss scale this update ran at; ``scaled`` says whether there is one.
    """
    acc, cfg = run.accelerator, run.config
    norm = acc.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)  # inf: measure only
    norm = sums.new_zeros(()) if norm is None else torch.as_tensor(norm).to(sums.device, torch.float64)
    stats = acc.reduce(torch.cat([sums, norm.reshape(1)]), reduction="sum")
    bad = ~(torch.isfinite(stats[0]) & torch.isfinite(stats[-1]))
    inner = run.optimizer.optimizer
    flags = [bad.double().reshape(1)]
    if acc.scaler is not None:
        flags.append(acc.scaler._get_scale_async().double().reshape(1))  # before update() changes it; no sync
        run.optimizer.step()
    elif inner.defaults.get("fused"):
        inner.found_inf = bad.float()
        run.optimizer.step()
        del inner.found_inf
    elif not bad.item():
        run.optimizer.step()
    return {"stats": _read_later(torch.cat([stats, *flags])), "scaled": acc.scaler is not None}


def _advance_scheduler(run: Run) -> None:
    """One applied update on the LR schedule (set up with a factor of the process count, as diffusers does)."""
    inner = getattr(run.lr_scheduler, "scheduler", run.lr_scheduler)
    for _ in range(run.accelerator.num_processes):
        inner.step()


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
    scale = values.pop() if update["scaled"] else None
    totals, grad_norm, bad = dict(zip(SUM_KEYS, values[:-2], strict=True)), values[-2], values[-1] > 0
    loss_ok = math.isfinite(totals["loss"])
    # fp16: a finite loss whose gradient overflows is the scaler's (it skips and halves the scale), unless the
    # scale is down to 1 or below, where the gradient is non-finite by itself and the stop rule applies.
    overflow = scale is not None and loss_ok and bad
    nonfinite = not loss_ok or (bad and (scale is None or scale <= 1.0))
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
        "skipped": bad or nonfinite,
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
    """The checkpoint to resume from, checked (:mod:`humanfix.checkpointing`): ``latest`` falls back to the newest
    one that checks out, saying which it skipped and why; a damaged PATH stops with one line naming its file."""
    from humanfix.checkpointing import problem

    if resume == "latest":
        found = checkpoint_dirs(output)
        if not found:
            raise UserError(f"--resume latest: no checkpoint in {output / CHECKPOINTS}")
        first = None
        for path in reversed(found):
            wrong = problem(path, STATE_FILE)
            if wrong is None:
                return path
            first = first or wrong
            log.warning("--resume latest: skipping %s (%s); trying the previous checkpoint", path.name, wrong)
        raise UserError(f"--resume latest: no checkpoint in {output / CHECKPOINTS} loads cleanly ({first})")
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).is_file():
        raise UserError(f"--resume {path}: not a humanfix checkpoint ({STATE_FILE} not found)")
    wrong = problem(path, STATE_FILE)
    if wrong is not None:
        raise UserError(f"--resume {path}: {wrong}")
    return path


def clean_leftovers(output: Path) -> None:
    """Remove the temporary folders a killed run left (``checkpoints/.tmp-step-N``, ``.tmp-controlnet`` …)."""
    for tmp in [*(output / CHECKPOINTS).glob(".tmp-step-*"), *(output / f".tmp-{a}" for a in ADAPTERS)]:
        if tmp.is_dir():
            log.info("removing %s, left by an interrupted run", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(run: Run, state: dict[str, Any]) -> Path | None:
    """Write ``checkpoints/step-N`` atomically: everything goes into a temporary folder, renamed when complete.

    A process killed mid-save leaves only a ``.tmp-step-N`` folder, which resume ignores (and the next run
    removes). Non-finite weights are never saved. On a full disk, the checkpoints this save would rotate out
    anyway are deleted first when that is safe (:func:`humanfix.checkpointing.rotatable`), saying so, and the
    save tried once more; otherwise one line names the folder and the room needed.
    """
    from humanfix.checkpointing import all_finite, rotatable, write_checksums
    from humanfix.diskfull import disk_full_error, folder_bytes, is_disk_full

    acc, output = run.accelerator, Path(run.config.output)
    root = output / CHECKPOINTS
    final = root / f"step-{state['step']:08d}"
    tmp = root / f".tmp-step-{state['step']:08d}"
    if not all_finite(run.params):
        raise TrainingStopped(
            f"the adapter's weights hold non-finite values at step {state['step']}: no checkpoint written "
            "(the last one is intact; resume from it with a lower --learning-rate)"
        )
    for attempt in (0, 1):
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            if acc.is_main_process:
                write_checksums(tmp)
                (tmp / STATE_FILE).write_text(json.dumps(state))
        except Exception as e:
            if not is_disk_full(e):
                raise
            written = folder_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            existing = checkpoint_dirs(output)
            needed = folder_bytes(existing[-1]) if existing else written
            old = rotatable(existing, run.config.keep_checkpoints) if attempt == 0 else []
            if not old:
                raise disk_full_error(root, needed, f"checkpoint step {state['step']}") from None
            for path in old:
                log.warning("disk full: deleting %s (it would be rotated out by this save) to make room", path)
                shutil.rmtree(path)
            continue
        break
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    keep = run.config.keep_checkpoints
    if keep:
        for old in checkpoint_dirs(Path(run.config.output))[:-keep]:
            shutil.rmtree(old)
    return final


def load_checkpoint(run: Run, path: Path) -> dict[str, Any]:
    """Load a checked checkpoint (:func:`resolve_resume`); a load that still fails, or non-finite weights, stop."""
    from humanfix.checkpointing import all_finite, read_state

    state = read_state(path, STATE_FILE)
    try:
        run.accelerator.load_state(str(path))
    except Exception as e:
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} does not load: {first}") from None
    if not all_finite(run.params):
        raise UserError(f"checkpoint {path} holds non-finite adapter weights: resume from an earlier one")
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
        cond = run.dataset[run.dataset.validation_index]["conditioning"]  # at the size the images are drawn at
        extra["image"] = cond[None].to(acc.device, dtype=run.weight_dtype)
    folder = Path(cfg.output) / "validation" / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    with torch.no_grad(), acc.autocast():
        for k, prompt in enumerate(cfg.validation_prompts):
            g = torch.Generator(device=acc.device).manual_seed(cfg.seed + k)
            image = pipe(
                prompt,
                **extra,
                num_inference_steps=cfg.validation_inference_steps,
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
        elif tracker.name == "wandb":
            import wandb

            shown = [wandb.Image(i, caption=p) for i, p in zip(images, cfg.validation_prompts, strict=True)]
            tracker.log({"validation": shown}, step=step)
    return paths


def _inference_scheduler(components: Any) -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(components.noise_scheduler.config)


# ---------------------------------------------------------------------------------------------------- save


def save_adapter(run: Run, folder: Path | None = None, step: int | None = None, **meta_extra: Any) -> Path:
    """The trained adapter, written atomically (a temporary folder, then a rename), with ``humanfix.json``.

    ``OUTPUT/controlnet/``: the branch in the diffusers layout. ``OUTPUT/lora/``: the LoRA as the diffusers
    file and the kohya single file (:mod:`humanfix.models.lora`). In fp32 unless ``--save-dtype`` says fp16/bf16.
    With ``--use-ema``, the averaged weights go beside it in the same layout (``OUTPUT/controlnet-ema/`` …).
    ``folder``: there instead (``OUTPUT/best/``), the adapter as of update ``step``, ``meta_extra`` added to
    ``humanfix.json``.
    """
    from humanfix.checkpointing import all_finite

    acc, cfg = run.accelerator, run.config
    acc.wait_for_everyone()
    final = Path(folder) if folder is not None else Path(cfg.output) / cfg.adapter
    if not all_finite(run.params):
        raise TrainingStopped(f"the trained {cfg.adapter} holds non-finite weights: not saved to {final}")
    if not acc.is_main_process:
        return final
    _write_adapter(run, final, step, **meta_extra)
    if run.ema is not None and folder is None:
        from humanfix.ema import ema_folder

        with run.ema.applied():
            _write_adapter(run, Path(cfg.output) / ema_folder(cfg.adapter), step, ema=True)
    return final


def _write_adapter(run: Run, final: Path, step: int | None = None, ema: bool = False, **meta_extra: Any) -> Path:
    """The adapter's files and ``humanfix.json`` into ``final`` (via ``.tmp-<name>`` beside it)."""
    from humanfix.models.lora import kohya_metadata, save_diffusers_lora, write_kohya_lora
    from humanfix.models.pipeline import write_branch_meta
    from humanfix.models.save_dtype import cast_safetensors

    acc, cfg = run.accelerator, run.config
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    resolution = [run.dataset.width, run.dataset.height]
    base = Path(cfg.model).expanduser()
    meta = dict(
        adapter=cfg.adapter,
        base_model=str(base.resolve()) if cfg.model != "tiny" and base.exists() else cfg.model,
        objective=to_toml_dict(cfg.objective),
        perceptual_weights=cfg.objective.perceptual_weights,
        steps=run.total_steps if step is None else step,
        resolution=resolution,
        save_dtype=cfg.save_dtype,
        **meta_extra,
    )
    if ema:
        meta.update(ema_decay=cfg.ema_decay)
    if cfg.adapter == "lora":
        save_diffusers_lora(acc.unwrap_model(run.trainable, keep_torch_compile=False), tmp)
        header = kohya_metadata(cfg.lora_rank, cfg.lora_alpha, meta["steps"], resolution, config_toml(cfg))
        write_kohya_lora(tmp, cfg.lora_alpha, header)
        meta.update(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)
    else:
        branch = acc.unwrap_model(run.trainable, keep_torch_compile=False)  # compiled by accelerate launch's dynamo
        branch.to(torch.float32).save_pretrained(tmp, safe_serialization=True)
        meta.update(conditioning=cfg.conditioning)
    cast_safetensors(tmp, cfg.save_dtype)
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
    """Run training; returns ``OUTPUT/controlnet`` or ``OUTPUT/lora``.

    The output folder is locked for the run (:mod:`humanfix.runlock`, rank 0), and SIGINT/SIGTERM stop it
    with a checkpoint (:mod:`humanfix.signals`).
    """
    from humanfix.devices import deterministic_algorithms, tf32
    from humanfix.runlock import hold
    from humanfix.signals import graceful_stop

    rank0 = os.environ.get("RANK", "0") == "0"
    with (
        hold(config.output, "train") if rank0 else contextlib.nullcontext(),
        deterministic_algorithms(config.deterministic),
        tf32(config.tf32),
    ):
        run = setup(config)
        acc = run.accelerator
        if acc.is_main_process:
            Path(config.output).mkdir(parents=True, exist_ok=True)  # the config is written once fit has started
            clean_leftovers(Path(config.output))
            for line in start_lines(config, run.launch, run.total_steps):
                log.info("%s", line)
        try:
            with graceful_stop() as stop:  # only around the loop: Ctrl-C while loading models stops at once
                final_state = fit(run, stop)
            path = _finish(run, final_state)
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
        if config.keep_best and (best := best_step(config.output)) is not None:
            log.info("the lowest validation total came at step %d: that adapter is in %s", best, config.output / "best")
    return path


def _finish(run: Run, final: dict[str, Any]) -> Path:
    """Save the adapter, unless nothing was learnt: a run resumed at its end (already saved) changes nothing,
    and a run whose every update was skipped as non-finite is an error, not a result."""
    cfg = run.config
    saved = Path(cfg.output) / cfg.adapter
    if final["steps_run"] == 0 and (saved / "humanfix.json").is_file():
        log.warning("this run had already finished (step %d of %d): nothing to do; %s is unchanged",
                    final["step"], run.total_steps, saved)  # fmt: skip
        return saved
    if final["steps_run"] and final["skipped_run"] == final["steps_run"]:
        raise TrainingStopped(
            f"every update of this run ({final['steps_run']}) was skipped as non-finite: nothing learnt, "
            f"nothing saved to {saved} (lower --learning-rate, check the data and the loss weights)"
        )
    try:
        return save_adapter(run)
    except Exception as e:
        from humanfix.diskfull import disk_full_error, is_disk_full

        if not is_disk_full(e):
            raise
        shutil.rmtree(Path(cfg.output) / f".tmp-{cfg.adapter}", ignore_errors=True)
        needed = sum(p.numel() * p.element_size() for p in run.params) * (2 if cfg.adapter == "lora" else 1)
        advice = "the checkpoints are intact: free some space and rerun the same command with --resume latest"
        raise disk_full_error(Path(cfg.output), needed, f"the trained {cfg.adapter}", advice) from None
