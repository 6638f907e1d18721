"""The ``humanfix`` command line. Each command builds a typed config and calls one function.

Errors a user can cause are :class:`humanfix.errors.UserError`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from humanfix.errors import UserError
from humanfix.renames import deprecated

# Nothing touches the network unless the user opts in with HF_HUB_OFFLINE=0: set before huggingface_hub is
# imported (it reads the variable once), this also silences its retries and background requests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _WorkflowOrder(typer.core.TyperGroup):
    """``--help`` lists the commands in the order of the workflow, not alphabetically."""

    ORDER = ("doctor", "prepare-data", "train", "generate", "evaluate")

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else len(self.ORDER))


app = typer.Typer(
    name="humanfix",
    cls=_WorkflowOrder,
    help="Teach Stable Diffusion 1.5 to draw people: prepare data, train a ControlNet branch under a "
    "mask-aware perceptual loss, generate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=_stderr_console())],
        force=True,
    )
    logging.getLogger("humanfix").setLevel(logging.INFO)
    for noisy in ("diffusers", "transformers", "accelerate", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from humanfix.logs import quiet_known_noise

    quiet_known_noise()


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from humanfix import __version__

        print(f"humanfix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _setup_logging(verbose)


@app.command()
def doctor(
    model: Annotated[str, typer.Option(help="The SD 1.5 model to look for (hub id or folder).")] = (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    ),
) -> None:
    """Show Python, torch and the device, and for each pretrained asset whether it is present or where it goes.

    Exits with 1 when something training needs is missing (optional assets only say so)."""
    from humanfix.doctor import report_lines, run_checks

    checks = run_checks(model)
    for line in report_lines(checks):
        print(line)
    if any(c.needed and not c.ok for c in checks):
        raise typer.Exit(1)


@app.command("prepare-data")
def prepare_data(
    coco_root: Annotated[Path | None, typer.Option(help="COCO 2017 folder: annotations/ and {split}2017/.")] = None,
    keypoints: Annotated[Path | None, typer.Option(help="person_keypoints_{split}2017.json (one split).")] = None,
    captions: Annotated[Path | None, typer.Option(help="captions_{split}2017.json (one split).")] = None,
    images: Annotated[Path | None, typer.Option(help="The split's image folder.")] = None,
    split: Annotated[str | None, typer.Option(help="train (default), val or all.")] = None,
    min_coverage: Annotated[float | None, typer.Option(help="Least person-mask coverage (default 0.2).")] = None,
    min_person_area: Annotated[
        float | None, typer.Option(help="Least mask area, as image fraction, for a person to count (default 0.01).")
    ] = None,
    max_persons: Annotated[int | None, typer.Option(help="Most counted persons per image (default 5).")] = None,
    skip_crowd: Annotated[bool | None, typer.Option(help="Drop images with crowd annotations (default yes).")] = None,
    min_face_size: Annotated[int | None, typer.Option(help="Least face box side in output px (default 32).")] = None,
    resolution: Annotated[int | None, typer.Option(help="Output side: short side resize + crop (512).")] = None,
    crop: Annotated[
        str | None, typer.Option(help="people (default: the window keeping most keypoints) or center.")
    ] = None,
    buckets: Annotated[
        bool | None, typer.Option("--buckets", help="Keep the aspect ratio: nearest bucket, area ~resolution².")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPU count, at most 8).")] = None,
    limit: Annotated[int | None, typer.Option(help="Process at most N kept images (first by id).")] = None,
    output: Annotated[Path | None, typer.Option(help="Output folder (default humanfix-data).")] = None,
    out: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --output.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo the split instead of resuming.")] = False,
    default_caption: Annotated[str | None, typer.Option(help="Caption for images without one.")] = None,
    save_crops: Annotated[bool | None, typer.Option(help="Write face and person crops (default yes).")] = None,
    face_detector: Annotated[str | None, typer.Option(help="mtcnn (default) or none (keypoints only).")] = None,
    wholebody: Annotated[
        Path | None, typer.Option(help="COCO-WholeBody v1.0 file of the split: its hand boxes win over keypoints.")
    ] = None,
    min_hand_size: Annotated[int | None, typer.Option(help="Least hand box side in output px (default 32).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with these options (flags override it).")] = None,
) -> None:
    """Turn MS COCO into the human-centric training set: images, person masks, boxes, faces, captions."""
    from rich.console import Console
    from rich.table import Table

    from humanfix.config import build_config
    from humanfix.data.prepare import PrepareConfig, prepare, summary_rows

    if out is not None:
        deprecated("--out", "--output")
        output = output or out
    cfg = build_config(
        PrepareConfig, config, coco_root=coco_root, keypoints=keypoints, captions=captions, images=images,
        split=split, min_coverage=min_coverage, min_person_area=min_person_area, max_persons=max_persons,
        skip_crowd=skip_crowd, min_face_size=min_face_size, resolution=resolution, workers=workers, limit=limit,
        output=output, overwrite=overwrite or None, default_caption=default_caption, save_crops=save_crops,
        face_detector=face_detector, crop=crop, buckets=buckets, wholebody=wholebody, min_hand_size=min_hand_size,
    )  # fmt: skip
    summary = prepare(cfg)
    table = Table(title=f"prepare-data -> {cfg.output}")
    table.add_column("")
    for name in summary["splits"]:
        table.add_column(name, justify="right")
    for row in summary_rows(summary):
        table.add_row(*row)
    Console().print(table)


@app.command()
def generate(
    prompts: Annotated[list[str] | None, typer.Argument(help="Prompts to draw (and/or --prompts-file).")] = None,
    prompts_file: Annotated[
        str | None,
        typer.Option(help='One prompt per line, or JSONL {"prompt", "seed", "negative_prompt", "condition_image"}.'),
    ] = None,
    prompt_set: Annotated[
        str | None, typer.Option(help="A built-in prompt set: hands (28 prompts, hands large in the frame).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Base SD 1.5: hub id, folder, single file, or 'tiny' (default: the base the adapter was trained on, "
            "else stable-diffusion-v1-5)."
        ),
    ] = None,
    model_config: Annotated[
        str | None, typer.Option(help="Diffusers folder with the configs, when --model is a single file.")
    ] = None,
    controlnet: Annotated[str | None, typer.Option(help="Trained branch folder; omitted: plain SD 1.5.")] = None,
    lora: Annotated[str | None, typer.Option(help="Trained LoRA folder (pytorch_lora_weights.safetensors).")] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models for side-by-side grids: 'base' (plain SD), branch and LoRA folders "
            "(optionally LABEL=DIR)."
        ),
    ] = None,
    conditioning_scale: Annotated[float | None, typer.Option(help="Weight of the branch (default 1.0).")] = None,
    lora_scale: Annotated[float | None, typer.Option(help="Weight of the LoRA (default 1.0).")] = None,
    condition_image: Annotated[
        str | None, typer.Option(help="Pose or mask image, for branches trained with that conditioning.")
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt for every prompt.")] = None,
    num_images: Annotated[int | None, typer.Option(help="Images per prompt (default 1).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Image i of prompt p gets seed + p*num_images + i (default 0).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default 50).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="Classifier-free guidance (default 7.5).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="ddim (default), unipc, euler or dpm.")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels, multiple of 8 (default 512).")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels, multiple of 8 (default 512).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per pipeline call (default 4).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (default), float32, float16 or bfloat16.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu, cuda, cuda:1, ...")] = None,
    output: Annotated[str | None, typer.Option(help="Output folder (default outputs/generate).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet and branch.")] = False,
    config: Annotated[str | None, typer.Option(help="TOML file with these options (flags override it).")] = None,
) -> None:
    """Draw images with SD 1.5, plain or with a trained branch or LoRA; --compare draws the same seeds through each."""
    from humanfix.config import build_config
    from humanfix.generate import GenerateConfig
    from humanfix.generate import generate as run_generate

    cfg = build_config(
        GenerateConfig,
        config,
        prompts=tuple(prompts) if prompts else None,
        prompts_file=prompts_file,
        prompt_set=prompt_set,
        model=model,
        model_config=model_config,
        controlnet=controlnet,
        lora=lora,
        compare=tuple(compare.split(",")) if compare is not None else None,
        conditioning_scale=conditioning_scale,
        lora_scale=lora_scale,
        condition_image=condition_image,
        negative_prompt=negative_prompt,
        num_images=num_images,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        scheduler=scheduler,
        height=height,
        width=width,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        output=output,
        compile=compile or None,
    )
    result = run_generate(cfg)
    rank = f"[process {result.process[0]}/{result.process[1]}] " if result.process[1] > 1 else ""
    msg = f"{rank}{result.written} image(s) written, {result.skipped} already there; index: {result.index}"
    print(msg + (f"; {len(result.grids)} grid(s) in {result.output / 'grids'}" if result.grids else ""))


def _floats(text: str | None) -> tuple[float, ...] | None:
    """'1,1,0.5' -> (1.0, 1.0, 0.5)."""
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from None


@app.command()
def train(
    data: Annotated[Path | None, typer.Option(help="A prepare-data output folder.")] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data to train on (default train).")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base SD 1.5: hub id, folder, single file, or 'tiny' (default stable-diffusion-v1-5)."),
    ] = None,
    model_config: Annotated[
        Path | None, typer.Option(help="Diffusers config folder for a single-file --model.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="What trains: controlnet (a branch, the paper; default) or lora (UNet LoRA).")
    ] = None,
    controlnet: Annotated[
        Path | None, typer.Option(help="Start from this branch (default: a copy of the UNet).")
    ] = None,
    conditioning: Annotated[str | None, typer.Option(help="none (blank, the paper; default), pose or mask.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default 32).")] = None,
    lora_alpha: Annotated[
        float | None, typer.Option(help="LoRA alpha; output scaled by alpha/rank (default rank).")
    ] = None,
    lora_targets: Annotated[
        str | None,
        typer.Option(help="attn (default: to_q, to_k, to_v, to_out.0) or attn-ff-conv (+ feed-forward, resnet convs)."),
    ] = None,
    lambda_lpips: Annotated[float | None, typer.Option(help="λ1, weight of masked LPIPS (default 0.2).")] = None,
    lambda_face: Annotated[float | None, typer.Option(help="λ2, weight of the face loss (default 0.5).")] = None,
    lambda_hand: Annotated[
        float | None, typer.Option(help="λ3, weight of LPIPS on hand crops (default 0; 0.1 recommended).")
    ] = None,
    timestep_threshold: Annotated[int | None, typer.Option(help="T: perceptual terms for t < T (default 100).")] = None,
    lpips_layer_weights: Annotated[
        str | None, typer.Option(help="5 comma-separated LPIPS layer weights (default 1,1,1,1,1).")
    ] = None,
    lpips_crop_size: Annotated[
        int | None, typer.Option(help="Side each person crop is resized to for LPIPS (default: image/2 in [64, 224]).")
    ] = None,
    face_layers: Annotated[
        str | None, typer.Option(help="Comma-separated face-net layers (default conv2d_4b,…,embedding).")
    ] = None,
    face_layer_weights: Annotated[
        str | None, typer.Option(help="Comma-separated face layer weights α_l (default all 1).")
    ] = None,
    hand_layer_weights: Annotated[
        str | None, typer.Option(help="5 comma-separated hand-term LPIPS weights (default 1,1,1,1,1).")
    ] = None,
    perceptual_weights: Annotated[
        str | None, typer.Option(help="pretrained (default) or random (default with --model tiny).")
    ] = None,
    vgg_weights: Annotated[Path | None, typer.Option(help="VGG16 file for LPIPS (default: torch's cache).")] = None,
    facenet_weights: Annotated[
        Path | None, typer.Option(help="InceptionResnetV1 VGGFace2 file (default: facenet's cache).")
    ] = None,
    decode_region: Annotated[str | None, typer.Option(help="boxes (default) or full: what the VAE decodes.")] = None,
    decode_margin: Annotated[
        int | None, typer.Option(help="Latent pixels around the boxes' window (default 2 = 16 px).")
    ] = None,
    decoder_checkpointing: Annotated[
        str | None, typer.Option(help="Recompute the decoder in backward: none (default), top or all.")
    ] = None,
    snr_gamma: Annotated[
        float | None, typer.Option(help="Min-SNR weighting of the LDM term, γ (5 is usual; default off).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate (default 1e-5 for a branch, 1e-4 for a LoRA).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device batch size (default 1).")] = None,
    gradient_accumulation_steps: Annotated[
        int | None, typer.Option(help="Micro-batches per update (default 1).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Updates to run (overrides --epochs).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to run (default 1).")] = None,
    lr_scheduler: Annotated[str | None, typer.Option(help="constant, linear, cosine, … (default constant).")] = None,
    lr_warmup_steps: Annotated[int | None, typer.Option(help="Warm-up updates (default 0).")] = None,
    adam_beta1: Annotated[float | None, typer.Option(help="AdamW β1 (default 0.9).")] = None,
    adam_beta2: Annotated[float | None, typer.Option(help="AdamW β2 (default 0.999).")] = None,
    adam_weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay (default 1e-2).")] = None,
    adam_epsilon: Annotated[float | None, typer.Option(help="AdamW ε (default 1e-8).")] = None,
    mixed_precision: Annotated[
        str | None,
        typer.Option(help="no, fp16 or bf16 (default: what accelerate launch / accelerate config says, else no)."),
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option(help="Recompute activations to save memory (default off).")
    ] = None,
    use_8bit_adam: Annotated[bool | None, typer.Option(help="bitsandbytes 8-bit AdamW (default off).")] = None,
    max_grad_norm: Annotated[float | None, typer.Option(help="Gradient clipping norm (default 1).")] = None,
    proportion_empty_prompts: Annotated[
        float | None, typer.Option(help="Fraction of empty captions (default 0).")
    ] = None,
    noise_offset: Annotated[
        float | None, typer.Option(help="Offset noise: + s·N(0,1) per sample and channel (0.05-0.1 usual; default 0).")
    ] = None,
    use_ema: Annotated[
        bool | None,
        typer.Option(help="Keep an EMA of the trained weights, saved as OUTPUT/<adapter>-ema (default off)."),
    ] = None,
    ema_decay: Annotated[float | None, typer.Option(help="EMA decay (default 0.9999).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for every random draw (default 0).")] = None,
    output: Annotated[Path | None, typer.Option(help="Output folder (default runs/humanfix).")] = None,
    save_dtype: Annotated[str | None, typer.Option(help="Saved adapter's dtype: fp32 (default), fp16 or bf16.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N updates and at the end (default 500; 0: never).")
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option(help="Keep the K newest checkpoints (default 3; 0: all).")
    ] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint folder.")] = None,
    validation_prompt: Annotated[list[str] | None, typer.Option(help="A validation prompt (repeatable).")] = None,
    validation_image_every: Annotated[
        int | None,
        typer.Option(help="Validation images every N updates and at the end (default 100 with prompts; 0: never)."),
    ] = None,
    validation_inference_steps: Annotated[
        int | None, typer.Option(help="Denoising steps per validation image (default 20).")
    ] = None,
    validate_every: Annotated[
        int | None, typer.Option(hidden=True, help="Deprecated: --validation-image-every.")
    ] = None,
    validation_split: Annotated[
        str | None, typer.Option(help="Split for the validation loss (default: val beside --split; none: off).")
    ] = None,
    validation_every: Annotated[
        int | None, typer.Option(help="Validation loss every N updates (default: each epoch and the end).")
    ] = None,
    validation_images: Annotated[
        int | None, typer.Option(help="Validation loss on M images, a subset fixed by --seed (default: all).")
    ] = None,
    keep_best: Annotated[
        bool, typer.Option("--keep-best", help="Keep the adapter with the lowest validation total in OUTPUT/best/.")
    ] = False,
    log_with: Annotated[str | None, typer.Option(help="tensorboard or wandb, to log there too.")] = None,
    log_every: Annotated[
        int | None, typer.Option(help="A progress line every N updates when stdout is no terminal (default 10).")
    ] = None,
    max_nonfinite_steps: Annotated[
        int | None, typer.Option(help="Stop after N non-finite losses in a row (default 5).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader workers (default: 0 on the CPU, up to 8 on a GPU).")
    ] = None,
    cache_latents: Annotated[
        bool, typer.Option("--cache-latents", help="Encode each image once; draw latents from the cache.")
    ] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet and the branch.")] = False,
    tf32: Annotated[
        bool | None, typer.Option("--tf32/--no-tf32", help="TF32 for fp32 work on the GPU (default on).")
    ] = None,
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Deterministic kernels: bit-exact resume on CUDA (slower).")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="TOML file with these options (flags override it).")] = None,
) -> None:
    """Train a ControlNet branch (or a UNet LoRA) on a frozen SD 1.5 under the mask-aware objective."""
    from humanfix.config import build_config
    from humanfix.train import TrainConfig
    from humanfix.train import train as run_train

    if validate_every is not None:
        deprecated("--validate-every", "--validation-image-every")
        validation_image_every = validate_every if validation_image_every is None else validation_image_every
    objective = {
        "lambda_lpips": lambda_lpips,
        "lambda_face": lambda_face,
        "lambda_hand": lambda_hand,
        "timestep_threshold": timestep_threshold,
        "lpips_layer_weights": _floats(lpips_layer_weights),
        "lpips_crop_size": lpips_crop_size,
        "face_layers": tuple(face_layers.split(",")) if face_layers else None,
        "face_layer_weights": _floats(face_layer_weights),
        "hand_layer_weights": _floats(hand_layer_weights),
        "perceptual_weights": perceptual_weights,
        "vgg_weights": vgg_weights,
        "facenet_weights": facenet_weights,
        "decode_region": decode_region,
        "decode_margin": decode_margin,
        "decoder_checkpointing": decoder_checkpointing,
        "snr_gamma": snr_gamma,
    }
    cfg = build_config(
        TrainConfig, config, data=data, split=split, model=model, model_config=model_config, adapter=adapter,
        controlnet=controlnet, conditioning=conditioning, lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_targets=lora_targets, objective=objective, learning_rate=learning_rate, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, max_steps=max_steps, epochs=epochs,
        lr_scheduler=lr_scheduler, lr_warmup_steps=lr_warmup_steps, adam_beta1=adam_beta1, adam_beta2=adam_beta2,
        adam_weight_decay=adam_weight_decay, adam_epsilon=adam_epsilon, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, use_8bit_adam=use_8bit_adam, max_grad_norm=max_grad_norm,
        proportion_empty_prompts=proportion_empty_prompts, noise_offset=noise_offset, use_ema=use_ema,
        ema_decay=ema_decay, seed=seed, output=output, save_dtype=save_dtype,
        checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
        validation_image_every=validation_image_every,
        validation_prompts=tuple(validation_prompt) if validation_prompt else None,
        validation_inference_steps=validation_inference_steps, log_with=log_with, log_every=log_every,
        validation_split=validation_split, validation_every=validation_every,
        validation_images=validation_images, keep_best=keep_best or None,
        max_nonfinite_steps=max_nonfinite_steps, workers=workers, deterministic=deterministic or None,
        cache_latents=cache_latents or None, compile=compile or None, tf32=tf32,
    )  # fmt: skip
    saved = run_train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(f"{'LoRA' if cfg.adapter == 'lora' else 'branch'} saved to {saved}")


@app.command()
def evaluate(
    generated: Annotated[
        list[str] | None, typer.Option(help="A generate output (index.jsonl) or image folder; repeatable.")
    ] = None,
    real: Annotated[str | None, typer.Option(help="Real images: a prepare-data split folder or any folder.")] = None,
    real_stats: Annotated[str | None, typer.Option(help="Use real features saved with --save-stats NAME.")] = None,
    save_stats: Annotated[str | None, typer.Option(help="Save --real's features as NAME ($HUMANFIX_HOME).")] = None,
    output: Annotated[str | None, typer.Option(help="Output folder (default outputs/evaluate).")] = None,
    fid: Annotated[bool, typer.Option("--fid", help="FID of each model against the real set.")] = False,
    kid: Annotated[bool, typer.Option("--kid", help="KID too (more reliable at small N).")] = False,
    bootstrap: Annotated[int | None, typer.Option(help="Resamples for FID's 95% interval (implies --fid).")] = None,
    mode: Annotated[str | None, typer.Option(help="clean-fid mode: clean (default) or legacy_tensorflow.")] = None,
    inception_weights: Annotated[str | None, typer.Option(help="Path of clean-fid's inception-2015-12-05.pt.")] = None,
    faces: Annotated[bool, typer.Option("--faces", help="MTCNN face rate/confidence; face-crop FID.")] = False,
    face_threshold: Annotated[float | None, typer.Option(help="MTCNN probability of a face (default 0.9).")] = None,
    clip: Annotated[bool, typer.Option("--clip", help="CLIP score, when CLIP weights are on disk.")] = False,
    clip_model: Annotated[
        str | None, typer.Option(help="CLIP hub id (local cache) or folder (default openai/clip-vit-large-patch14).")
    ] = None,
    pose: Annotated[
        bool, typer.Option("--pose", help="Persons (RT-DETR), keypoints (ViTPose): person rate, plausible poses.")
    ] = False,
    pose_detector: Annotated[
        str | None,
        typer.Option(help="Person detector: hub id (local cache) or folder (default PekingU/rtdetr_r50vd_coco_o365)."),
    ] = None,
    pose_estimator: Annotated[
        str | None,
        typer.Option(help="ViTPose: hub id (local cache) or folder (default usyd-community/vitpose-base-simple)."),
    ] = None,
    pose_weights: Annotated[
        str | None, typer.Option(help="pretrained (default) or random (tiny stand-ins, numbers mean nothing).")
    ] = None,
    pose_reference: Annotated[
        str | None, typer.Option(help="Real row: detector (default) or ground-truth (a prepared split's keypoints).")
    ] = None,
    person_threshold: Annotated[float | None, typer.Option(help="Detector probability of a person (0.5).")] = None,
    keypoint_threshold: Annotated[float | None, typer.Option(help="Confidence for a keypoint to count (0.3).")] = None,
    pose_bootstrap: Annotated[int | None, typer.Option(help="Resamples for the pose rates' intervals (1000).")] = None,
    hands: Annotated[
        bool, typer.Option("--hands", help="MediaPipe Hands: hands per image, confidence, plausible hands; FID-H.")
    ] = False,
    hand_threshold: Annotated[float | None, typer.Option(help="MediaPipe's palm detection confidence (0.5).")] = None,
    hand_bootstrap: Annotated[int | None, typer.Option(help="Resamples for the hand rates' intervals (1000).")] = None,
    report: Annotated[bool, typer.Option("--report", help="Write OUTPUT/report.html with blind A/B.")] = False,
    report_images: Annotated[str | None, typer.Option(help="embed (default: one file) or link.")] = None,
    ratings: Annotated[list[str] | None, typer.Option(help="A/B choices JSON from report.html; repeatable.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu, cuda, cuda:1, ...")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per Inception or detector forward (32).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Image-loading processes (default: 0 on the CPU, 8 on a GPU).")
    ] = None,
    num_workers: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: --workers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Bootstrap, KID subsets, A/B order (default 0).")] = None,
    config: Annotated[str | None, typer.Option(help="TOML file with these options (flags override it).")] = None,
) -> None:
    """FID/KID with a bootstrap interval, face, pose and hand metrics, CLIP score, an HTML report with A/B, ratings."""
    from humanfix.config import build_config
    from humanfix.evaluate.run import EvaluateConfig
    from humanfix.evaluate.run import evaluate as run_evaluate

    if num_workers is not None:
        deprecated("--num-workers", "--workers")
        workers = num_workers if workers is None else workers
    cfg = build_config(
        EvaluateConfig, config, generated=tuple(generated) if generated else None, real=real, real_stats=real_stats,
        save_stats=save_stats, output=output, fid=fid or None, kid=kid or None, bootstrap=bootstrap, mode=mode,
        inception_weights=inception_weights, faces=faces or None, face_threshold=face_threshold, clip=clip or None,
        clip_model=clip_model, pose=pose or None, pose_detector=pose_detector, pose_estimator=pose_estimator,
        pose_weights=pose_weights, pose_reference=pose_reference, person_threshold=person_threshold,
        keypoint_threshold=keypoint_threshold, pose_bootstrap=pose_bootstrap, hands=hands or None,
        hand_threshold=hand_threshold, hand_bootstrap=hand_bootstrap, report=report or None,
        report_images=report_images,
        ratings=tuple(ratings) if ratings else None, device=device, batch_size=batch_size, workers=workers,
        seed=seed,
    )  # fmt: skip
    run_evaluate(cfg)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    from humanfix.signals import Interrupted

    try:
        app()
    except Interrupted as e:  # stopped by SIGINT/SIGTERM after saving its work: 130 / 143, as a shell reports
        print(f"humanfix: {e}", file=sys.stderr)
        sys.exit(e.code)
    except UserError as e:
        print(f"humanfix: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("humanfix: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
