"""What aspect-ratio buckets cost: a training step on a W×H batch against one on a square batch, SD 1.5 architecture.

The models are SD 1.5's UNet, VAE and CLIP text encoder built from their configs with random weights (nothing is
downloaded, see step_cost.py) plus a ControlNet branch copied from the UNet. One prepared set holds one square
image (``--square``²) and one ``--bucket`` image; the same ``run`` times full training updates (forward, backward,
clipping, optimizer step) on a batch of each, **alternating** in one process so that the machine's load affects
both alike. Each image carries the standard scene of step_cost.py (a 240×384-at-512² person box, a 48² face),
placed in the middle. The step should cost what its pixels cost: the last line printed is JSON with both step
times, their ratio and the ratio of the pixel counts, by the wall clock and by this process's CPU time (the
steadier of the two on a shared, loaded machine).

    python benchmarks/bucket_cost.py                                  # 288×224 vs 256² (576×448 vs 512² halved)
    python benchmarks/bucket_cost.py --bucket 576x448 --square 512    # the real sizes (slow on a CPU)
    python benchmarks/bucket_cost.py --perceptual                     # with λ1 = 0.2, λ2 = 0.5 and T = 1000
    python benchmarks/bucket_cost.py --model tiny --bucket 80x48 --square 64   # a smoke test in seconds
    python benchmarks/bucket_cost.py --model tiny --measure-compile  # torch.compile: per-bucket graphs vs dynamic
    python benchmarks/bucket_cost.py --model tiny --measure-compile --backend eager  # the graph counts alone, fast

``--measure-compile`` (tiny model, inductor on this machine): the time of the first steps and the number of
graphs dynamo compiles when the batches cycle through three sizes (the square, the bucket and its portrait
twin), for torch.compile's default (which
recompiles once, with dynamic shapes, when a second size comes) and for ``dynamic=False`` (one static graph per
bucket).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from step_cost import humanfix_step, peak_gb, sd15_components  # noqa: E402


def write_set(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """A prepared split with one image per (width, height), the scene's person and face box in its middle."""
    import numpy as np
    from PIL import Image

    from humanfix.data.records import Record, write_records

    split = folder / "val"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for cid, (w, h) in enumerate(sizes, 1):
        s = (w * h) ** 0.5 / 512
        pw, ph = round(240 * s), round(384 * s)
        person = [(w - pw) // 2, (h - ph) // 2, (w - pw) // 2 + pw, (h - ph) // 2 + ph]
        f = round(48 * s)
        face = [(w - f) // 2, person[1] + round(8 * s), (w - f) // 2 + f, person[1] + round(8 * s) + f]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(split / f"images/{cid}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[person[1] : person[3], person[0] : person[2]] = 255
        Image.fromarray(mask).save(split / f"masks/{cid}.png")
        records.append(
            Record(file_name=f"images/{cid}.jpg", mask_file_name=f"masks/{cid}.png", text=["a person standing"],
                   person_boxes=[person], face_boxes=[face], face_sources=["keypoints"],
                   keypoints=[[[float(person[0]), float(person[1]), 0.0]] * 17], coverage=float(mask.mean() / 255),
                   coco_id=cid, width=w, height=h)
        )  # fmt: skip
    write_records(split, records)
    return folder


def build(args: argparse.Namespace, tmp: Path, compile_kw: dict | None = None, portrait: bool = False):
    from humanfix.config import build_config
    from humanfix.train import TrainConfig, setup

    lambdas = (0.2, 0.5) if args.perceptual else (0.0, 0.0)
    objective = {"lambda_lpips": lambdas[0], "lambda_face": lambdas[1], "timestep_threshold": 1000,
                 "perceptual_weights": "random"}  # fmt: skip
    sizes = [(args.square, args.square), args.bucket] + ([args.bucket[::-1]] if portrait else [])
    data = write_set(tmp / "data", sizes)
    cfg = build_config(TrainConfig, None, model=args.model, data=data, split="val", output=tmp / "out",
                       batch_size=args.batch_size, gradient_checkpointing=args.model == "sd15",
                       objective=objective)  # fmt: skip
    components = sd15_components(torch.float32) if args.model == "sd15" else None
    run = setup(cfg, components)
    if compile_kw is not None:  # as --compile does, with the given torch.compile options
        if run.controlnet is not None:
            run.components.unet = torch.compile(run.components.unet, **compile_kw)
        run.trainable = torch.compile(run.trainable, **compile_kw)
    return run, cfg


def batches(run, batch_size: int) -> dict[str, dict]:
    from humanfix.data.dataset import collate

    return {f"{w}x{h}": collate([run.dataset[i]] * batch_size) for i, (w, h) in enumerate(run.dataset.sizes)}


def time_alternating(
    run, cfg, named: dict[str, dict], warmup: int, timed: int, clocks=(time.perf_counter,)
) -> list[dict[str, list[float]]]:
    """Per clock (wall, this process's CPU time), per batch name: the ``timed`` steps' seconds."""
    from humanfix.train import compute_loss, step_generator

    times: list[dict[str, list[float]]] = [{name: [] for name in named} for _ in clocks]
    for k in range(warmup + timed):
        for name, batch in named.items():
            t0 = [c() for c in clocks]
            humanfix_step(run, batch, step_generator(cfg, k, k, 0, run.accelerator.device), compute_loss)
            if run.accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            for t, c, start in zip(times, clocks, t0, strict=True):
                t[name].append(c() - start)
    return [{name: values[warmup:] for name, values in t.items()} for t in times]


def step_cost(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run, cfg = build(args, Path(tmp))
        named = batches(run, args.batch_size)
        wall, cpu = time_alternating(run, cfg, named, args.warmup, args.steps, (time.perf_counter, time.process_time))
        square, bucket = list(named)
        pixel_ratio = args.bucket[0] * args.bucket[1] / args.square**2
        out = {"model": args.model, "perceptual": args.perceptual, "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "pixel_ratio": pixel_ratio,
               "peak_gb": peak_gb(run.accelerator.device)}  # fmt: skip
        for clock, times in (("wall", wall), ("cpu", cpu)):  # cpu: this process's CPU seconds (a loaded machine)
            # the median of the per-round ratios: each round's two steps ran under the same load
            ratio = statistics.median(b / s for s, b in zip(times[square], times[bucket], strict=True))
            out[clock] = {"step_s": {n: statistics.median(v) for n, v in times.items()}, "times": times,
                          "time_ratio": ratio, "ratio_of_ratios": ratio / pixel_ratio}  # fmt: skip
    return out


def measure_compile(args: argparse.Namespace) -> dict:
    """First steps' time and graphs compiled, alternating the two sizes, for two torch.compile settings."""
    from torch._dynamo.utils import counters

    results = {}
    backend = {"backend": args.backend}
    for label, kw in (("default (automatic dynamic)", {}), ("dynamic=False (per bucket)", {"dynamic": False})):
        kw = {**kw, **backend}
        torch._dynamo.reset()
        counters.clear()
        with tempfile.TemporaryDirectory() as tmp:
            run, cfg = build(args, Path(tmp), kw, portrait=True)  # three sizes: the square, the bucket, its twin
            named = batches(run, args.batch_size)
            (times,) = time_alternating(run, cfg, named, 0, args.steps)
        results[label] = {
            "first_round_s": {n: round(v[0], 2) for n, v in times.items()},
            "later_rounds_s": {n: round(statistics.median(v[1:]), 3) for n, v in times.items() if len(v) > 1},
            "graphs_compiled": int(counters["stats"]["unique_graphs"]),
            "frames_recompiled": int(sum(counters["recompiles"].values())) if "recompiles" in counters else None,
        }
        print(label, results[label], file=sys.stderr, flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--square", type=int, default=256)
    ap.add_argument("--bucket", type=lambda s: tuple(int(v) for v in s.split("x")), default=(288, 224))
    ap.add_argument("--model", default="sd15", choices=["sd15", "tiny"])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per size")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--perceptual", action="store_true")
    ap.add_argument("--measure-compile", action="store_true")
    ap.add_argument(
        "--backend", default="inductor", help="torch.compile backend for --measure-compile (eager: tracing only)"
    )
    args = ap.parse_args()
    result = measure_compile(args) if args.measure_compile else step_cost(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
