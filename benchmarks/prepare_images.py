"""prepare-data's per-image cost: read, resize + crop, mask, faces, write, on the OCHuman sample.

Times ``process_image`` (one image's whole work, as a worker process does it, 1 torch thread) on the 3
photos of ../shared/data/ochuman-sample (~900 px, larger than COCO's 640×480), with MTCNN and with
``--face-detector none``. Prints the mean and the best seconds per image over a few rounds.

    .venv/bin/python benchmarks/prepare_images.py [--sample DIR] [--rounds 3] [--resolution 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--sample", type=Path, default=here.parent / "shared" / "data" / "ochuman-sample")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=512)
    args = ap.parse_args()

    import torch

    from humanfix.data import coco
    from humanfix.data.faces import detector
    from humanfix.data.prepare import Job, WorkerSettings, process_image

    torch.set_num_threads(1)
    data = coco.load_json(args.sample / "person_keypoints.json", "person keypoints annotation file")
    jobs = [
        Job(c.image, c.persons, c.segmentations, ["a caption"])
        for c in coco.select(data, coco.Filters(0.0, 0.01, 5, True)).candidates
    ]
    detector()  # built once per worker process; not part of the per-image cost
    for face_detector in ("mtcnn", "none"):
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds + 1):  # round 0 warms up
                s = WorkerSettings(args.sample, Path(tmp) / str(r), args.resolution, 32, True, face_detector)
                for job in jobs:
                    t = time.perf_counter()
                    process_image(job, s)
                    if r:
                        times.append(time.perf_counter() - t)
        print(f"--face-detector {face_detector:5s}: {sum(times) / len(times):.3f} s/image mean, "
              f"{min(times):.3f} best ({len(times)} runs, 1 thread)")  # fmt: skip


if __name__ == "__main__":
    main()
