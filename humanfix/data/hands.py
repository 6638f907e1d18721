"""Hand boxes: up to two per person (the person's own left and right), from COCO-WholeBody or from keypoints.

Boxes here are ``[x0, y0, x1, y1]`` floats in the ORIGINAL image's pixels; prepare-data maps them to
output pixels with the same transform as the image (and every other box).

Keypoint rule (:func:`keypoint_hand_box`). Where a person's elbow and wrist (COCO keypoints 7/9 left,
8/10 right) are both labelled (``v > 0``), the hand is a square beyond the wrist along the forearm:

    centre = wrist + HAND_OFFSET × (wrist − elbow)
    side   = HAND_SIDE × max(|wrist − elbow|, FOREARM_PER_UPPER_ARM × |elbow − shoulder|)

The upper arm enters only as a floor on the scale (when the shoulder is labelled): a forearm pointing
at the camera is foreshortened in the image, the hand much less so, and foreshortening only ever
shortens a distance (the same guard as the face rule's "largest estimate"). The box is then clipped
to the person's box.

Where the factors come from (docs/data.md has the figures and the command that measures them):

- the hand's own geometry, measured on the 4 distinct hands of ../shared/data/hands-sample that have a
  labelled wrist and middle fingertip (FreiHAND and OneHand10K, 21 keypoints each): the annotated hand
  box's centre lies 0.46 hand lengths from the wrist, and its long side is 1.19 hand lengths (hand
  length: wrist to the middle fingertip);
- the hand against the forearm, from anthropometry (Drillis & Contini 1966, as tabulated in Winter,
  *Biomechanics and Motor Control of Human Movement*, 4th ed., fig. 4.1): hand length 0.108 H,
  forearm (elbow to wrist) 0.146 H and upper arm (shoulder to elbow) 0.186 H, H the stature; so
  hand = 0.740 forearm and forearm = 0.785 upper arm.

Hence HAND_OFFSET = 0.46 × 0.740 = 0.34 and HAND_SIDE = 1.19 × 0.740 = 0.88.

WholeBody (:func:`wholebody_hands`): COCO-WholeBody v1.0 gives each person annotation ``lefthand_box``
and ``righthand_box`` (``[x, y, w, h]``) with ``lefthand_valid``/``righthand_valid``; matched to COCO's
person annotations by ``id``. A valid WholeBody box is used as given, in preference to the keypoint box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from humanfix.errors import UserError

Box = tuple[float, float, float, float]

SIDES = ("left", "right")  # the person's own side, as COCO's keypoint names
HAND_SOURCES = ("keypoints", "wholebody")
# COCO keypoint indices (shoulder, elbow, wrist) per side.
ARM = {"left": (5, 7, 9), "right": (6, 8, 10)}

HAND_LENGTH_PER_FOREARM = 0.108 / 0.146  # Drillis & Contini: hand 0.108 H, forearm 0.146 H
FOREARM_PER_UPPER_ARM = 0.146 / 0.186  # forearm 0.146 H, upper arm 0.186 H
BOX_CENTRE_PER_HAND_LENGTH = 0.46  # hands-sample: hand box centre from the wrist, in hand lengths
BOX_SIDE_PER_HAND_LENGTH = 1.19  # hands-sample: the hand box's long side, in hand lengths
HAND_OFFSET = round(BOX_CENTRE_PER_HAND_LENGTH * HAND_LENGTH_PER_FOREARM, 2)  # 0.34 forearm beyond the wrist
HAND_SIDE = round(BOX_SIDE_PER_HAND_LENGTH * HAND_LENGTH_PER_FOREARM, 2)  # 0.88 forearm


@dataclass(frozen=True)
class Hand:
    """One hand: the index of its person, its side, its box (original pixels) and where it came from."""

    person: int
    side: str  # "left" | "right"
    box: Box
    source: str  # "keypoints" | "wholebody"


def keypoint_hand_box(
    keypoints: Any, side: str, person_box: Box, offset: float = HAND_OFFSET, scale: float = HAND_SIDE
) -> Box | None:
    """The ``side`` hand box of one person from its 17×3 COCO keypoints (``[x, y, v]``), or ``None``.

    See the module docstring for the rule. ``person_box`` is ``[x0, y0, x1, y1]``.
    """
    k = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    shoulder, elbow, wrist = (k[i] for i in ARM[side])
    if elbow[2] <= 0 or wrist[2] <= 0:
        return None
    forearm = wrist[:2] - elbow[:2]
    length = float(np.linalg.norm(forearm))
    if shoulder[2] > 0:
        length = max(length, FOREARM_PER_UPPER_ARM * float(np.linalg.norm(elbow[:2] - shoulder[:2])))
    half = scale * length / 2
    if half <= 0:
        return None
    cx, cy = wrist[:2] + offset * forearm
    box = (
        max(cx - half, person_box[0]),
        max(cy - half, person_box[1]),
        min(cx + half, person_box[2]),
        min(cy + half, person_box[3]),
    )
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return box


def load_wholebody(path: str | Path) -> dict[int, dict[str, Box]]:
    """COCO-WholeBody's valid hand boxes by person annotation id: ``{id: {"left": box, "right": box}}``.

    Boxes are returned as ``[x0, y0, x1, y1]``. A missing or malformed file is a :class:`UserError`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--wholebody file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--wholebody {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise UserError(f"--wholebody {path} is not a COCO-WholeBody file (no 'annotations' list)")
    out: dict[int, dict[str, Box]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "id" not in a:
            continue
        hands = {}
        for side in SIDES:
            box = a.get(f"{side}hand_box")
            if a.get(f"{side}hand_valid") and isinstance(box, list) and len(box) == 4:
                x, y, w, h = (float(v) for v in box)
                if w > 0 and h > 0:
                    hands[side] = (x, y, x + w, y + h)
        if hands:
            out[int(a["id"])] = hands
    return out


def find_hands(persons: list[tuple[Any, Box, dict[str, Box] | None]]) -> list[Hand]:
    """Up to two hands per person, by person then left before right.

    ``persons[i]`` is (17×3 keypoints, person box ``[x0, y0, x1, y1]``, the person's WholeBody hands or
    ``None``). A valid WholeBody box wins; otherwise the keypoint box, when there is one.
    """
    hands = []
    for p, (keypoints, person_box, wholebody) in enumerate(persons):
        for side in SIDES:
            if wholebody and side in wholebody:
                hands.append(Hand(p, side, wholebody[side], "wholebody"))
                continue
            box = keypoint_hand_box(keypoints, side, person_box)
            if box is not None:
                hands.append(Hand(p, side, box, "keypoints"))
    return hands
