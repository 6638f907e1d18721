"""Is a 2D skeleton one a human body can make? ``pose_plausibility`` scores COCO-17 keypoints in [0, 1].

The score only flags what no body seen from any viewpoint can show. A photograph is a projection: it
can shorten any bone to nothing (a forearm pointing at the camera) but never lengthen it, and a body
may turn, bend and cross its limbs. So the checks are bounds that hold in any view:

- **scale**: each part's 2D length shows the stature is at least ``length / fraction`` (Drillis &
  Contini's fractions); foreshortening only lowers that, so a body's stature is read from its parts
  that show the most, but never from one part alone. Three estimates that no single corrupted part
  can move: the torso's own (the larger of the shoulder line's and the spine's, shoulders' midpoint to
  hips' midpoint: a right-angled plate, which any view shows at >= 1/√2 of one side), the head's (the
  ear line and nose to ears: again directions at right angles) and the *second* largest of the four
  limbs'. Their largest is the body's scale (``body``) for the head and the turns.
- **lengths** (``SEGMENTS``): each bone (and each whole limb) is at most its fraction of the stature
  times the scale the *other* groups show (left arm, right arm, left leg, right leg, torso, head: a
  stretched part cannot vouch for itself), times its ``tolerance`` (``ALLOWANCE`` plus ``NOISE_Z``
  SDs of COCO's keypoint noise along it). The references are discounted for their own noise
  (``DISCOUNT_Z``: the largest of several noisy estimates is biased up). So a forearm three times too
  long, a shin twice too long, a torso stretched beyond its limbs or a wrist dragged to the far side
  of the body are caught where they show most of their length; foreshortening is not. The shoulder
  line only sets the scale: seen from high above it is the one part that keeps its length.
- **head** (``HEAD_CHECKS``): a face point farther from the shoulders' midpoint than head + neck;
  a face point below the shoulders along the spine by more than a bowed head can dip, allowing for
  the spine's foreshortening (a head moved below the hips); a face wider than a head is tall (judged
  against the torso and limbs, not the face's own size).
- **turns** (``TWISTS``, ``TORSO_SHEAR``): a vector of known 3D length seen at a fraction ``m`` of it
  has a depth component ``±sqrt(1 - |m|²)``, which bounds the 3D angle between two such vectors
  (:func:`_angle_range`). The shoulder line and the hip line (at the torso's own scale, which the hip
  labels cannot move), or the line between the ears (or eyes), must be able to lie within the spine's
  (the neck's) axial rotation of each other: hips facing the camera under shoulders seen from behind,
  or a face looking out of a back, are left and right chains crossed in a way no pose produces. The
  shoulder line must be able to stand within the trunk's side bend of square to the spine.
- **collapse** (``TORSO_COLLAPSE``): the torso is a plate (shoulder width × torso length) that any
  view shows at least ``min(width, length) / √2`` of: shoulders and hips on top of each other while
  the limbs show a full-size body are not a body.

Each check gives a ratio ``r`` (measured / allowed, or needed / found for the collapse); ``r <= 1``
holds. The score is ``clip((1 + SOFTNESS - max r) / (2 SOFTNESS), 0, 1)``: 1 when every check is
within ``1 - SOFTNESS`` of its limit, ``PLAUSIBLE`` = 0.5 exactly at the limit of the worst one, 0 beyond
``1 + SOFTNESS``. A person is *plausible* when the score is >= ``PLAUSIBLE``, i.e. when every check holds.

What it cannot see: it is 2D (a bone pointing at the camera is unjudgeable, and a skeleton that could
be a large body seen with most parts pointing at the camera passes), it has no hands or feet (COCO-17
stops at wrists and ankles), and joint angles are not judged (an elbow bent backwards keeps its bone
lengths). docs/evaluate.md lists every threshold with its source and the validation figures
(``benchmarks/pose_plausibility.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from humanfix.evaluate.persons import ImagePoses

# COCO's keypoint order.
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle")  # fmt: skip
K = {name: i for i, name in enumerate(KEYPOINTS)}
FACE = tuple(range(5))  # nose, eyes, ears
BODY = tuple(range(5, 17))  # shoulders, elbows, wrists, hips, knees, ankles
# COCO's keypoint skeleton (0-based), for drawing.
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
            (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))  # fmt: skip

# -- the named thresholds (docs/evaluate.md gives each one's source) ---------------------------------------

# Segment lengths as fractions of stature H: Drillis, Contini & Bluestein (1964), as tabulated in Winter,
# "Biomechanics and Motor Control of Human Movement", Fig. 4.1. Torso side = shoulder height 0.818H - hip
# height 0.530H; head + neck = head height 0.130H + chin-to-shoulder 0.870H - 0.818H.
UPPER_ARM, FOREARM, THIGH, SHANK = 0.186, 0.146, 0.245, 0.246
SHOULDER_WIDTH, TORSO_SIDE = 0.259, 0.288
HEAD_HEIGHT, HEAD_AND_NECK = 0.130, 0.182
# COCO's hip keypoints mark the hip joints, which sit 0.72 × the inter-ASIS breadth apart (Bell, Pedersen &
# Brand 1990), inter-ASIS breadth ≈ 0.14 H: 0.10 H (Drillis & Contini's 0.191 H is the breadth of the hips).
HIP_WIDTH = 0.10
# Face widths / stature (1.70 m): pupils 63 mm apart (adult mean, Dodgson 2004); ears (tragion to tragion)
# ~145 mm (bitragion breadth, adult means of the ANSUR surveys).
EYE_WIDTH, EAR_WIDTH = 0.037, 0.085
# Nose tip to an ear (tragion): ~120 mm deep and half the bitragion breadth (72 mm) across, 140 mm / 1.70 m.
NOSE_TO_EAR = 0.082
# How far a 2D length may exceed fraction × scale: ALLOWANCE (individual proportions: two SDs of the ratio
# of two segments that each vary 5%, Huston 2009; and some perspective) plus NOISE_Z SDs of the keypoint
# noise along it. The pair (ALLOWANCE, DISCOUNT_Z) was chosen on benchmarks/pose_plausibility.py as the
# tightest that keeps real bodies >= 0.97 plausible in every view (docs/evaluate.md).
ALLOWANCE = 1.15
NOISE_Z = 2.0  # keypoint noise allowed, in standard deviations
# The scale for the length checks discounts each part's estimate by (1 + DISCOUNT_Z × its noise SD): the
# largest of several noisy estimates is biased up, and a noisy part (the ears) must not set it alone.
DISCOUNT_Z = 0.5
OBJECT_SCALE = 0.5  # sqrt(segmented area) / stature, the scale COCO's keypoint sigmas are relative to
# COCO's per-keypoint spread of human annotations, relative to the object scale (cocoapi's OKS sigmas).
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
               0.087, 0.089, 0.089)  # fmt: skip
# Rotation limits, each an anatomical range plus room for the noise of widths measured in 2D: the
# thoracolumbar spine turns the shoulders ~45° against the pelvis (White & Panjabi 1990), allowed 90°;
# the neck turns the head ~80° against the shoulders (cervical rotation), allowed 110°; the trunk bends
# ~35° sideways (lateral flexion) and the shoulders shrug, so the shoulder line stays within 60° of square
# to the spine.
MAX_TORSO_TWIST, MAX_HEAD_TWIST, MAX_SHEAR = 90.0, 110.0, 60.0
# Least body keypoints (of the 12 shoulders..ankles) for a score; fewer: NaN.
MIN_BODY_KEYPOINTS = 6
# A left-right axis seen at less than this fraction of its full width has no reliable direction.
MIN_AXIS_WIDTH = 0.5
PLAUSIBLE = 0.5  # a person is plausible from this score on (= every check within its limit)
SOFTNESS = 0.25  # the score falls from 1 to 0 while the worst ratio goes from 1 - SOFTNESS to 1 + SOFTNESS


@dataclass(frozen=True)
class Segment:
    """A bone (two keypoints) or a limb (three), its length as a fraction of stature, its group and tolerance."""

    name: str
    path: tuple[int, ...]
    fraction: float
    group: str  # segments of one group never set the scale they are judged by
    scale_source: bool = True  # whether its length says how tall the body is (a limb repeats its bones)
    judged: bool = True  # whether its length is checked (the shoulder line only sets the scale)

    @property
    def noise(self) -> float:
        """SD of its 2D length from COCO's keypoint noise, relative to ``fraction`` × stature."""
        inner = [2 * COCO_SIGMAS[i] for i in self.path[1:-1]]
        return noise([COCO_SIGMAS[self.path[0]], COCO_SIGMAS[self.path[-1]], *inner], self.fraction)

    @property
    def tolerance(self) -> float:
        return ALLOWANCE + NOISE_Z * self.noise


def noise(sigmas: Sequence[float], fraction: float) -> float:
    """SD of a length along keypoints with COCO sigmas ``sigmas``, relative to ``fraction`` × stature."""
    return math.sqrt(sum(s * s for s in sigmas)) * OBJECT_SCALE / math.sqrt(2) / fraction


def tolerance(sigmas: Sequence[float], fraction: float) -> float:
    """How many times ``fraction`` × scale a 2D length may reach: the allowance plus ``NOISE_Z`` SDs of noise."""
    return ALLOWANCE + NOISE_Z * noise(sigmas, fraction)


def _limb(side: str, limb: str) -> tuple[Segment, ...]:
    """A limb (``arm`` or ``leg``) of one side: the whole limb and its two bones, in one group."""
    joints, bones, fractions = {
        "arm": (("shoulder", "elbow", "wrist"), ("upper arm", "forearm"), (UPPER_ARM, FOREARM)),
        "leg": (("hip", "knee", "ankle"), ("thigh", "shank"), (THIGH, SHANK)),
    }[limb]
    a, b, c = (K[f"{side}_{j}"] for j in joints)
    group = f"{side} {limb}"
    return (
        Segment(group, (a, b, c), sum(fractions), group, scale_source=False),
        Segment(f"{side} {bones[0]}", (a, b), fractions[0], group),
        Segment(f"{side} {bones[1]}", (b, c), fractions[1], group),
    )


SEGMENTS = (
    *_limb("left", "arm"),
    *_limb("right", "arm"),
    *_limb("left", "leg"),
    *_limb("right", "leg"),
    Segment("shoulder width", (K["left_shoulder"], K["right_shoulder"]), SHOULDER_WIDTH, "torso", judged=False),
    Segment("hip width", (K["left_hip"], K["right_hip"]), HIP_WIDTH, "torso", scale_source=False),
    Segment("left torso side", (K["left_shoulder"], K["left_hip"]), TORSO_SIDE, "torso"),
    Segment("right torso side", (K["right_shoulder"], K["right_hip"]), TORSO_SIDE, "torso"),
    Segment("ear width", (K["left_ear"], K["right_ear"]), EAR_WIDTH, "head", judged=False),
    Segment("nose to left ear", (K["nose"], K["left_ear"]), NOSE_TO_EAR, "head", judged=False),
    Segment("nose to right ear", (K["nose"], K["right_ear"]), NOSE_TO_EAR, "head", judged=False),
)
# The spine (shoulders' midpoint to hips' midpoint) sets the scale with the shoulder line: swapping the
# hips' labels leaves it as it is. Its noise: each midpoint's is a keypoint's over √2.
SHOULDER_NOISE = noise([COCO_SIGMAS[5], COCO_SIGMAS[6]], SHOULDER_WIDTH)
SPINE_NOISE = noise([COCO_SIGMAS[5] / math.sqrt(2), COCO_SIGMAS[11] / math.sqrt(2)], TORSO_SIDE)
# The head's two checks: the face point farthest from the shoulders' midpoint (head + neck), and the
# face's widest span (a head's height); the midpoint's noise is a shoulder's over √2.
HEAD_OFF_TOLERANCE = tolerance([max(COCO_SIGMAS[:5]), COCO_SIGMAS[5] / math.sqrt(2)], HEAD_AND_NECK)
FACE_TOLERANCE = tolerance([max(COCO_SIGMAS[:5])] * 2, HEAD_HEIGHT)
# (name, left keypoint, right keypoint, full width as a fraction of stature) of the left-right axes.
AXES = {
    "shoulders": (K["left_shoulder"], K["right_shoulder"], SHOULDER_WIDTH),
    "hips": (K["left_hip"], K["right_hip"], HIP_WIDTH),
    "ears": (K["left_ear"], K["right_ear"], EAR_WIDTH),
    "eyes": (K["left_eye"], K["right_eye"], EYE_WIDTH),
}
# (check, axis, the other axis or axes in order of preference, most twist allowed)
TWISTS = (
    ("torso twist", "shoulders", ("hips",), MAX_TORSO_TWIST),
    ("head twist", "shoulders", ("ears", "eyes"), MAX_HEAD_TWIST),
)
HEAD_BELOW = "head below the shoulders"
HEAD_CHECKS = ("head off the shoulders", HEAD_BELOW, "face too large")
# How far below the shoulders' midpoint, along the spine, a face point can go (statures): the nose with the
# chin on the chest and the upper back rounded.
HEAD_DIP = 0.08
# SD (statures) of a face point's offset from the shoulders' midpoint along the spine, from COCO's noise.
HEAD_DIP_NOISE = math.hypot(max(COCO_SIGMAS[:5]), COCO_SIGMAS[5] / math.sqrt(2)) * OBJECT_SCALE / math.sqrt(2)
# The torso's extent (the longer of shoulder width and shoulders-to-hips) may look this much too short.
TORSO_TOLERANCE = ALLOWANCE + NOISE_Z * SPINE_NOISE
TORSO_COLLAPSE = "torso collapsed"
TORSO_SHEAR = "torso shear"
CHECKS = (
    tuple(s.name for s in SEGMENTS if s.judged)
    + HEAD_CHECKS
    + tuple(t[0] for t in TWISTS)
    + (TORSO_SHEAR, TORSO_COLLAPSE)
)


@dataclass
class Verdict:
    """One skeleton's score and, per check that could be evaluated, its ratio (<= 1 holds)."""

    score: float  # in [0, 1]; NaN when too few keypoints
    ratios: dict[str, float]

    @property
    def failed(self) -> list[str]:
        """The checks beyond their limit, worst first."""
        return [name for name, r in sorted(self.ratios.items(), key=lambda kv: -kv[1]) if r > 1]


def pose_plausibility(keypoints: np.ndarray | Sequence, min_confidence: float = 0.0) -> np.ndarray:
    """Plausibility of each skeleton: P×17×3 (x, y, visibility or confidence) -> P scores in [0, 1].

    Keypoints are in COCO order, in pixels (any consistent unit); a keypoint counts when its third
    value is at least ``min_confidence`` and above 0 (0 = missing, as in COCO's v). A person with fewer
    than ``MIN_BODY_KEYPOINTS`` body keypoints, or with no check that can be evaluated, scores NaN.
    1 means plausible, and a score >= ``PLAUSIBLE`` means every check holds (see the module docstring).
    """
    return np.array([v.score for v in judge(keypoints, min_confidence)], dtype=np.float64)


def judge(keypoints: np.ndarray | Sequence, min_confidence: float = 0.0) -> list[Verdict]:
    """:func:`pose_plausibility` with each check's ratio, per person."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return []
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must be P×17×3 (COCO order: x, y, visibility), got shape {kp.shape}")
    return [_judge_one(p, min_confidence) for p in kp]


def _judge_one(p: np.ndarray, min_confidence: float) -> Verdict:
    present = (p[:, 2] > 0) & (p[:, 2] >= min_confidence) & np.isfinite(p[:, :2]).all(axis=1)
    xy = p[:, :2]
    if int(present[list(BODY)].sum()) < MIN_BODY_KEYPOINTS:
        return Verdict(math.nan, {})

    def dist(i: int, j: int) -> float:
        return float(np.hypot(*(xy[i] - xy[j])))

    def length(seg: Segment) -> float:
        return sum(dist(i, j) for i, j in zip(seg.path, seg.path[1:], strict=False))

    lengths = {seg.name: length(seg) for seg in SEGMENTS if present[list(seg.path)].all()}
    # each part's estimate of the stature: at least its 2D length / its fraction; the noisy ones discounted
    shoulders = bool(present[K["left_shoulder"]] and present[K["right_shoulder"]])
    both_hips = bool(present[K["left_hip"]] and present[K["right_hip"]])
    neck = (xy[K["left_shoulder"]] + xy[K["right_shoulder"]]) / 2
    pelvis = (xy[K["left_hip"]] + xy[K["right_hip"]]) / 2
    estimates: dict[str, list[tuple[float, float]]] = {}  # per group: (estimate, its noise SD) per part
    spine_known = shoulders and both_hips  # then the spine stands for the torso's sides (hip labels cannot move it)
    for seg in SEGMENTS:
        if seg.scale_source and seg.name in lengths and not (seg.name.endswith("torso side") and spine_known):
            estimates.setdefault(seg.group, []).append((lengths[seg.name] / seg.fraction, seg.noise))
    if spine_known:
        estimates.setdefault("torso", []).append((float(np.hypot(*(neck - pelvis))) / TORSO_SIDE, SPINE_NOISE))
    # the length checks' scales discount noisy estimates (the largest of several noisy ones is biased up);
    # the turns and the head take them as they are (too small a scale would leave no room for depth)
    groups = {g: max(s / (1 + DISCOUNT_Z * n) for s, n in v) for g, v in estimates.items()}
    raw = {g: max(s for s, _ in v) for g, v in estimates.items()}
    plate = raw.get("torso", 0.0)  # the torso's own scale: shoulder line and spine
    head = raw.get("head", 0.0)  # the head's: the ear line and nose to ears

    def scale(excluding: str | None = None) -> float:
        """The stature (pixels) the parts outside group ``excluding`` show; 0 when none."""
        return max((s for g, s in groups.items() if g != excluding), default=0.0)

    limb_scales = sorted((s for g, s in raw.items() if g not in ("torso", "head")), reverse=True)
    second = limb_scales[1] if len(limb_scales) > 1 else 0.0  # no one limb can raise it
    body = max(plate, head, second)

    ratios: dict[str, float] = {}
    for seg in SEGMENTS:
        # a torso segment is also judged against the shoulder line and spine (hip labels cannot move those)
        s = max(scale(seg.group), groups.get("torso", 0.0)) if seg.group == "torso" else scale(seg.group)
        if seg.judged and seg.name in lengths and s > 0:
            ratios[seg.name] = lengths[seg.name] / (seg.tolerance * seg.fraction * s)

    face = [i for i in FACE if present[i]]
    sides = [i for i in (K["left_shoulder"], K["right_shoulder"]) if present[i]]
    if body > 0 and sides and face:  # from one shoulder, the head may be half a shoulder line farther
        root, extra = (neck, 0.0) if shoulders else (xy[sides[0]], SHOULDER_WIDTH / 2)
        far = max(float(np.hypot(*(xy[i] - root))) for i in face)
        ratios["head off the shoulders"] = far / (HEAD_OFF_TOLERANCE * (HEAD_AND_NECK + extra) * body)
        hip_side = [i for i in (K["left_hip"], K["right_hip"]) if present[i]]
        if hip_side:  # how far the face dips below the shoulders along the spine
            base = pelvis if both_hips else xy[hip_side[0]]
            extra += 0.0 if both_hips else HIP_WIDTH / 2
            up = root - base
            span = float(np.hypot(*up))
            if span > 0:
                c = min(1.0, span / (TORSO_SIDE * body))  # the fraction of its length the spine shows
                dip = -min(float((xy[i] - root) @ up) for i in face) / span
                # a head dips at most HEAD_DIP below the shoulders along the spine; a spine seen at c of
                # its length lets a vector of length l show up to sqrt(1 - c²) l more along it
                allowed = ALLOWANCE * (HEAD_DIP * c + math.sqrt(1 - c * c) * (HEAD_AND_NECK + extra))
                ratios[HEAD_BELOW] = dip / ((allowed + NOISE_Z * HEAD_DIP_NOISE) * body)
    own = max(plate, second)  # the face is not judged by its own size; the shoulder line must be there
    if own > 0 and shoulders and len(face) >= 2:
        wide = max(dist(i, j) for n, i in enumerate(face) for j in face[n + 1 :])
        ratios["face too large"] = wide / (FACE_TOLERANCE * HEAD_HEIGHT * own)

    if body > 0 and plate > 0:
        for name, first, others, limit in TWISTS:
            for other in others:  # the first of ``others`` with both keypoints
                if present[AXES[other][0]] and present[AXES[other][1]]:
                    twist = _twist(xy, present, AXES[first], AXES[other], plate if other == "hips" else body)
                    if twist is not None:
                        ratios[name] = twist / limit
                    break
    if body > 0 and shoulders and both_hips:
        across = (xy[K["left_shoulder"]] - xy[K["right_shoulder"]]) / (SHOULDER_WIDTH * body)
        lo, hi = _angle_range(across, (neck - pelvis) / (TORSO_SIDE * body))
        ratios[TORSO_SHEAR] = max(0.0, lo - 90, 90 - hi) / MAX_SHEAR

    limbs = scale("torso")
    hips = [i for i in (K["left_hip"], K["right_hip"]) if present[i]]
    if limbs > 0 and shoulders and hips:
        extent = max(dist(K["left_shoulder"], K["right_shoulder"]), float(np.hypot(*(neck - xy[hips].mean(axis=0)))))
        # the limbs may show up to their tolerance too much, the torso up to its tolerance too little
        slack = TORSO_TOLERANCE * max(seg.tolerance for seg in SEGMENTS if seg.group not in ("torso", "head"))
        ratios[TORSO_COLLAPSE] = min(SHOULDER_WIDTH, TORSO_SIDE) / math.sqrt(2) * limbs / slack / max(extent, 1e-9)

    if not ratios:
        return Verdict(math.nan, {})
    worst = max(ratios.values())
    score = min(1.0, max(0.0, (1 + SOFTNESS - worst) / (2 * SOFTNESS)))
    return Verdict(score, ratios)


def _angle_range(m1: np.ndarray, m2: np.ndarray) -> tuple[float, float]:
    """The 3D angles (degrees, least and most) two vectors can make, given their 2D images as fractions.

    ``m1``, ``m2``: each vector's image divided by its 3D length (longer ones are cut to 1). Depth
    components ``±sqrt(1 - |m|²)`` make the cosine ``m1·m2 ± sqrt((1 - |m1|²)(1 - |m2|²))``.
    """
    n1, n2 = float(np.hypot(*m1)), float(np.hypot(*m2))
    m1, m2 = m1 / max(n1, 1.0), m2 / max(n2, 1.0)
    dot = float(m1 @ m2)
    spread = math.sqrt(max(0.0, 1 - min(n1, 1.0) ** 2) * max(0.0, 1 - min(n2, 1.0) ** 2))
    return math.degrees(math.acos(min(1.0, dot + spread))), math.degrees(math.acos(max(-1.0, dot - spread)))


def _twist(xy: np.ndarray, present: np.ndarray, first: tuple, second: tuple, body: float) -> float | None:
    """Least angle (degrees) in 3D between two left-right axes of one body, or None when not measurable.

    Each axis (right -> left keypoint) is a 3D vector of known length (its width fraction × ``body``) of
    which the image shows ``p`` (2D, |p| <= 1 after dividing by that length); its depth component
    is ``±sqrt(1 - |p|²)``. The cosine between the two is largest with equal depth signs:
    ``cos = p1·p2 + sqrt((1 - |p1|²)(1 - |p2|²))``. (Seen side by side, pointing the same way, that is
    ``|a1 - a2|`` for out-of-plane angles a1, a2; pointing opposite ways, ``180° - a1 - a2``.)
    """
    (l1, r1, f1), (l2, r2, f2) = first, second
    if not (present[l1] and present[r1] and present[l2] and present[r2]):
        return None
    p1, p2 = (xy[l1] - xy[r1]) / (f1 * body), (xy[l2] - xy[r2]) / (f2 * body)
    w1, w2 = float(np.hypot(*p1)), float(np.hypot(*p2))
    if min(w1, w2) < MIN_AXIS_WIDTH:  # keypoint noise can point a narrow axis either way
        return None
    p1, p2 = p1 / max(w1, 1.0), p2 / max(w2, 1.0)  # no longer than the full width
    w1, w2 = min(w1, 1.0), min(w2, 1.0)
    cos = float(p1 @ p2) + math.sqrt((1 - w1 * w1) * (1 - w2 * w2))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


# -- the metrics of one image set ------------------------------------------------------------------------------


def summarize(
    images: Sequence[ImagePoses],
    min_confidence: float,
    resamples: int = 1000,
    seed: int = 0,
    ground_truth: bool = False,
) -> tuple[dict[str, Any], list[list[Verdict]]]:
    """The pose metrics of one set, and each image's verdicts (one per person, in detection order).

    - ``person_rate``: images with at least one person / images;
    - ``keypoint_confidence``: mean over persons of their 17 keypoint confidences (None for
      ``ground_truth`` keypoints, whose third value is COCO's visibility);
    - ``plausible_rate``: persons scoring >= ``PLAUSIBLE`` / persons with a score (keypoints above
      ``min_confidence`` count; persons with too few are left out and counted in ``n_unscored``);
    - ``plausibility``: the mean score over the same persons.

    Each comes with a 95% bootstrap interval (``*_interval``): the images are resampled with replacement
    ``resamples`` times (persons stay with their image) and the statistic recomputed; the interval is the
    2.5–97.5 percentile range. Undefined numbers (no person, no scored person) are None.
    """
    verdicts = [judge(im.keypoints, min_confidence) if len(im.keypoints) else [] for im in images]
    # per image: has a person, persons, summed confidence, scored persons, plausible persons, summed score
    rows = np.zeros((len(images), 6))
    failed: dict[str, int] = {}
    for row, im, vs in zip(rows, images, verdicts, strict=True):
        scores = np.array([v.score for v in vs], dtype=np.float64)
        scored = scores[~np.isnan(scores)]
        conf = float(im.keypoints[:, :, 2].mean(axis=1).sum()) if len(vs) and not ground_truth else 0.0
        row[:] = (len(vs) > 0, len(vs), conf, len(scored), (scored >= PLAUSIBLE).sum(), scored.sum())
        for v in vs:
            for name in v.failed:
                failed[name] = failed.get(name, 0) + 1
    stats = _ratios(rows.sum(axis=0)[None], len(images))[0]
    out: dict[str, Any] = {
        "n_images": len(images),
        "n_with_person": int(rows[:, 0].sum()),
        "n_persons": int(rows[:, 1].sum()),
        "n_scored": int(rows[:, 3].sum()),
        "n_unscored": int(rows[:, 1].sum() - rows[:, 3].sum()),
        "n_plausible": int(rows[:, 4].sum()),
    }
    keys = ("person_rate", "keypoint_confidence", "plausible_rate", "plausibility")
    intervals = _bootstrap(rows, resamples, seed) if resamples and len(images) else [None] * 4
    for key, value, interval in zip(keys, stats, intervals, strict=True):
        if key == "keypoint_confidence" and ground_truth:
            value, interval = None, None
        out[key] = None if value is None or math.isnan(value) else float(value)
        if resamples:
            out[f"{key}_interval"] = interval
    out["failed_checks"] = dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0])))
    return out, verdicts


def _ratios(sums: np.ndarray, n_images: int) -> np.ndarray:
    """R×6 column sums -> R×4 (person rate, keypoint confidence, plausible rate, plausibility); NaN when 0/0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [sums[:, 0] / max(n_images, 1), sums[:, 2] / sums[:, 1], sums[:, 4] / sums[:, 3], sums[:, 5] / sums[:, 3]],
            axis=1,
        )


def _bootstrap(rows: np.ndarray, resamples: int, seed: int) -> list[list[float] | None]:
    """Percentile intervals of the four statistics over ``resamples`` resamples of the images."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    stats = []
    for start in range(0, resamples, 100):  # counts per image (multinomial), 100 resamples at a time
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(100, resamples - start))
        stats.append(_ratios(counts @ rows, n))
    reps = np.concatenate(stats)
    out: list[list[float] | None] = []
    for column in reps.T:
        finite = column[~np.isnan(column)]
        out.append([float(x) for x in np.percentile(finite, [2.5, 97.5])] if len(finite) else None)
    return out
