"""prepare-data's annotation filter against pycocotools' own ``COCO(file)`` load, at COCO train2017 size.

Writes a synthetic person_keypoints file with COCO train2017's counts (64,115 images, 262,465 person
annotations, polygon segmentations, 17 keypoints, ~1% crowd RLEs) to a temporary folder (deleted at
the end, never committed), then times:

  coco     pycocotools.coco.COCO(file)                    (json load + index)
  filter   humanfix: load_json(file) + select(filters)    (json load + every filter, exact RLE coverage)

for the default filters and for --min-coverage 0 (every image that passes the cheap tests gets its RLE
union computed: the worst case). Prints seconds and the ratio filter / coco (goal: at most 2).

    .venv/bin/python benchmarks/prepare_filter.py [--images 64115] [--annotations 262465] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def synth(n_images: int, n_anns: int, seed: int = 0) -> dict:
    """A COCO person_keypoints dict with realistic shapes: sizes, polygons, keypoints, some crowds."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        w, h = (640, 480) if rng.random() < 0.7 else (480, 640)
        images.append({"license": 1, "file_name": f"{i + 1:012d}.jpg", "coco_url": "", "height": h, "width": w,
                       "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i + 1})  # fmt: skip
    # Every image has at least one person; the rest are spread with a long tail, as in COCO.
    extra = rng.zipf(1.6, size=n_images) - 1
    counts = 1 + np.minimum(extra, 60)
    counts = np.maximum(1, np.round(counts * (n_anns / counts.sum()))).astype(int)
    diff = n_anns - counts.sum()
    idx = rng.choice(n_images, size=abs(diff), replace=True)
    np.add.at(counts, idx, 1 if diff > 0 else -1)
    counts = np.maximum(counts, 1)
    anns, aid = [], 1
    for im, c in zip(images, counts, strict=True):
        w, h = im["width"], im["height"]
        crowd_at = int(rng.integers(c)) if rng.random() < 0.01 else -1
        for k in range(int(c)):
            if k == crowd_at:
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                m = np.zeros((h, w), np.uint8)
                m[y0 : y0 + h // 3, x0 : x0 + w // 3] = 1
                flat = m.flatten(order="F")
                change = np.flatnonzero(np.diff(flat)) + 1
                runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
                if flat[0]:
                    runs = [0, *runs]
                anns.append({"segmentation": {"counts": runs, "size": [h, w]}, "num_keypoints": 0,
                             "area": float(m.sum()), "iscrowd": 1, "keypoints": [0] * 51, "image_id": im["id"],
                             "bbox": [x0, y0, w // 3, h // 3], "category_id": 1, "id": 900000000 + aid})  # fmt: skip
                aid += 1
                continue
            frac = math.exp(rng.uniform(math.log(0.0004), math.log(0.5)))  # person area / image area
            ph = min(h - 2, math.sqrt(frac * w * h * 2.5))
            pw = min(w - 2, frac * w * h / ph * 1.3)
            cx, cy = rng.uniform(pw / 2, w - pw / 2), rng.uniform(ph / 2, h - ph / 2)
            n = int(rng.integers(16, 48))
            t = np.sort(rng.uniform(0, 2 * math.pi, n))
            r = rng.uniform(0.75, 1.0, n)
            xs = np.clip(cx + pw / 2 * r * np.cos(t), 0, w - 1)
            ys = np.clip(cy + ph / 2 * r * np.sin(t), 0, h - 1)
            poly = np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()
            area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
            x0, y0 = float(xs.min()), float(ys.min())
            nk = int(rng.integers(0, 18)) if frac > 0.005 else 0
            kps = []
            for j in range(17):
                kps += [round(float(rng.uniform(x0, xs.max())), 1), round(float(rng.uniform(y0, ys.max())), 1), 2] \
                    if j < nk else [0, 0, 0]  # fmt: skip
            anns.append({"segmentation": [poly], "num_keypoints": nk, "area": round(area, 2), "iscrowd": 0,
                         "keypoints": kps, "image_id": im["id"],
                         "bbox": [round(x0, 2), round(y0, 2), round(float(xs.max()) - x0, 2),
                                  round(float(ys.max()) - y0, 2)],
                         "category_id": 1, "id": aid})  # fmt: skip
            aid += 1
    anns = anns[:n_anns]
    cats = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": [], "skeleton": []}]
    return {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}


def timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    del result
    gc.collect()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64115)
    ap.add_argument("--annotations", type=int, default=262465)
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings for each")
    args = ap.parse_args()

    from pycocotools.coco import COCO

    from humanfix.data import coco
    from humanfix.data.prepare import PrepareConfig

    with tempfile.TemporaryDirectory(prefix="humanfix-bench-") as tmp:
        path = Path(tmp) / "person_keypoints_synthetic.json"
        t = time.perf_counter()
        data = synth(args.images, args.annotations)
        with path.open("w") as f:
            json.dump(data, f)
        n_img, n_ann = len(data["images"]), len(data["annotations"])
        del data
        print(f"synthetic file: {n_img} images, {n_ann} annotations, {path.stat().st_size / 1e6:.0f} MB "
              f"(written in {time.perf_counter() - t:.0f} s)")  # fmt: skip

        def load_coco():
            with contextlib.redirect_stdout(io.StringIO()):
                return COCO(str(path))

        d = PrepareConfig()
        settings = {
            f"--min-coverage {d.min_coverage} (default)": d.min_coverage,
            "--min-coverage 0 (no RLE needed)": 0.0,
            "--min-coverage 0.001 (RLE for ~all)": 0.001,
        }
        kept = {}

        def run_filter(filters):
            def go():
                sel = coco.select(coco.load_json(path, "annotations"), filters)
                kept[filters] = (len(sel.candidates), dict(sel.dropped))
                return sel

            return go

        # Interleaved, best of N for each: a busy machine slows both sides alike.
        filters = {label: coco.Filters(cov, d.min_person_area, d.max_persons, d.skip_crowd)
                   for label, cov in settings.items()}  # fmt: skip
        times: dict[str, list[float]] = {"coco": [], **{label: [] for label in settings}}
        for _ in range(args.repeats):
            times["coco"].append(timed(load_coco))
            for label, f in filters.items():
                times[label].append(timed(run_filter(f)))
        t_coco = min(times["coco"])
        print(f"pycocotools COCO(file):                      {t_coco:6.2f} s")
        for label, f in filters.items():
            t_f = min(times[label])
            print(f"filter {label:37s} {t_f:6.2f} s  ratio {t_f / t_coco:.2f}  kept {kept[f][0]}  "
                  f"dropped {kept[f][1]}")  # fmt: skip


if __name__ == "__main__":
    main()
