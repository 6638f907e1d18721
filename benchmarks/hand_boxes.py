"""Where the keypoint hand box's factors come from, and how well the box agrees with ground truth.

1. ``--hands-sample DIR`` (COCO-format hands with 21 keypoints, e.g. ../shared/data/hands-sample): per distinct
   hand with a labelled wrist and middle fingertip, the annotated box's centre distance from the wrist and its
   long side, in hand lengths (wrist to middle fingertip); their means, times Drillis & Contini's hand/forearm
   ratio (0.108 H / 0.146 H), are the factors of humanfix.data.hands.
2. ``--wholebody FILE`` (a COCO-WholeBody v1.0 file: body keypoints and hand boxes of the same persons): IoU
   of each keypoint hand box with the WholeBody box of the same hand, for every valid WholeBody hand whose
   elbow and wrist are labelled; also for a few other factor pairs, to show how sensitive the agreement is.

    python benchmarks/hand_boxes.py --hands-sample ../shared/data/hands-sample --wholebody test_coco_wholebody.json

(test_coco_wholebody.json: the COCO-WholeBody fixture of open-mmlab/mmpose, tests/data/coco/, 4 COCO val images.)
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from humanfix.data.faces import iou
from humanfix.data.hands import (
    ARM,
    HAND_LENGTH_PER_FOREARM,
    HAND_OFFSET,
    HAND_SIDE,
    SIDES,
    keypoint_hand_box,
    load_wholebody,
)


def hand_geometry(path: Path) -> list[tuple[float, float]]:
    """(centre from wrist, long side) in hand lengths, per distinct hand with wrist and middle tip labelled."""
    data = json.loads(path.read_text())
    seen, out = set(), []
    for a in data["annotations"]:
        key = tuple(a["keypoints"])
        if key in seen:  # FreiHAND's fixtures repeat each hand on two backgrounds
            continue
        seen.add(key)
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(21, 3)
        wrist, tip = k[0], k[12]
        if wrist[2] <= 0 or tip[2] <= 0:
            continue
        length = np.linalg.norm(tip[:2] - wrist[:2])
        x, y, w, h = a["bbox"]
        centre = np.array([x + w / 2, y + h / 2])
        out.append((float(np.linalg.norm(centre - wrist[:2]) / length), float(max(w, h) / length)))
    return out


def agreement(path: Path, offset: float, side: float) -> list[float]:
    """IoU of the keypoint box with WholeBody's, per valid WholeBody hand whose elbow and wrist are labelled."""
    data = json.loads(path.read_text())
    truth = load_wholebody(path)
    ious = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)[:17]
        for s in SIDES:
            gt = truth.get(a["id"], {}).get(s)
            _, elbow, wrist = ARM[s]
            if gt is None or kps[elbow, 2] <= 0 or kps[wrist, 2] <= 0:
                continue
            box = keypoint_hand_box(kps, s, (x, y, x + w, y + h), offset, side)
            ious.append(iou(box, gt) if box else 0.0)
    return ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hands-sample", type=Path)
    ap.add_argument("--wholebody", type=Path)
    args = ap.parse_args()
    result = {"hand_offset": HAND_OFFSET, "hand_side": HAND_SIDE}
    if args.hands_sample:
        geo = hand_geometry(args.hands_sample / "hand_keypoints.json")
        centre, long_side = (float(np.mean([g[i] for g in geo])) for i in (0, 1))
        for c, s in geo:
            print(f"hand: centre {c:.2f} hand lengths from the wrist, long side {s:.2f} hand lengths")
        ratio = HAND_LENGTH_PER_FOREARM
        print(f"{len(geo)} hands: centre {centre:.2f}, side {long_side:.2f} hand lengths; × {ratio:.3f} (hand/forearm)"
              f" = offset {centre * ratio:.2f}, side {long_side * ratio:.2f} forearm lengths")  # fmt: skip
        result.update(sample_hands=len(geo), centre_per_hand=round(centre, 3), side_per_hand=round(long_side, 3))
    if args.wholebody:
        for offset, side in ((HAND_OFFSET, HAND_SIDE), (0.0, HAND_SIDE), (HAND_OFFSET, 0.6), (HAND_OFFSET, 1.2)):
            ious = agreement(args.wholebody, offset, side)
            tag = " (humanfix)" if (offset, side) == (HAND_OFFSET, HAND_SIDE) else ""
            print(f"offset {offset:.2f}, side {side:.2f}{tag}: IoU with WholeBody over {len(ious)} hands: "
                  f"median {np.median(ious):.2f}, mean {np.mean(ious):.2f}, min {min(ious):.2f}, max {max(ious):.2f}; "
                  f"{', '.join(f'{v:.2f}' for v in ious)}")  # fmt: skip
            if tag:
                result.update(wholebody_hands=len(ious), iou_median=round(float(np.median(ious)), 3),
                              iou_mean=round(float(np.mean(ious)), 3), ious=[round(v, 3) for v in ious])  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
