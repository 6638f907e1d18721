"""How fast ``train --cache-latents`` builds its cache: images/s of ``ensure_latent_cache`` on SD 1.5's VAE.

The VAE is SD 1.5's architecture from its config with random weights (nothing is downloaded); the set is
``--images`` random JPEGs at ``--resolution``² in the prepare-data layout, decoded from disk as training
decodes them. Two ways alternate in one process, each building into a fresh ``HUMANFIX_HOME``, so that the
machine's load affects both alike:

- ``before``: one image per encoder call and no loader workers (what the cache did before: the training
  batch size, 1 in the paper's setting);
- ``after``: the cache's default batch (``BATCH_PIXELS``) with ``--workers`` loader workers.

The last line printed is JSON with each way's img/s per round.

    python benchmarks/latent_cache.py                          # 256², 32 images, 2 rounds, CPU fp32
    python benchmarks/latent_cache.py --device cuda --dtype bfloat16 --images 512 --resolution 512
    python benchmarks/latent_cache.py --tiny --images 8        # a smoke test in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def write_set(split: Path, n: int, resolution: int) -> Path:
    import numpy as np
    from PIL import Image

    from humanfix.data.records import Record, write_records

    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(
            split / f"images/{i}.jpg"
        )
        Image.new("L", (resolution, resolution)).save(split / f"masks/{i}.png")  # the dataset checks every file
        records.append(
            Record(
                file_name=f"images/{i}.jpg",
                mask_file_name=f"masks/{i}.png",
                text=["a person"],
                person_boxes=[],
                face_boxes=[],
                face_sources=[],
                keypoints=[],
                coverage=0.0,
                coco_id=i,
                width=resolution,
                height=resolution,
            )
        )
    write_records(split, records)
    return split


def sd15_vae():
    from step_cost import sd15_vae as vae  # SD 1.5's VAE architecture, random weights (benchmarks/ is on the path)

    torch.manual_seed(0)
    return vae()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--tiny", action="store_true", help="the tiny model's VAE (a smoke test)")
    args = ap.parse_args()

    from diffusers import AutoencoderKL

    from humanfix.data.dataset import PreparedDataset
    from humanfix.data.latents import ensure_latent_cache

    device = torch.device(args.device)
    if args.tiny:
        from humanfix.models.tiny import ensure_tiny_model

        vae = AutoencoderKL.from_pretrained(ensure_tiny_model() / "vae")
    else:
        vae = sd15_vae()
    vae = vae.requires_grad_(False).eval().to(device, getattr(torch, args.dtype))
    tmp = Path(tempfile.mkdtemp(prefix="humanfix-latent-bench-"))
    split = write_set(tmp / "data" / "train", args.images, args.resolution)

    ds = PreparedDataset(split)  # only its image() is used
    sizes = [(r.height, r.width) for r in ds.records]
    ways = {"before": {"batch_size": 1, "workers": 0}, "after": {"workers": args.workers}}
    result: dict[str, list[float]] = {way: [] for way in ways}
    for r in range(args.rounds):
        for way, kw in ways.items():
            os.environ["HUMANFIX_HOME"] = str(tmp / f"home-{way}-{r}")
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            ensure_latent_cache(split, ds.image, sizes, vae, device, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            result[way].append(round(args.images / (time.perf_counter() - start), 3))
            print(f"round {r} {way}: {result[way][-1]} img/s", file=sys.stderr)
    print(json.dumps({**vars(args), "torch": torch.__version__, "img_per_s": result}))


if __name__ == "__main__":
    main()
