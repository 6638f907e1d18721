"""Face boxes: one per person at most, from keypoints, from MTCNN, or both, merged.

Boxes here are ``[x0, y0, x1, y1]`` floats in the ORIGINAL image's pixels; prepare-data maps them to
output pixels with the same transform as the image.

Keypoint rule (:func:`keypoint_face_box`). The face keypoints are COCO's nose, eyes and ears (indices
0-4); a point counts when labelled (``v > 0``). At least two are needed, since one point gives no
scale, and one of them must be the nose or an eye: ears alone are a head seen from behind, and an
identity loss on the back of a head teaches nothing. The box is a square centred on the mean of the
labelled nose and eyes, with side the largest of these estimates of the face size, each present only
when both its points are labelled:

    2.5 × eye-to-eye distance      (frontal faces)
    1.9 × eye-to-ear distance      (same side; profile faces, where the eyes nearly overlap)
    1.1 × ear-to-ear distance
    3.5 × nose-to-eye distance     (the farther labelled eye)

Taking the largest guards against foreshortening, which only ever shortens a distance. The
factors were set so the boxes match MTCNN's on the OCHuman sample (IoU ≥ 0.5 there, see
tests/data/test_faces.py). The box is then clipped to the person's box.

Detector (:func:`detect_faces`): facenet-pytorch's MTCNN, whose weights ship inside the package, on
CPU; detections below probability 0.9 are ignored.

Merge (:func:`merge_faces`): a detection whose IoU with a person's keypoint box is at least 0.3 is
that person's face, tagged ``both`` and boxed by the detector (it sees the actual face). A person
with a keypoint box and no such detection keeps it, tagged ``keypoints``. A detection left over goes
to a person without a face whose box holds at least 60% of it (the smallest such person box, which
is the nearest person in a crowd of boxes), tagged ``mtcnn``; other detections (faces of people
without an annotation) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]

NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR = range(5)
MIN_DETECTION_PROB = 0.9
MATCH_IOU = 0.3
MIN_CONTAINED = 0.6


@dataclass(frozen=True)
class Face:
    """A merged face: the index of its person, its box (original pixels) and where it came from."""

    person: int
    box: Box
    source: str  # "keypoints" | "mtcnn" | "both"


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def contained(inner: Box, outer: Box) -> float:
    """Fraction of ``inner``'s area inside ``outer``."""
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return ix * iy / area if area > 0 else 0.0


def keypoint_face_box(keypoints: Any, person_box: Box) -> Box | None:
    """The face box of one person from its 17×3 COCO keypoints (``[x, y, v]``), or ``None``.

    See the module docstring for the rule. ``person_box`` is ``[x0, y0, x1, y1]``.
    """
    k = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)[:5]
    seen = k[:, 2] > 0
    if seen.sum() < 2 or not seen[[NOSE, LEFT_EYE, RIGHT_EYE]].any():
        return None
    xy = k[:, :2]

    def dist(i: int, j: int) -> float:
        return float(np.linalg.norm(xy[i] - xy[j])) if seen[i] and seen[j] else 0.0

    side = max(
        2.5 * dist(LEFT_EYE, RIGHT_EYE),
        1.9 * dist(LEFT_EYE, LEFT_EAR),
        1.9 * dist(RIGHT_EYE, RIGHT_EAR),
        1.1 * dist(LEFT_EAR, RIGHT_EAR),
        3.5 * max(dist(NOSE, LEFT_EYE), dist(NOSE, RIGHT_EYE)),
    )
    if side <= 0:
        return None
    centre_ids = [i for i in (NOSE, LEFT_EYE, RIGHT_EYE) if seen[i]]
    cx, cy = xy[centre_ids].mean(axis=0)
    box = (
        max(cx - side / 2, person_box[0]),
        max(cy - side / 2, person_box[1]),
        min(cx + side / 2, person_box[2]),
        min(cy + side / 2, person_box[3]),
    )
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return box


_DETECTOR: Any = None


def detector() -> Any:
    """The process-wide MTCNN (CPU, ``keep_all``), built on first use from the weights facenet-pytorch ships."""
    global _DETECTOR
    if _DETECTOR is None:
        from facenet_pytorch import MTCNN

        _DETECTOR = MTCNN(keep_all=True, device="cpu", post_process=False)
    return _DETECTOR


def detect_faces(image: Any, min_size: float = 20.0) -> list[tuple[Box, float]]:
    """MTCNN faces in an RGB PIL image: ``[(box, probability)]`` with probability ≥ 0.9, best first.

    ``min_size`` is the smallest face side (in this image's pixels) the detector searches for.
    """
    import torch

    if min(image.size) < 12:  # no face fits (and MTCNN's 12×12 first stage fails on it)
        return []
    mtcnn = detector()
    mtcnn.min_face_size = max(12, int(min_size))
    with torch.no_grad():
        boxes, probs = mtcnn.detect(image)
    if boxes is None:
        return []
    found = [(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs, strict=True)]
    return sorted([f for f in found if f[1] >= MIN_DETECTION_PROB], key=lambda f: -f[1])


def merge_faces(keypoint_boxes: list[Box | None], person_boxes: list[Box], detections: list[Box]) -> list[Face]:
    """One face per person at most, sorted by person index (see the module docstring for the rule).

    ``keypoint_boxes[i]`` and ``person_boxes[i]`` belong to person ``i``; ``detections`` are detector boxes.
    """
    faces: dict[int, Face] = {}
    pairs = sorted(
        ((iou(kb, d), p, j) for p, kb in enumerate(keypoint_boxes) if kb is not None for j, d in enumerate(detections)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    used: set[int] = set()
    for score, p, j in pairs:
        if score < MATCH_IOU:
            break
        if p in faces or j in used:
            continue
        faces[p] = Face(p, detections[j], "both")
        used.add(j)
    for p, kb in enumerate(keypoint_boxes):
        if kb is not None and p not in faces:
            faces[p] = Face(p, kb, "keypoints")
    for j, d in enumerate(detections):
        if j in used:
            continue
        owners = [p for p, pb in enumerate(person_boxes) if p not in faces and contained(d, pb) >= MIN_CONTAINED]
        if owners:
            p = min(owners, key=lambda p: (_area(person_boxes[p]), p))
            faces[p] = Face(p, d, "mtcnn")
            used.add(j)
    return [faces[p] for p in sorted(faces)]


def _area(b: Box) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])
