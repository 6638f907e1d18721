"""How much of the people each output geometry keeps: ``--crop center``, ``--crop people`` and ``--buckets``.

Runs prepare-data three times on the same COCO-format split (into a temporary folder) and prints, per variant,
what its ``summary.json`` counts: the fraction of the counted persons' labelled keypoints, and of their face
boxes (at least half inside), that land inside the output image, over the images kept and those dropped as
``no_person_in_crop``; the images kept; the images per bucket. The last line printed is JSON.

    python benchmarks/crop_kept.py --keypoints ../shared/data/ochuman-sample/person_keypoints.json \\
        --captions ../shared/data/ochuman-sample/captions.json --images ../shared/data/ochuman-sample
    python -m humanfix.data.sample /tmp/demo-coco && python benchmarks/crop_kept.py --coco-root /tmp/demo-coco
    python benchmarks/crop_kept.py --coco-root /data/coco --split val --resolution 512 --face-detector mtcnn
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

VARIANTS = {"center": {"crop": "center"}, "people": {"crop": "people"}, "buckets": {"crop": "people", "buckets": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco-root", type=Path)
    ap.add_argument("--keypoints", type=Path)
    ap.add_argument("--captions", type=Path)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--split", default="val")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--min-coverage", type=float, default=0.0, help="0: every image with a counted person")
    ap.add_argument("--face-detector", default="mtcnn", choices=["mtcnn", "none"])
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    from humanfix.data.prepare import PrepareConfig, prepare

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in VARIANTS.items():
            cfg = PrepareConfig(
                coco_root=args.coco_root, keypoints=args.keypoints, captions=args.captions, images=args.images,
                split=args.split, out=Path(tmp) / name, resolution=args.resolution, min_coverage=args.min_coverage,
                face_detector=args.face_detector, workers=args.workers, default_caption="a person", **extra,
            )  # fmt: skip
            split = prepare(cfg)["splits"][args.split]
            results[name] = {"kept_images": split["kept"], **split["kept_in_output"], "buckets": split["buckets"]}
    print(f"{'':8} {'keypoints kept':>22} {'faces kept':>16} {'images':>7}  buckets")
    for name, r in results.items():
        kp, faces = r["keypoints"], r["faces"]
        print(f"{name:8} {kp['fraction']:>8.1%} ({kp['kept']:>4}/{kp['of']:<4}) {faces['fraction'] or 0:>7.1%} "
              f"({faces['kept']}/{faces['of']}) {r['kept_images']:>6}  "
              + ", ".join(f"{b}: {n}" for b, n in r["buckets"].items()))  # fmt: skip
    print(json.dumps({"resolution": args.resolution, "face_detector": args.face_detector, **results}))


if __name__ == "__main__":
    main()
