"""Validate ``hand_plausibility``: real hands pass, corrupted copies fail; and the speed of ``evaluate --hands``.

    .venv/bin/python benchmarks/hand_plausibility.py [--images ../shared/data/hands-sample]

Real hands: MediaPipe Hands (the wheel's models) on every photo of ``--images``; their world landmarks must
be plausible (goal >= 0.95). Corrupted copies of each plausible hand, one finger at a time (index, middle,
ring, pinky), must be caught (score < 0.5; goal >= 0.9 each): the finger bent 90 degrees sideways at the PIP,
bent 90 degrees backwards at the PIP, the index and ring chains swapped, 21 random points in the hand's 3D
box. A middle phalanx x1.8 and x2.5 is reported only (MediaPipe's own phalanx ratios spread 0.46-2.73), on
the detected hands and on clean constructed 3D hands (flat, half-closed, fist; right and left). Speed: the
detector + score on the CPU, images per second over the folder (3 passes, the median).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "evaluate"))

from test_hands import bent_backwards, bent_sideways, constructed_hand, swapped  # noqa: E402

from humanfix.evaluate import hands as H  # noqa: E402


def stretched(h: np.ndarray, finger: str, factor: float) -> np.ndarray:
    """The finger's middle phalanx ``factor`` times as long (the distal phalanx moves with it)."""
    _, pip, dip, tip = H.FINGERS[finger]
    q = h.copy()
    q[[dip, tip]] += (factor - 1) * (h[dip] - h[pip])
    return q


def scattered(h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = h.min(0), h.max(0)
    return lo + (hi - lo) * rng.random((21, 3))


def caught(hands: list[np.ndarray]) -> float:
    s = H.hand_plausibility(np.stack(hands))
    s = s[~np.isnan(s)]
    return float(np.mean(s < H.PLAUSIBLE)) if len(s) else float("nan")


def corruptions(hands: list[np.ndarray], seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    fingers = list(H.FINGERS)
    out = {
        "PIP bent 90 deg sideways": caught([bent_sideways(h, f) for h in hands for f in fingers]),
        "PIP bent 90 deg backwards": caught([bent_backwards(h, f) for h in hands for f in fingers]),
        "index and ring chains swapped": caught([swapped(h) for h in hands]),
        "21 random points in the hand's box": caught([scattered(h, rng) for h in hands for _ in range(20)]),
    }
    for factor in (1.8, 2.5):
        out[f"middle phalanx x{factor} (reported)"] = caught([stretched(h, f, factor) for h in hands for f in fingers])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "hands-sample")
    ap.add_argument("--threshold", type=float, default=0.5, help="MediaPipe's min_detection_confidence")
    a = ap.parse_args()
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    detector = H.load_detector(a.threshold)

    times, found = [], []
    for _ in range(3):
        t = time.perf_counter()
        found = H.detect_hands(files, detector)
        H.summarize(found, resamples=1000)
        times.append(time.perf_counter() - t)
    world = [h["world"] for im in found for h in im.hands]
    scores = H.hand_plausibility(np.stack(world))
    real = [w for w, s in zip(world, scores, strict=True) if s >= H.PLAUSIBLE]
    print(f"detector: {detector.describe()['detector']}, min_detection_confidence {a.threshold}")
    confs = ", ".join(f"{h['score']:.2f}" for im in found for h in im.hands)
    print(f"images: {len(files)} in {a.images}; with a hand: {sum(bool(im.hands) for im in found)}; "
          f"hands: {len(world)}, scores {confs}")  # fmt: skip
    print(f"real hands plausible: {len(real)}/{len(world)} = {len(real) / len(world):.3f} (goal >= 0.95)")
    failed = [f for w in world for f in H.judge(w)[0].failed]
    if failed:
        print(f"  failed checks on real hands: {sorted(set(failed))}")
    worst = sorted(((r, n) for w in world for n, r in H.judge(w)[0].ratios.items()), reverse=True)[:5]
    print("  the five tightest checks on real hands (ratio, 1 = the limit): "
          + ", ".join(f"{n} {r:.2f}" for r, n in worst))  # fmt: skip
    print(
        f"speed (detector + score, CPU): {len(files) / float(np.median(times)):.1f} images/s "
        f"(median of 3 passes over {len(files)} images; {[round(t, 2) for t in times]} s)"
    )

    print("\ncorrupted copies of the plausible detected hands (each finger in turn), caught (goal >= 0.9):")
    for name, rate in corruptions(real).items():
        print(f"  {name:40s} {rate:.3f}")
    clean = [constructed_hand(*angles, left=left) for angles in ((0, 0, 0), (40, 50, 20), (80, 100, 60))
             for left in (False, True)]  # fmt: skip
    print(
        f"\nclean constructed 3D hands ({len(clean)}: flat, half-closed, fist; right and left), "
        f"plausible {float(np.mean(H.hand_plausibility(np.stack(clean)) >= H.PLAUSIBLE)):.2f}; caught:"
    )
    for name, rate in corruptions(clean).items():
        print(f"  {name:40s} {rate:.3f}")


if __name__ == "__main__":
    main()
