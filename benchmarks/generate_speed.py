"""Per-image time of ``humanfix generate`` against a plain diffusers pipeline call, same settings.

Both sides draw the same prompt with the same model, sampler, steps, size, guidance, dtype, device and
batch size, one ``torch.Generator`` per image. diffusers: ``StableDiffusionPipeline`` (or
``StableDiffusionControlNetPipeline`` with ``--controlnet``) loaded with ``from_pretrained``, timed around
``pipe(...)`` only. humanfix: ``generate()``'s own per-call timings, which also include writing each PNG
with its metadata. Model loading is timed on neither side; each side's first call is a warm-up and is
dropped. Calls alternate between the two sides (diffusers call, humanfix ``generate()`` of one batch,
...), so a busy machine slows both alike; it prints medians and minimums (the minimum is the steadier figure
on a shared machine).

    python benchmarks/generate_speed.py                       # tiny model, CPU or GPU
    python benchmarks/generate_speed.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --steps 50
    python benchmarks/generate_speed.py --controlnet from-unet   # ControlNet path, a branch copied from the UNet

Prints ``ratio (humanfix / diffusers per image): X.XX``; below 1 means humanfix is faster.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def diffusers_pipeline(args, location: str, branch: str | None):
    """The plain diffusers pipeline and a ``call(seed) -> seconds per image`` that times one call."""
    import diffusers
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    from humanfix.generation.pipelines import SCHEDULERS, blank_condition, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    kw = dict(safety_checker=None, requires_safety_checker=False, dtype=dtype)
    if branch is None:
        pipe = StableDiffusionPipeline.from_pretrained(location, **kw)
    else:
        cn = ControlNetModel.from_pretrained(branch, dtype=dtype)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(location, controlnet=cn, **kw)
    cls = getattr(diffusers, SCHEDULERS[args.scheduler])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    b = args.batch_size
    kw = dict(prompt=[args.prompt] * b, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
              height=args.height, width=args.width)  # fmt: skip
    if branch is not None:
        kw["image"] = [blank_condition(args.height, args.width)] * b

    def call(seed: int) -> float:
        gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(b)]
        sync(device)
        t0 = time.perf_counter()
        pipe(**kw, generator=gens)
        sync(device)
        return (time.perf_counter() - t0) / b

    return call


def humanfix_call(args, branch: str | None, seed: int, out: Path) -> float:
    """One ``generate()`` run of one batch; its own timing of that call (drawing + writing the PNGs)."""
    from humanfix.generate import GenerateConfig, generate

    cfg = GenerateConfig(prompts=(args.prompt,), model=args.model, controlnet=Path(branch) if branch else None,
                         num_images=args.batch_size, batch_size=args.batch_size, seed=seed, steps=args.steps,
                         guidance_scale=args.guidance_scale, scheduler=args.scheduler, height=args.height,
                         width=args.width, dtype=args.dtype, device=args.device, output=out)  # fmt: skip
    ((n, seconds),) = generate(cfg).batches
    return seconds / n


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def from_unet_branch(location: str, folder: Path) -> str:
    """A branch copied from the model's UNet (``ControlNetModel.from_unet``), to time the ControlNet path."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from humanfix.models.pipeline import write_branch_meta

    unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet")
    ControlNetModel.from_unet(unet).save_pretrained(folder)
    write_branch_meta(folder, conditioning="none", base_model=location)
    return str(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny (default), a diffusers folder or a hub id in the cache")
    p.add_argument("--controlnet", default=None, help="branch folder, or 'from-unet'; omitted: plain SD")
    p.add_argument("--prompt", default="a skier in a red jacket on a snowy slope")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--pairs", type=int, default=8, help="timed calls per side, alternating (after one warm-up each)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import torch

    from humanfix.generate import quiet_loading
    from humanfix.models.pipeline import resolve_model

    quiet_loading()
    location, _ = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="humanfix-bench-") as tmp:
        branch = args.controlnet
        if branch == "from-unet":
            branch = from_unet_branch(location, Path(tmp) / "branch")
        theirs_call = diffusers_pipeline(args, location, branch)
        ours, theirs = [], []
        for i in range(args.pairs + 1):  # pair 0 warms both sides up and is dropped
            b = theirs_call(seed=1000 + i * args.batch_size)
            h = humanfix_call(args, branch, 1000 + i * args.batch_size, Path(tmp) / f"out{i}")
            if i:
                theirs.append(b)
                ours.append(h)
    d, h = statistics.median(theirs), statistics.median(ours)
    dmin, hmin = min(theirs), min(ours)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(f"model={args.model} controlnet={args.controlnet} device={device} dtype={args.dtype} "
          f"{args.height}x{args.width} steps={args.steps} scheduler={args.scheduler} batch={args.batch_size} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")  # fmt: skip
    print(f"diffusers per image: median {d:.4f} s, min {dmin:.4f} s ({len(theirs)} calls)")
    print(f"humanfix  per image: median {h:.4f} s, min {hmin:.4f} s ({len(ours)} calls)")
    print(f"ratio of minimums (humanfix / diffusers per image): {hmin / dmin:.3f}")
    print(f"ratio (humanfix / diffusers per image, medians): {h / d:.3f}")


if __name__ == "__main__":
    main()
