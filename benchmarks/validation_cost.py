"""What the validation loss costs against an epoch of training, on the SD 1.5 architecture (random weights).

The models are those of ``step_cost.py`` (SD 1.5's UNet, VAE and CLIP text encoder from their configs, a ControlNet
branch copied from the UNet; only the branch trains), on its standard scene (one person box with one face) at
``--resolution``. One process alternates, ``--warmup`` + ``--rounds`` times:

- a training update with λ1 = λ2 = 0 (a sample with t ≥ T: no decode);
- a training update with λ1 = 0.2, λ2 = 0.5 and every sample gated in (a sample with t < T: the decode);
- the validation of one image at the default grid (``humanfix.validation_loss``: LOW_TIMESTEPS below T = 100,
  HIGH_TIMESTEPS above), its latent already cached (every validation after the first);
- the same at each ``--grids`` alternative (LOW,HIGH).

At the paper's T = 100 a tenth of the training samples is gated in, so an image of an epoch costs
0.9 × plain + 0.1 × gated; the validation costs ``--val-images`` × its per-image time against ``--train-images`` ×
that. The VAE encode of each validation image, paid once per run, is timed apart. The last line is JSON.

    flock /tmp/humanfix-bench.lock .venv/bin/python benchmarks/validation_cost.py --resolution 256
    .venv/bin/python benchmarks/validation_cost.py --model tiny --resolution 64     # a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _step_cost():
    spec = importlib.util.spec_from_file_location("step_cost", HERE / "step_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--model", default="sd15", choices=["sd15", "tiny"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--grids", default="5,5", help="other LOW,HIGH grids to time (';'-separated; '' none)")
    ap.add_argument("--train-images", type=int, default=37_470)
    ap.add_argument("--val-images", type=int, default=1_565)
    args = ap.parse_args()

    from humanfix.config import build_config
    from humanfix.losses.objective import MaskAwareObjective
    from humanfix.train import TrainConfig, compute_loss, setup, step_generator
    from humanfix.validation_loss import HIGH_TIMESTEPS, LOW_TIMESTEPS, ValidationLoss, timestep_grid

    sc = _step_cost()
    tmp = Path(tempfile.mkdtemp())
    data = sc.write_scene(tmp / "data", args.resolution, 1, 1)
    (tmp / "out").mkdir()
    objective = {"lambda_lpips": 0.2, "lambda_face": 0.5, "timestep_threshold": 100, "perceptual_weights": "random"}
    cfg = build_config(
        TrainConfig, None, model=args.model, data=data, split="val", validation_split="val", output=tmp / "out",
        gradient_checkpointing=True, objective=objective,
    )  # fmt: skip
    run = setup(cfg, sc.sd15_components(torch.float32) if args.model == "sd15" else None)
    sched = run.components.noise_scheduler
    paper = run.objective

    def objective_with(**kw):
        return MaskAwareObjective(replace(cfg.objective, **kw), sched.alphas_cumprod, sched.config.prediction_type)

    plain, gated = objective_with(lambda_lpips=0.0, lambda_face=0.0), objective_with(timestep_threshold=1000)
    batch = sc.scene_batch(run, 1)
    validation = ValidationLoss(run, 0)
    t0 = time.perf_counter()
    with torch.no_grad():
        validation._latent(0, run.dataset[0])
    encode_s = time.perf_counter() - t0
    grids = {"default": validation.grid}
    for spec in filter(None, args.grids.split(";")):
        low, high = (int(x) for x in spec.split(","))
        grids[f"{low},{high}"] = timestep_grid(100, sched.config.num_train_timesteps, low, high)

    def train_step(objective, k):
        run.objective = objective
        sc.humanfix_step(run, batch, step_generator(cfg, k, k, 0, run.accelerator.device), compute_loss)

    def validate(grid):
        run.objective, validation.grid = paper, grid
        run.trainable.eval()
        with torch.no_grad():
            validation._measure(run)
        run.trainable.train()

    jobs = {"plain": lambda k: train_step(plain, k), "gated": lambda k: train_step(gated, k)}
    for name, grid in grids.items():
        jobs[f"val_{name}"] = lambda k, grid=grid: validate(grid)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for k in range(args.warmup + args.rounds):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job(k)
            times[name].append(time.perf_counter() - t0)
            print(f"round {k} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    mean = {name: sum(v[args.warmup :]) / args.rounds for name, v in times.items()}
    train_image_s = 0.9 * mean["plain"] + 0.1 * mean["gated"]
    epoch_s = args.train_images * train_image_s
    result = {
        "resolution": args.resolution, "model": args.model, "rounds": args.rounds, "torch": torch.__version__,
        "plain_step_s": mean["plain"], "gated_step_s": mean["gated"], "train_image_s": train_image_s,
        "encode_s": encode_s, "epoch_h": epoch_s / 3600, "default_grid": [LOW_TIMESTEPS, HIGH_TIMESTEPS],
    }  # fmt: skip
    for name, grid in grids.items():
        per_image = mean[f"val_{name}"]
        result[f"val_{name}"] = {
            "grid": [list(grid.low), list(grid.high)],
            "image_s": per_image,
            "vs_train_image": per_image / train_image_s,
            "vs_epoch": args.val_images * per_image / epoch_s,
            "first_vs_epoch": args.val_images * (per_image + encode_s) / epoch_s,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
