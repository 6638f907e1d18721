"""What a training step costs: plain, with the perceptual terms, and as diffusers writes it, on the full SD 1.5
architecture.

The models are SD 1.5's UNet, VAE and CLIP text encoder built from their configs with random weights
(nothing is downloaded) plus a ControlNet branch copied from the UNet; only the branch trains.
Each mode runs in its own process so that its peak memory is its own:

- ``plain``: humanfix's training update with λ1 = λ2 = 0 (no decode);
- ``perceptual``: humanfix's update with λ1 = 0.2, λ2 = 0.5; timesteps are drawn as training draws them and
  samples with t < ``--timestep-threshold`` are gated in (1000, the default: every sample; 100: ~10%);
- ``diffusers``: the step as diffusers' ``examples/controlnet/train_controlnet.py`` writes it, same models.

Each process builds the models, runs ``--warmup`` updates, then times ``--steps`` full updates (forward,
backward, clipping, optimizer step) on a batch of ``--batch-size`` copies of the standard scene: at 512²
one person box of 240×384 px (35% of the frame, mask = box) with one 48×48 face; ``--persons N`` places N
such persons side by side (narrower when needed); ``--hands N`` puts N 40×40 hands (at 512²) in the first
person's box, at its lower corners (hands lie inside the person window, as in a photo). The last line printed
is JSON, with ``plain_img_per_s``, ``perceptual_img_per_s``, ``diffusers_img_per_s`` and ``peak_gb``.

    python benchmarks/step_cost.py                         # the standard scene, 512², CPU fp32
    python benchmarks/step_cost.py --resolution 256 --persons 2
    python benchmarks/step_cost.py --model tiny --resolution 64   # a smoke test in seconds
    python benchmarks/step_cost.py --cache-latents         # latents drawn from the cached posterior
    python benchmarks/step_cost.py --device cuda --dtype bfloat16 --batch-size 32 --timestep-threshold 100
    python benchmarks/step_cost.py --gpu-suite             # batches 8/16/32 × plain/T=100/diffusers, one process
    python benchmarks/step_cost.py --measure-loader        # the data loader's images/s on real photos
    python benchmarks/step_cost.py --measure-region-error  # box-window decode vs full decode
    python benchmarks/step_cost.py --measure-decode        # the decode alone, humanfix vs diffusers' vae.decode
    python benchmarks/step_cost.py --adapter lora --modes plain,perceptual,adapters  # a UNet LoRA vs the branch
    python benchmarks/step_cost.py --hands 2 --modes hand --resolution 256  # with L_hand (λ3) vs without, alternating
    python benchmarks/step_cost.py --hands 2 --measure-hand-term --steps 20  # L_hand's crops + VGG alone

A LoRA on the UNet (rank ``--lora-rank``, attention targets) in place of the branch, same scene: its step skips
the branch's forward and backward. ``--adapter lora`` runs the plain and perceptual modes with the LoRA too, each
in its own process (peak RSS); the mode ``adapters`` alternates the branch's and the LoRA's plain and perceptual
steps in one process (the time ratio; the LoRA's layers are disabled during the branch's steps).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def scene_boxes(resolution: int, persons: int, faces: int) -> tuple[list[list[int]], list[list[int]]]:
    """Person boxes (240×384 at 512², scaled) side by side, and a face box (48² at 512²) atop the first ``faces``."""
    s = resolution / 512
    height = round(384 * s)
    width = min(round(240 * s), resolution // persons - 8)
    gap = (resolution - persons * width) // (persons + 1)
    top = (resolution - height) // 2
    person_boxes, face_boxes = [], []
    for k in range(persons):
        x0 = gap + k * (width + gap)
        person_boxes.append([x0, top, x0 + width, top + height])
        if k < faces:
            f = round(48 * s)
            fx = x0 + (width - f) // 2
            face_boxes.append([fx, top + round(8 * s), fx + f, top + round(8 * s) + f])
    return person_boxes, face_boxes


def scene_hands(resolution: int, person_box: list[int], hands: int) -> list[list[int]]:
    """Up to two hand boxes (40² at 512², scaled) at the lower corners of ``person_box``, left then right."""
    s = round(40 * resolution / 512)
    x0, y0, x1, y1 = person_box
    top = y0 + round(0.55 * (y1 - y0))
    return [[x0, top, x0 + s, top + s], [x1 - s, top, x1, top + s]][:hands]


def write_scene(folder: Path, resolution: int, persons: int, faces: int, hands: int = 0) -> Path:
    """A one-image prepared split with the scene's boxes; returns the data folder."""
    import numpy as np
    from PIL import Image

    from humanfix.data.records import Record, write_records

    split = folder / "val"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(split / "images/1.jpg")
    person_boxes, face_boxes = scene_boxes(resolution, persons, faces)
    mask = np.zeros((resolution, resolution), np.uint8)
    for x0, y0, x1, y1 in person_boxes:
        mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(split / "masks/1.png")
    kp = [[[float(b[0]), float(b[1]), 0.0]] * 17 for b in person_boxes]
    write_records(
        split,
        [
            Record(
                file_name="images/1.jpg",
                mask_file_name="masks/1.png",
                text=["a person standing"],
                person_boxes=person_boxes,
                face_boxes=face_boxes,
                face_sources=["keypoints"] * len(face_boxes),
                keypoints=kp,
                hand_boxes=scene_hands(resolution, person_boxes[0], hands),
                hand_sides=["left", "right"][:hands],
                hand_sources=["keypoints"] * hands,
                coverage=float(mask.mean() / 255),
                coco_id=1,
                width=resolution,
                height=resolution,
            )
        ],
    )
    return folder


def sd15_vae():
    """SD 1.5's VAE architecture from its config, random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )


def sd15_components(dtype: torch.dtype):
    """SD 1.5's architecture from its configs, random weights; the tokenizer is the tiny model's (ids < 49408)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from humanfix.models.pipeline import SDComponents
    from humanfix.models.tiny import ensure_tiny_model

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    vae = sd15_vae()
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(ensure_tiny_model() / "tokenizer")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return SDComponents(tokenizer, text, vae, unet, sched, "sd15-random", False)


def build(args: argparse.Namespace, tmp: Path, perceptual: bool):
    """``setup`` on the scene (one image) with the benchmark's settings; returns (run, config, one-item batch)."""
    from humanfix.config import build_config
    from humanfix.train import TrainConfig, setup

    lambdas = (0.2, 0.5) if perceptual else (0.0, 0.0)
    objective = {
        "lambda_lpips": lambdas[0],
        "lambda_face": lambdas[1],
        "lambda_hand": args.lambda_hand if perceptual else 0.0,
        "timestep_threshold": args.timestep_threshold,
        "perceptual_weights": "random",
        "decode_region": args.decode_region,
        "decode_margin": args.decode_margin,
        "decoder_checkpointing": args.decoder_checkpointing,
    }
    data = write_scene(tmp / "data", args.resolution, args.persons, args.faces, args.hands)
    cfg = build_config(
        TrainConfig,
        None,
        model=args.model,
        data=data,
        split="val",
        output=tmp / "out",
        batch_size=args.batch_size,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        mixed_precision=args.mixed_precision,
        cache_latents=args.cache_latents,
        compile=args.compile,
        objective=objective,
        **({"adapter": "lora", "lora_rank": args.lora_rank} if args.train_adapter == "lora" else {}),
    )
    components = sd15_components(torch.float32) if args.model == "sd15" else None
    run = setup(cfg, components)
    if args.channels_last:  # a lever to measure on a GPU before training adopts it
        for model in (run.components.unet, run.components.vae, run.controlnet):
            if model is not None:  # no branch with a LoRA
                model.to(memory_format=torch.channels_last)
    return run, cfg


def scene_batch(run, batch_size: int) -> dict:
    """``batch_size`` copies of the scene, collated as the training loader collates."""
    from humanfix.data.dataset import collate

    return collate([run.dataset[0]] * batch_size)


def time_steps(run, cfg, steps: list, batch: dict, warmup: int, timed: int) -> dict[str, dict]:
    """Run the ``steps`` (functions) alternately, ``warmup`` + ``timed`` times each; per step: seconds, page faults."""
    from humanfix.train import compute_loss, step_generator

    times: dict[str, list[float]] = {step.__name__: [] for step in steps}
    faults: dict[str, list[int]] = {step.__name__: [] for step in steps}  # minor page faults per step
    device = run.accelerator.device
    for k in range(warmup + timed):
        for step in steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, f0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            step(run, batch, step_generator(cfg, k, k, 0, device), compute_loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[step.__name__].append(time.perf_counter() - t0)
            faults[step.__name__].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    n = len(batch["captions"])
    out = {}
    for name, values in times.items():
        step_s = sum(values[warmup:]) / timed
        out[name] = {"step_s": step_s, "img_per_s": n / step_s, "times": values[warmup:],
                     "page_faults": faults[name][warmup:]}  # fmt: skip
    return out


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def worker(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run, cfg = build(args, Path(tmp), perceptual=args.mode in ("perceptual", "ratio", "adapters", "hand"))
        batch = scene_batch(run, args.batch_size)
        # "interleaved" alternates humanfix's plain step and the diffusers step in one process: the fairest
        # timing of the two (same models, same memory state, same machine load); its peak is shared.
        steps = {"diffusers": [diffusers_step], "interleaved": [humanfix_step, diffusers_step]}.get(
            args.mode, [humanfix_step]
        )
        if args.mode == "ratio":  # plain and perceptual humanfix steps alternating in one process
            steps = [_with_objective(run, cfg, plain=True), _with_objective(run, cfg, plain=False)]
        if args.mode == "adapters":
            steps = _adapter_steps(run, cfg, args.lora_rank)
        if args.mode == "hand":  # the perceptual step without the hand term, then with it, alternating
            steps = [_with_objective(run, cfg, plain=False, hand=False), _with_objective(run, cfg, plain=False)]
        result = {"mode": args.mode, **time_steps(run, cfg, steps, batch, args.warmup, args.steps)}
        result["peak_gb"] = peak_gb(run.accelerator.device)
    first = steps[0].__name__
    result["step_s"], result["img_per_s"] = result[first]["step_s"], result[first]["img_per_s"]
    return result


def gpu_suite(args: argparse.Namespace) -> dict:
    """The throughput table in one process: batches 8, 16, 32 × plain, T = 100 and the diffusers step."""
    rows = []
    args.timestep_threshold = 100
    with tempfile.TemporaryDirectory() as tmp:
        run, cfg = build(args, Path(tmp), perceptual=True)
        plain, perceptual = _with_objective(run, cfg, plain=True), _with_objective(run, cfg, plain=False)
        device = run.accelerator.device
        for batch_size in args.suite_batches:
            batch = scene_batch(run, batch_size)
            row = {"batch": batch_size}
            for name, step in (("plain", plain), ("perceptual", perceptual), ("diffusers", diffusers_step)):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                timed = time_steps(run, cfg, [step], batch, args.warmup, args.steps)[step.__name__]
                row[f"{name}_img_per_s"] = timed["img_per_s"]
                row[f"{name}_peak_gb"] = peak_gb(device)
                print(f"batch {batch_size:>3} {name:>10}: {timed['img_per_s']:.1f} img/s, "
                      f"peak {row[f'{name}_peak_gb']:.1f} GB", file=sys.stderr, flush=True)  # fmt: skip
            row["t100_vs_plain"] = row["plain_img_per_s"] / row["perceptual_img_per_s"]
            row["plain_vs_diffusers"] = row["diffusers_img_per_s"] / row["plain_img_per_s"]
            row["epoch_37470_min"] = 37_470 / row["perceptual_img_per_s"] / 60
            rows.append(row)
    return {"suite": rows, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "dtype": args.dtype, "cache_latents": args.cache_latents,
            "compile": args.compile, "gradient_checkpointing": not args.no_gradient_checkpointing,
            "channels_last": args.channels_last}  # fmt: skip


def measure_loader(args: argparse.Namespace) -> dict:
    """Images/s of the training data loader over real photos at ``--resolution``, per worker count."""
    from dataclasses import replace

    import numpy as np
    import skimage.data
    from PIL import Image

    from humanfix.data.dataset import PreparedDataset, collate
    from humanfix.data.records import read_records, write_records

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_scene(Path(tmp) / "data", args.resolution, args.persons, args.faces)
        split = data / "val"
        template = read_records(split)[0]
        photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
        records = []
        for k in range(64):  # 64 distinct JPEG files (quality 95, as prepare-data writes them)
            photo = Image.fromarray(np.asarray(photos[k % len(photos)])).resize((args.resolution, args.resolution))
            photo.rotate(k * 5).save(split / f"images/{k}.jpg", quality=95)
            records.append(replace(template, file_name=f"images/{k}.jpg", coco_id=k))
        write_records(split, records)
        dataset = PreparedDataset(split)
        for workers in args.loader_workers:
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate, num_workers=workers,
                prefetch_factor=4 if workers else None, persistent_workers=bool(workers),
            )  # fmt: skip
            for _ in loader:  # warm-up: workers started, files in the page cache
                pass
            t0, n = time.perf_counter(), 0
            for _ in range(args.loader_epochs):
                for batch in loader:
                    n += len(batch["captions"])
            results[workers] = n / (time.perf_counter() - t0)
            print(f"{workers} workers: {results[workers]:.0f} img/s", file=sys.stderr, flush=True)
    return {"resolution": args.resolution, "batch_size": args.batch_size, "img_per_s_by_workers": results,
            "cpu_count": os.cpu_count()}  # fmt: skip


def _with_objective(run, cfg, plain: bool, hand: bool = True):
    """humanfix's step with the plain (λ = 0) or the configured perceptual objective swapped into ``run``;
    ``hand=False``: the perceptual objective without its hand term (λ3 = 0)."""
    from dataclasses import replace

    from humanfix.losses.objective import MaskAwareObjective

    sched = run.components.noise_scheduler
    objective = run.objective
    if plain:
        config = replace(cfg.objective, lambda_lpips=0.0, lambda_face=0.0, lambda_hand=0.0)
        objective = MaskAwareObjective(config, sched.alphas_cumprod, sched.config.prediction_type)
    elif not hand:
        config = replace(cfg.objective, lambda_hand=0.0)
        objective = MaskAwareObjective(config, sched.alphas_cumprod, sched.config.prediction_type)

    def step(run_, batch, g, compute_loss):
        run_.objective = objective
        humanfix_step(run_, batch, g, compute_loss)

    step.__name__ = "plain_step" if plain else ("perceptual_step" if hand else "perceptual_no_hand_step")
    return step


def _adapter_steps(run, cfg, lora_rank: int) -> list:
    """The branch's and a LoRA's plain and perceptual steps, on the same models (the LoRA added to the UNet after
    the branch was copied from it, and disabled during the branch's steps)."""
    from dataclasses import replace

    from humanfix.train import setup

    lora_run = setup(replace(cfg, adapter="lora", lora_rank=lora_rank), run.components)
    unet = run.components.unet
    steps = []
    for plain in (True, False):
        for name, own, switch in (("branch", run, unet.disable_adapters), ("lora", lora_run, unet.enable_adapters)):
            inner = _with_objective(own, cfg, plain)

            def step(_run, batch, g, compute_loss, inner=inner, own=own, switch=switch):
                switch()
                inner(own, batch, g, compute_loss)

            step.__name__ = f"{name}_{inner.__name__}"
            steps.append(step)
    return steps


def humanfix_step(run, batch, g, compute_loss) -> None:
    """One training update as ``fit`` makes it (gradient accumulation 1)."""
    from humanfix.train import _apply_update

    out = compute_loss(run, batch, g)
    run.accelerator.backward(out.total)
    _apply_update(run, run.params, out.sums())
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def diffusers_step(run, batch, g, _compute_loss) -> None:
    """The step of diffusers' examples/controlnet/train_controlnet.py, line for line, on the same models."""
    import torch.nn.functional as F

    c, acc, weight_dtype = run.components, run.accelerator, run.weight_dtype
    vae, text_encoder, unet, controlnet, noise_scheduler = (
        c.vae,
        c.text_encoder,
        c.unet,
        run.controlnet,
        c.noise_scheduler,
    )
    input_ids = c.tokenizer(
        [caps[0] for caps in batch["captions"]],
        max_length=c.tokenizer.model_max_length,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(acc.device)
    with acc.accumulate(controlnet):
        latents = vae.encode(batch["pixel_values"].to(acc.device, dtype=weight_dtype)).latent_dist.sample()
        latents = latents * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device).long()
        noisy_latents = noise_scheduler.add_noise(latents.float(), noise.float(), timesteps).to(dtype=weight_dtype)
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
        controlnet_image = batch["conditioning"].to(acc.device, dtype=weight_dtype)
        down_block_res_samples, mid_block_res_sample = controlnet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            controlnet_cond=controlnet_image,
            return_dict=False,
        )
        model_pred = unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=[sample.to(dtype=weight_dtype) for sample in down_block_res_samples],
            mid_block_additional_residual=mid_block_res_sample.to(dtype=weight_dtype),
            return_dict=False,
        )[0]
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        acc.backward(loss)
        if acc.sync_gradients:
            acc.clip_grad_norm_(controlnet.parameters(), 1.0)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)


def decode_cost(args: argparse.Namespace) -> dict:
    """The perceptual step's decode alone (SD 1.5 VAE, the scene's box window), forward + backward to the latent:
    diffusers' own ``vae.decode`` against humanfix's ``decode_for_loss``, alternating, best of ``--steps``."""
    from humanfix.losses.decode import decode_for_loss, latent_window

    vae = (sd15_components(torch.float32).vae if args.model == "sd15" else _tiny_vae()).requires_grad_(False)
    persons, faces = scene_boxes(args.resolution, args.persons, args.faces)
    boxes = torch.tensor(persons + faces, dtype=torch.float32)
    side = args.resolution // 8
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    x0, y0, x1, y1 = latent_window(boxes.tolist(), 8, (side, side), args.decode_margin)

    def diffusers_decode(z):
        return vae.decode(z[:, :, y0:y1, x0:x1] / vae.config.scaling_factor).sample

    def humanfix_decode(z):
        return decode_for_loss(vae, z, [boxes], args.decode_region, args.decode_margin, args.decoder_checkpointing)

    times: dict[str, list[float]] = {"diffusers_decode": [], "humanfix_decode": []}
    for _ in range(args.warmup + args.steps):
        for name, fn in (("diffusers_decode", diffusers_decode), ("humanfix_decode", humanfix_decode)):
            z = latents.clone().requires_grad_(True)
            t0 = time.perf_counter()
            fn(z).square().mean().backward()
            times[name].append(time.perf_counter() - t0)
    best = {name: min(values[args.warmup :]) for name, values in times.items()}
    return {**best, "humanfix_vs_diffusers": best["humanfix_decode"] / best["diffusers_decode"], "times": times}


def hand_term_cost(args: argparse.Namespace) -> dict:
    """What the hand term adds to a step, alone: the scene's ``--hands`` hand crops (squared, as the objective
    reads them) cropped from a decoded image that needs a gradient, LPIPS-VGG (SD-free, random VGG: the same
    FLOPs) forward on both crops and backward to the image; beside it the person term on the scene's person box
    at its crop size. Median of ``--steps`` repetitions after ``--warmup``, each term alternating."""
    import statistics

    from humanfix.losses.crops import read_boxes
    from humanfix.losses.objective import HAND_CROP_SIZE, person_crop_size
    from humanfix.losses.perceptual import MaskedLPIPS

    res = args.resolution
    lpips = MaskedLPIPS(pretrained=False)
    person_boxes, _ = scene_boxes(res, args.persons, args.faces)
    hands = scene_hands(res, person_boxes[0], args.hands)
    g = torch.Generator().manual_seed(0)
    real, decoded = (torch.rand(1, 3, res, res, generator=g) * 2 - 1 for _ in range(2))
    mask = torch.zeros(1, 1, res, res)
    for x0, y0, x1, y1 in person_boxes:
        mask[..., y0:y1, x0:x1] = 1
    person_size = person_crop_size(res, res)
    terms = {
        "person_term": (*read_boxes([torch.tensor(person_boxes, dtype=torch.float32)], res, res), person_size),
        "hand_term": (*read_boxes([torch.tensor(hands, dtype=torch.float32)], res, res, square=True), HAND_CROP_SIZE),
    }
    times: dict[str, list[float]] = {name: [] for name in terms}
    for _ in range(args.warmup + args.steps):
        for name, (owners, used, size) in terms.items():
            x = decoded.clone().requires_grad_(True)
            t0 = time.perf_counter()
            lpips.compare(x, real, mask, owners, used, size).sum().backward()
            times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(values[args.warmup :]) for name, values in times.items()}
    return {
        "resolution": res,
        "hands": args.hands,
        "hand_crop_size": HAND_CROP_SIZE,
        "person_crop_size": person_size,
        "person_term_s": median["person_term"],
        "hand_term_s": median["hand_term"],
        "times": times,
    }


def measure_region_error(args: argparse.Namespace) -> dict:
    """Decode random latents fully and through the box window at several margins; error inside the person box."""
    from humanfix.losses.decode import decode_for_loss

    vae = sd15_components(torch.float32).vae if args.model == "sd15" else _tiny_vae()
    vae.requires_grad_(False)
    res = args.resolution
    person_boxes, face_boxes = scene_boxes(res, args.persons, args.faces)
    boxes = torch.tensor(person_boxes + face_boxes, dtype=torch.float32)
    latents = torch.randn(1, 4, res // 8, res // 8, generator=torch.Generator().manual_seed(0))
    inside = torch.zeros(res, res, dtype=torch.bool)
    for x0, y0, x1, y1 in person_boxes:
        inside[y0:y1, x0:x1] = True
    with torch.no_grad():
        full = decode_for_loss(vae, latents, [boxes], "full")[0]
        scale = full[:, inside].abs().mean().item()
        rows = {}
        for margin in args.margins:
            t0 = time.perf_counter()
            part = decode_for_loss(vae, latents, [boxes], "boxes", margin)[0]
            err = (part - full)[:, inside].abs()
            rows[margin] = {
                "max_abs": err.max().item(),
                "mean_abs": err.mean().item(),
                "mean_rel": err.mean().item() / scale,
                "decode_s": time.perf_counter() - t0,
            }
    return {"resolution": res, "mean_abs_full_inside": scale, "margins": rows}


def _tiny_vae():
    from diffusers import AutoencoderKL

    from humanfix.models.tiny import ensure_tiny_model

    return AutoencoderKL.from_pretrained(ensure_tiny_model() / "vae")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--persons", type=int, default=1)
    ap.add_argument("--faces", type=int, default=1)
    ap.add_argument("--hands", type=int, default=0, choices=[0, 1, 2], help="hands in the first person's box")
    ap.add_argument("--lambda-hand", type=float, default=0.1, help="λ3 of the perceptual step, where there are hands")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--model", default="sd15", choices=["sd15", "tiny"])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--timestep-threshold", type=int, default=1000, help="T (1000: every sample gated in)")
    ap.add_argument("--cache-latents", action="store_true", help="draw latents from the cached posterior")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet and the branch")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--channels-last", action="store_true", help="UNet, VAE and branch in channels-last memory")
    ap.add_argument("--gpu-suite", action="store_true", help="batches --suite-batches × plain/T=100/diffusers")
    ap.add_argument("--suite-batches", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--measure-loader", action="store_true", help="the data loader's images/s")
    ap.add_argument("--loader-workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--loader-epochs", type=int, default=4)
    ap.add_argument(
        "--modes",
        default="plain,perceptual,diffusers",
        help="plain, perceptual, diffusers, interleaved (humanfix vs diffusers), ratio (plain vs perceptual), "
        "adapters (branch vs LoRA), hand (perceptual without vs with L_hand)",
    )
    ap.add_argument("--decode-region", default="boxes", choices=["boxes", "full"])
    ap.add_argument("--decode-margin", type=int, default=2)
    ap.add_argument("--decoder-checkpointing", default="none", choices=["none", "top", "all"])
    ap.add_argument("--measure-region-error", action="store_true")
    ap.add_argument("--measure-decode", action="store_true", help="the decode alone: humanfix vs diffusers' decode")
    ap.add_argument("--measure-hand-term", action="store_true", help="L_hand's crops through LPIPS-VGG alone")
    ap.add_argument("--margins", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    ap.add_argument("--adapter", default="controlnet", choices=["controlnet", "lora"], help="lora: compare with a LoRA")
    ap.add_argument("--lora-rank", type=int, default=32)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--train-adapter", default="controlnet", help=argparse.SUPPRESS)  # a worker's adapter
    args = ap.parse_args()
    args.mixed_precision = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[args.dtype]
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.gpu_suite:
        if args.device == "cpu" and args.model == "sd15":
            sys.exit("--gpu-suite is for a GPU: add --device cuda (or --model tiny for a smoke test)")
        args.steps, args.warmup = max(args.steps, 8), max(args.warmup, 2)
        print(json.dumps(gpu_suite(args)))
        return
    if args.measure_loader:
        print(json.dumps(measure_loader(args)))
        return
    if args.measure_region_error:
        print(json.dumps(measure_region_error(args)))
        return
    if args.measure_decode:
        print(json.dumps(decode_cost(args)))
        return
    if args.measure_hand_term:
        print(json.dumps(hand_term_cost(args)))
        return
    if args.mode:  # a worker process
        print(json.dumps(worker(args)))
        return
    results = {}
    modes = args.modes.split(",")
    runs = [(mode, mode, []) for mode in modes]
    if args.adapter == "lora":
        runs += [(f"lora-{m}", m, ["--train-adapter", "lora"]) for m in modes if m in ("plain", "perceptual")]
    for key, mode, extra in runs:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode:
            sys.exit(f"{key} failed:\n{proc.stderr[-3000:]}")
        results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{key:>15}: {results[key]['step_s']:.3f} s/step, peak {results[key]['peak_gb']:.2f} GB", file=sys.stderr)
    summary = {
        "batch_size": args.batch_size,
        "timestep_threshold": args.timestep_threshold,
        "cache_latents": args.cache_latents,
        "compile": args.compile,
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "resolution": args.resolution,
        "persons": args.persons,
        "faces": args.faces,
        "hands": args.hands,
        "lambda_hand": args.lambda_hand,
        "device": args.device,
        "dtype": args.dtype,
        "model": args.model,
        "decode_region": args.decode_region,
        "decode_margin": args.decode_margin,
        "decoder_checkpointing": args.decoder_checkpointing,
    }
    if "plain" in results and "perceptual" in results:
        p, q = results["plain"], results["perceptual"]
        summary.update(
            plain_s=p["step_s"],
            perceptual_s=q["step_s"],
            time_ratio=q["step_s"] / p["step_s"],
            plain_peak_gb=p["peak_gb"],
            perceptual_peak_gb=q["peak_gb"],
            peak_delta_gb=q["peak_gb"] - p["peak_gb"],
        )
    if "ratio" in results:
        r = results["ratio"]
        summary.update(
            ratio_plain_s=r["plain_step"]["step_s"],
            ratio_perceptual_s=r["perceptual_step"]["step_s"],
            time_ratio_interleaved=r["perceptual_step"]["step_s"] / r["plain_step"]["step_s"],
        )
    if "hand" in results:
        r = results["hand"]
        summary.update(
            no_hand_s=r["perceptual_no_hand_step"]["step_s"],
            hand_s=r["perceptual_step"]["step_s"],
            hand_vs_no_hand_interleaved=r["perceptual_step"]["step_s"] / r["perceptual_no_hand_step"]["step_s"],
            hand_vs_no_hand_rounds=[
                a / b for a, b in zip(r["perceptual_step"]["times"], r["perceptual_no_hand_step"]["times"], strict=True)
            ],
        )
    if "interleaved" in results:
        r = results["interleaved"]
        summary.update(
            interleaved_humanfix_s=r["humanfix_step"]["step_s"],
            interleaved_diffusers_s=r["diffusers_step"]["step_s"],
            plain_vs_diffusers_interleaved=r["humanfix_step"]["step_s"] / r["diffusers_step"]["step_s"],
        )
    if "plain" in results and "diffusers" in results:
        summary.update(
            diffusers_s=results["diffusers"]["step_s"],
            plain_vs_diffusers=results["plain"]["step_s"] / results["diffusers"]["step_s"],
        )
    for mode in (m for m in modes if f"lora-{m}" in results):  # the LoRA step against the branch step
        branch, lora = results[mode], results[f"lora-{mode}"]
        summary[f"lora_vs_branch_{mode}"] = lora["step_s"] / branch["step_s"]
        summary[f"lora_peak_delta_gb_{mode}"] = lora["peak_gb"] - branch["peak_gb"]
    if "adapters" in results:
        r = results["adapters"]
        for kind in ("plain", "perceptual"):
            summary[f"lora_vs_branch_{kind}_interleaved"] = (
                r[f"lora_{kind}_step"]["step_s"] / r[f"branch_{kind}_step"]["step_s"]
            )
    for mode in ("plain", "perceptual", "diffusers"):
        if mode in results:
            summary[f"{mode}_img_per_s"] = results[mode]["img_per_s"]
    summary["peak_gb"] = max(r["peak_gb"] for r in results.values())
    summary["runs"] = results  # every mode's raw figures: per-step times and page faults, peak
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
