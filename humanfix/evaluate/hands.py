"""Are the hands real hands? MediaPipe Hands finds them; ``hand_plausibility`` scores their 3D shape in [0, 1].

The detector: MediaPipe Hands (palm detection + 21 landmarks), from the ``mediapipe==0.10.14`` wheel that
ships both models (``mediapipe/modules/palm_detection``, ``hand_landmark``), so it runs offline with real
weights (the optional extra ``humanfix[hands]``). Per hand it gives the 21 landmarks in the image (x, y in
pixels, a relative depth), the same 21 in metric "world" coordinates (metres, origin near the hand's
centre), left/right and a score.

The score judges what MediaPipe's world landmarks measure reliably. They are a learned 3D guess: on real
photos the middle/proximal phalanx ratio spreads 0.46–2.73 (anatomy: about 0.55–0.85), so lengths are
judged only loosely; angles, the order of the knuckles and the palm's shape carry the score:

- **hinges** (``SIDEWAYS``): the PIP and DIP joints are hinges, so the distal phalanx stays in the plane
  that the proximal one sweeps about the hinge axis (the palm's index-to-pinky direction, made
  perpendicular to the proximal phalanx). The angle out of that plane is bounded; the MCP (a condyloid
  joint that also spreads the fingers) gets a wider bound.
- **flexion and hyperextension** (``FLEXION``): the signed bend in that plane at MCP, PIP and DIP, within
  the published range of motion. The palm side comes from the thumb, whose base (CMC and MCP) sits on
  the palm side of the knuckles' plane; without a thumb only unsigned bends are judged.
- **thumb** (``THUMB_BEND``): the bend at its MCP and IP joints (unsigned: the thumb's axes are its own).
- **palm** (``PALM_CHECKS``): the four knuckles (MCPs) in their order across the palm (index, middle,
  ring, pinky; neighbours at least ``-MIN_KNUCKLE_GAP`` of the palm's width apart, i.e. never swapped),
  the palm's width / length, and each knuckle's distance from the wrist / the palm's length.
- **lengths** (``LENGTHS``): each finger's middle/proximal and distal/middle phalanx ratio and its
  length / the palm's length, within wide bounds (the detector's own spread).

Each check gives a ratio ``r`` (measured / allowed); ``r <= 1`` holds. As for poses, the score is
``clip((1 + SOFTNESS - max r) / (2 SOFTNESS), 0, 1)``: a hand is *plausible* (score >= ``PLAUSIBLE``) when
every check holds. Each limit is an anatomical value plus the detector's measured noise, written next to
it (``Limit``); docs/evaluate.md has the table and the validation (``benchmarks/hand_plausibility.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanfix.errors import UserError
from humanfix.evaluate.pose import Verdict  # one score and its checks per hand, as per skeleton

# MediaPipe's landmark order.
LANDMARKS = ("wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
             "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip",
             "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip")  # fmt: skip
WRIST = 0
THUMB = (1, 2, 3, 4)
FINGERS = {"index": (5, 6, 7, 8), "middle": (9, 10, 11, 12), "ring": (13, 14, 15, 16), "pinky": (17, 18, 19, 20)}
KNUCKLES = tuple(chain[0] for chain in FINGERS.values())  # the MCPs across the palm: 5, 9, 13, 17
# MediaPipe's hand connections (for drawing): the palm and the five chains.
CONNECTIONS = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
               (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20))  # fmt: skip

EXTRA = "pip install 'humanfix[hands]'"
MEDIAPIPE_VERSION = "0.10.14"


@dataclass(frozen=True)
class Limit:
    """A bound: the anatomical value, what the detector's noise adds (measured on real photos), the source."""

    anatomy: float
    noise: float
    source: str

    @property
    def value(self) -> float:
        return self.anatomy + self.noise


# -- the named thresholds (docs/evaluate.md, "Hands", gives each one's budget) --------------------------------

# Range of motion (degrees): the American Academy of Orthopaedic Surgeons' averages as tabulated in Norkin &
# White, "Measurement of Joint Motion" (MCP flexion 90, hyperextension 45; PIP flexion 100, extension 0; DIP
# flexion 90, hyperextension 10; thumb MCP flexion 50, IP flexion 80 and hyperextension 20). The noise terms
# are what MediaPipe's world landmarks showed beyond those on the hands-sample photos (hands seen from any
# side, curled fingers), rounded up: docs/evaluate.md lists the measured extremes.
AAOS = "AAOS average range of motion (Norkin & White)"
FLEXION = {  # joint -> (flexion limit, hyperextension limit)
    "MCP": (Limit(90, 50, AAOS), Limit(45, 35, AAOS)),
    "PIP": (Limit(100, 45, AAOS), Limit(0, 50, AAOS + "; 10-20 deg more in lax joints is inside the noise term")),
    "DIP": (Limit(90, 50, AAOS), Limit(10, 100, AAOS + "; MediaPipe curls fingertips unreliably (-76 deg seen)")),
}
# Sideways deviation out of the hinge's plane (degrees). PIP and DIP are hinges: collateral ligaments allow
# ~5-10 deg (radial/ulnar stress tests); MediaPipe shows up to 44 (PIP) and 57 (DIP) on real photos. The MCP
# spreads the fingers (abduction ~20-30 deg, Norkin & White) and the wrist->MCP line is not the finger's axis.
HINGE = "collateral-ligament laxity of a hinge joint"
SIDEWAYS = {"MCP": Limit(30, 35, "MCP abduction (Norkin & White)"), "PIP": Limit(10, 50, HINGE),
            "DIP": Limit(10, 65, HINGE)}  # fmt: skip
# Thumb bends (unsigned, degrees): MCP flexion 50 and IP flexion 80 + hyperextension 20 (AAOS); MediaPipe
# showed up to 84 (CMC->MCP->IP) and 76 (IP) on the sample.
THUMB_BEND = {"thumb MCP bend": Limit(50, 60, AAOS), "thumb IP bend": Limit(80, 50, AAOS)}
# The knuckles' order across the palm: neighbouring MCPs (index..pinky) lie about a third of the palm's width
# apart (0.02-0.52 measured: a knuckle may sit nearly under its neighbour); swapped ones lie on the wrong
# side. A gap below -MIN_KNUCKLE_GAP × width fails.
MIN_KNUCKLE_GAP = 0.15
# Palm shape: width (index MCP -> pinky MCP) / length (wrist -> middle MCP): metacarpal breadth ~85 mm less
# the knuckles' own width over a ~95 mm palm gives ~0.7 (hand anthropometry, e.g. Buryanov & Kotiuk 2010);
# MediaPipe measured 0.30-0.76. Knuckle distance from the wrist / palm length: metacarpals index 1.0,
# ring 0.9, pinky 0.85 of the middle one (Buryanov & Kotiuk 2010); measured 0.75-1.19.
PALM_WIDTH = (0.15, 1.3)  # allowed range of width / length
KNUCKLE_REACH = (0.5, 1.6)  # allowed range of |wrist -> MCP| / palm length
# Lengths (ratios): middle/proximal phalanx ~0.55-0.85 and distal/middle ~0.6-0.9 in anatomy (Buryanov &
# Kotiuk 2010); MediaPipe spreads 0.46-2.73 on real photos, so the allowed ranges are those widened by its
# spread. A finger (MCP to tip) is ~0.8-1.0 palm lengths; measured 0.56-1.12.
PHALANX_RATIO = (0.25, 4.0)
FINGER_LENGTH = (0.3, 2.0)
# The palm side is judged only when the thumb's base is this far (palm lengths) off the knuckles' plane.
MIN_THUMB_OFFSET = 0.02
PLAUSIBLE = 0.5  # a hand is plausible from this score on (= every check within its limit)
SOFTNESS = 0.25  # the score falls from 1 to 0 while the worst ratio goes from 1 - SOFTNESS to 1 + SOFTNESS
PALM_CHECKS = ("knuckle order", "palm width", "knuckle reach")


def check_names() -> tuple[str, ...]:
    """Every check's name, in the order they are evaluated."""
    names = list(PALM_CHECKS)
    for finger in FINGERS:
        for j in ("MCP", "PIP", "DIP"):
            names += [f"{finger} {j} sideways", f"{finger} {j} flexion", f"{finger} {j} hyperextension"]
        names += [f"{finger} middle/proximal phalanx", f"{finger} distal/middle phalanx", f"{finger} length"]
    return (*names, *THUMB_BEND)


CHECKS = check_names()


def hand_plausibility(landmarks: np.ndarray | Sequence) -> np.ndarray:
    """Plausibility of each hand: H×21×3 3D landmarks (MediaPipe order, any consistent unit) -> H in [0, 1].

    Rows of NaN mark missing landmarks; a hand without its wrist, middle knuckle and index or pinky knuckle
    (no palm to judge against) scores NaN. A score >= ``PLAUSIBLE`` means every check holds.
    """
    return np.array([v.score for v in judge(landmarks)], dtype=np.float64)


def judge(landmarks: np.ndarray | Sequence) -> list[Verdict]:
    """:func:`hand_plausibility` with each check's ratio, per hand."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.size == 0:
        return []
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (21, 3):
        raise ValueError(f"landmarks must be H×21×3 (MediaPipe order, 3D), got shape {lm.shape}")
    return [_judge_one(h) for h in lm]


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return None if not n > 1e-12 else v / n


def _range_ratio(x: float, lo_hi: tuple[float, float]) -> float:
    """<= 1 inside [lo, hi], growing with the factor by which ``x`` leaves it."""
    lo, hi = lo_hi
    return max(x / hi, lo / max(x, 1e-12))


def _judge_one(p: np.ndarray) -> Verdict:
    ok = np.isfinite(p).all(axis=1)
    if not (ok[WRIST] and ok[9] and (ok[5] or ok[17])):
        return Verdict(math.nan, {})
    length = float(np.linalg.norm(p[9] - p[WRIST]))
    across = p[17] - p[5] if ok[5] and ok[17] else (p[17] - p[9] if ok[17] else p[9] - p[5])
    x = _unit(across)
    y = _unit(p[9] - p[WRIST] - (0 if x is None else np.dot(p[9] - p[WRIST], x) * x))
    if x is None or y is None or length <= 1e-12:
        return Verdict(math.nan, {})
    normal = np.cross(x, y)
    ratios: dict[str, float] = {}

    # palm: the knuckles' order, the palm's width and reach
    if ok[5] and ok[17]:
        width = float(np.linalg.norm(p[17] - p[5]))
        ratios["palm width"] = _range_ratio(width / length, PALM_WIDTH)
        known = [k for k in KNUCKLES if ok[k]]
        s = [float(np.dot(p[k] - p[5], x)) / width for k in known]
        gaps = [b - a for a, b in zip(s, s[1:], strict=False)]
        # 1 at a gap of -MIN_KNUCKLE_GAP, 0 at an even third; the worst neighbour pair counts
        ratios["knuckle order"] = max((1 / 3 - g) / (1 / 3 + MIN_KNUCKLE_GAP) for g in gaps)
    reach = [float(np.linalg.norm(p[k] - p[WRIST])) / length for k in KNUCKLES if ok[k] and k != 9]
    if reach:
        ratios["knuckle reach"] = max(_range_ratio(r, KNUCKLE_REACH) for r in reach)

    # the palm side, from the thumb's base
    volar = None
    base = [j for j in (1, 2) if ok[j]]
    if base:
        offset = float(np.dot(p[base].mean(axis=0) - p[WRIST], normal)) / length
        if abs(offset) >= MIN_THUMB_OFFSET:
            volar = math.copysign(1.0, offset)

    for finger, chain in FINGERS.items():
        points = (WRIST, *chain)
        for j, name in enumerate(("MCP", "PIP", "DIP")):
            a, b, c = points[j], points[j + 1], points[j + 2]
            if not (ok[a] and ok[b] and ok[c]):
                continue
            bend = _hinge(p[a], p[b], p[c], x, volar)
            if bend is None:
                continue
            flex, side = bend
            ratios[f"{finger} {name} sideways"] = abs(side) / SIDEWAYS[name].value
            flex_limit, hyper_limit = FLEXION[name]
            if volar is None:  # unsigned: the larger of the two limits
                ratios[f"{finger} {name} flexion"] = abs(flex) / max(flex_limit.value, hyper_limit.value)
            else:
                ratios[f"{finger} {name} flexion"] = max(flex, 0.0) / flex_limit.value
                ratios[f"{finger} {name} hyperextension"] = max(-flex, 0.0) / hyper_limit.value
        bones = [
            float(np.linalg.norm(p[m] - p[n])) if ok[m] and ok[n] else math.nan
            for m, n in zip(chain, chain[1:], strict=False)
        ]
        proximal, middle, distal = bones
        if proximal > 0 and middle == middle:
            ratios[f"{finger} middle/proximal phalanx"] = _range_ratio(middle / proximal, PHALANX_RATIO)
        if middle > 0 and distal == distal:
            ratios[f"{finger} distal/middle phalanx"] = _range_ratio(distal / middle, PHALANX_RATIO)
        if all(b == b for b in bones):
            ratios[f"{finger} length"] = _range_ratio(sum(bones) / length, FINGER_LENGTH)

    for name, (a, b, c) in zip(THUMB_BEND, ((1, 2, 3), (2, 3, 4)), strict=True):
        if ok[a] and ok[b] and ok[c]:
            u, v = _unit(p[b] - p[a]), _unit(p[c] - p[b])
            if u is not None and v is not None:
                angle = math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(u, v))))))
                ratios[name] = angle / THUMB_BEND[name].value

    if not ratios:
        return Verdict(math.nan, {})
    worst = max(ratios.values())
    score = min(1.0, max(0.0, (1 + SOFTNESS - worst) / (2 * SOFTNESS)))
    return Verdict(score, ratios)


def _hinge(a: np.ndarray, b: np.ndarray, c: np.ndarray, across: np.ndarray, volar: float | None):
    """The bend at ``b`` of the chain a -> b -> c: (signed flexion, sideways deviation) in degrees, or None.

    The hinge axis is the palm's across direction made perpendicular to the proximal bone u = b - a; the
    flexion plane is spanned by u and ``volar · (axis × u)`` (the palm side); flexion is the distal bone's
    angle from u within that plane (positive towards the palm), the deviation its angle out of the plane.
    Without ``volar`` the flexion is the unsigned angle within the plane.
    """
    u, v = _unit(b - a), _unit(c - b)
    if u is None or v is None:
        return None
    axis = _unit(across - np.dot(across, u) * u)
    if axis is None:  # the bone points across the palm: no hinge to judge against
        return None
    palmward = np.cross(axis, u) * (volar or 1.0)
    side = math.degrees(math.asin(max(-1.0, min(1.0, float(np.dot(v, axis))))))
    flex = math.degrees(math.atan2(float(np.dot(v, palmward)), float(np.dot(v, u))))
    if volar is None:
        flex = abs(flex)
    return flex, side


# -- the detector -----------------------------------------------------------------------------------------------


def _quiet() -> None:
    """MediaPipe's C++ logging (glog/absl, TF Lite) on stderr: warnings and errors only."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def mediapipe_status() -> tuple[bool, str]:
    """Whether MediaPipe Hands can run here, and its version or what is missing (for ``doctor``)."""
    _quiet()
    try:
        import mediapipe as mp  # noqa: F401
    except Exception as e:  # ImportError, or a protobuf it cannot work with
        return False, f"missing ({type(e).__name__}: {str(e)[:80]}): {EXTRA}"
    import google.protobuf

    if int(google.protobuf.__version__.split(".")[0]) >= 5:  # its graph code uses APIs protobuf 5 removed
        return False, f"mediapipe {mp.__version__} needs protobuf<5, found {google.protobuf.__version__}: {EXTRA}"
    root = Path(mp.__file__).parent / "modules"
    models = [
        root / "palm_detection" / "palm_detection_full.tflite",
        root / "hand_landmark" / "hand_landmark_full.tflite",
    ]
    absent = [m.name for m in models if not m.is_file()]
    if absent:
        return False, f"mediapipe {mp.__version__} ships no {', '.join(absent)}: {EXTRA} (=={MEDIAPIPE_VERSION})"
    return True, f"mediapipe {mp.__version__} (palm detection + hand landmarks, full models, from the wheel)"


@dataclass
class HandDetector:
    """MediaPipe Hands on still images (``static_image_mode``), up to ``max_hands`` per image."""

    hands: Any
    threshold: float
    max_hands: int
    version: str

    def describe(self) -> dict[str, Any]:
        return {
            "detector": f"MediaPipe Hands {self.version} (palm_detection_full + hand_landmark_full, from the wheel)",
            "min_detection_confidence": self.threshold,
            "max_hands": self.max_hands,
        }

    def __call__(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        """The hands in one H×W×3 uint8 RGB image: box, side, score, landmarks (21×3 px), world (21×3 m)."""
        import warnings

        h, w = rgb.shape[:2]
        with warnings.catch_warnings():  # protobuf 4's GetPrototype deprecation, once per image
            warnings.simplefilter("ignore", UserWarning)
            res = self.hands.process(np.ascontiguousarray(rgb))
        found = []
        for cls, lms, world in zip(
            res.multi_handedness or [],
            res.multi_hand_landmarks or [],
            res.multi_hand_world_landmarks or [],
            strict=False,
        ):
            px = np.array([[q.x * w, q.y * h, q.z * w] for q in lms.landmark], dtype=np.float64)
            wd = np.array([[q.x, q.y, q.z] for q in world.landmark], dtype=np.float64)
            box = [float(px[:, 0].min()), float(px[:, 1].min()), float(px[:, 0].max()), float(px[:, 1].max())]
            label = cls.classification[0]
            found.append({"box": box, "side": label.label.lower(), "score": float(label.score), "landmarks": px,
                          "world": wd})  # fmt: skip
        return found


def load_detector(threshold: float = 0.5, max_hands: int = 2) -> HandDetector:
    """MediaPipe Hands from the installed wheel (no network); a missing extra is one :class:`UserError` line."""
    _quiet()
    try:
        import mediapipe as mp
        from mediapipe.python.solutions import hands as mp_hands
    except Exception as e:
        raise UserError(f"--hands needs MediaPipe Hands: {EXTRA} ({type(e).__name__}: {str(e)[:120]})") from None
    ok, detail = mediapipe_status()
    if not ok:
        raise UserError(f"--hands: {detail}")
    try:
        hands = mp_hands.Hands(
            static_image_mode=True, max_num_hands=max_hands, model_complexity=1, min_detection_confidence=threshold
        )
    except Exception as e:  # e.g. a protobuf newer than mediapipe 0.10.14 works with
        raise UserError(
            f"MediaPipe Hands failed to start ({type(e).__name__}: {str(e)[:120]}); it needs protobuf<5: {EXTRA}"
        ) from None
    return HandDetector(hands, threshold, max_hands, mp.__version__)


@dataclass
class ImageHands:
    """The hands found in one image; H may be 0. ``readable`` False: the file could not be read (H = 0)."""

    path: Path
    width: int
    height: int
    hands: list[dict[str, Any]] = field(default_factory=list)  # box, side, score, landmarks, world (numpy)
    readable: bool = True

    @property
    def world(self) -> np.ndarray:
        return np.stack([h["world"] for h in self.hands]) if self.hands else np.zeros((0, 21, 3))


def read_rgb(path: Path) -> np.ndarray | None:
    """The image as H×W×3 uint8 RGB, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:
        return None


def detect_hands(files: Sequence[Path], detector: HandDetector, progress: str | None = None) -> list[ImageHands]:
    """The hands in each image (one :class:`ImageHands` per file, unreadable files with ``readable=False``)."""
    from humanfix.evaluate.fid import _progress

    out = []
    with _progress(progress, len(files)) as advance:
        for f in files:
            rgb = read_rgb(f)
            if rgb is None:
                out.append(ImageHands(Path(f), 0, 0, [], readable=False))
            else:
                out.append(ImageHands(Path(f), rgb.shape[1], rgb.shape[0], detector(rgb)))
            advance(1)
    return out


def hand_crops(images: Sequence[ImageHands], margin: float = 0.2) -> list[np.ndarray]:
    """Every detected hand as a square H×W×3 uint8 crop (its landmarks' box, ``margin`` added on each side)."""
    from humanfix.evaluate.faces import square_box

    crops = []
    for im in images:
        if not im.hands:
            continue
        rgb = read_rgb(im.path)
        if rgb is None:
            continue
        for h in im.hands:
            x0, y0, x1, y1 = square_box(h["box"], margin, im.width, im.height)
            if x1 - x0 >= 8 and y1 - y0 >= 8:
                crops.append(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    return crops


# -- wrists of the pose stage: is there a hand where a hand should be? ---------------------------------------

WRIST_CROP = 1.0  # the crop around a wrist: this many forearm lengths on each side (at least MIN_WRIST_CROP px)
MIN_WRIST_CROP = 24
WRIST_UPSCALE = 256  # crops are resized to this many pixels a side before detection (hands of 15-40 px)
COCO_WRISTS = ((7, 9), (8, 10))  # (elbow, wrist) in COCO-17, left and right


def wrist_crops(poses: Any, keypoint_threshold: float) -> list[tuple[int, int, int, int]]:
    """Square boxes (x0 y0 x1 y1, clipped) around each wrist the pose stage found in one image."""
    boxes = []
    for person in poses.keypoints:
        for elbow, wrist in COCO_WRISTS:
            if person[wrist, 2] < keypoint_threshold or person[wrist, 2] <= 0:  # counts from the threshold on
                continue
            wx, wy = person[wrist, :2]
            half = MIN_WRIST_CROP
            if person[elbow, 2] >= keypoint_threshold and person[elbow, 2] > 0:
                half = max(half, WRIST_CROP * float(np.hypot(*(person[wrist, :2] - person[elbow, :2]))))
            box = (int(wx - half), int(wy - half), int(wx + half), int(wy + half))
            x0, y0 = max(box[0], 0), max(box[1], 0)
            x1, y1 = min(box[2], poses.width), min(box[3], poses.height)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                boxes.append((x0, y0, x1, y1))
    return boxes


def expected_hands(poses: Sequence[Any], detector: HandDetector, keypoint_threshold: float) -> np.ndarray:
    """Per image (wrists found by the pose stage, wrists whose upscaled crop holds a detected hand): N×2."""
    from PIL import Image

    rows = np.zeros((len(poses), 2))
    for row, im in zip(rows, poses, strict=True):
        boxes = wrist_crops(im, keypoint_threshold)
        if not boxes:
            continue
        rgb = read_rgb(im.path)
        if rgb is None:
            continue
        hits = 0
        for x0, y0, x1, y1 in boxes:
            crop = Image.fromarray(rgb[y0:y1, x0:x1]).resize((WRIST_UPSCALE, WRIST_UPSCALE), Image.BICUBIC)
            hits += bool(detector(np.asarray(crop)))
        row[:] = (len(boxes), hits)
    return rows


# -- the metrics of one image set ------------------------------------------------------------------------------

KEYS = ("hands_per_image", "hand_conf", "plausible_rate", "plausibility")


def summarize(
    images: Sequence[ImageHands], resamples: int = 1000, seed: int = 0, wrists: np.ndarray | None = None
) -> tuple[dict[str, Any], list[list[Verdict]]]:
    """The hand metrics of one set, and each image's verdicts (one per hand, in detection order).

    - ``hands_per_image``: detected hands / readable images;
    - ``hand_conf``: the mean of the detected hands' scores (MediaPipe's handedness score, Hand1000's HAND-CONF);
    - ``plausible_rate``: hands scoring >= ``PLAUSIBLE`` / hands with a score; ``plausibility``: their mean score;
    - ``expected_hand_rate`` (with ``wrists``, N×2 from :func:`expected_hands`): wrists whose crop holds a hand
      / wrists found by the pose stage.

    Each comes with a 95% bootstrap interval (``*_interval``): the images are resampled with replacement
    ``resamples`` times (hands stay with their image), as for poses. Undefined numbers are None.
    """
    readable = [im for im in images if im.readable]
    verdicts = [judge(im.world) if im.hands else [] for im in images]
    # per image: readable, hands, summed score, scored hands, plausible hands, summed plausibility, wrists, hits
    rows = np.zeros((len(images), 8))
    failed: dict[str, int] = {}
    for row, im, vs in zip(rows, images, verdicts, strict=True):
        scores = np.array([v.score for v in vs], dtype=np.float64)
        scored = scores[~np.isnan(scores)]
        conf = sum(h["score"] for h in im.hands)
        row[:6] = (im.readable, len(im.hands), conf, len(scored), (scored >= PLAUSIBLE).sum(), scored.sum())
        for v in vs:
            for name in v.failed:
                failed[name] = failed.get(name, 0) + 1
    if wrists is not None:
        rows[:, 6:] = wrists
    stats = _ratios(rows.sum(axis=0)[None])[0]
    out: dict[str, Any] = {
        "n_images": len(images),
        "n_unreadable": len(images) - len(readable),
        "n_with_hand": int((rows[:, 1] > 0).sum()),
        "n_hands": int(rows[:, 1].sum()),
        "n_scored": int(rows[:, 3].sum()),
        "n_plausible": int(rows[:, 4].sum()),
    }
    keys = KEYS + (("expected_hand_rate",) if wrists is not None else ())
    intervals = _bootstrap(rows, resamples, seed) if resamples and len(images) else [None] * 5
    for key, value, interval in zip(keys, stats, intervals, strict=False):
        out[key] = None if math.isnan(value) else float(value)
        if resamples:
            out[f"{key}_interval"] = interval
    if wrists is not None:
        out["n_wrists"], out["n_wrists_with_hand"] = int(rows[:, 6].sum()), int(rows[:, 7].sum())
    out["failed_checks"] = dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0])))
    return out, verdicts


def _ratios(sums: np.ndarray) -> np.ndarray:
    """R×8 column sums -> R×5 (hands per image, confidence, plausible rate, plausibility, expected hand rate)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [sums[:, 1] / sums[:, 0], sums[:, 2] / sums[:, 1], sums[:, 4] / sums[:, 3], sums[:, 5] / sums[:, 3],
             sums[:, 7] / sums[:, 6]],
            axis=1,
        )  # fmt: skip


def _bootstrap(rows: np.ndarray, resamples: int, seed: int) -> list[list[float] | None]:
    """Percentile intervals of the five statistics over ``resamples`` resamples of the images."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    reps = []
    for start in range(0, resamples, 100):
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(100, resamples - start))
        reps.append(_ratios(counts @ rows))
    out: list[list[float] | None] = []
    for column in np.concatenate(reps).T:
        finite = column[~np.isnan(column)]
        out.append([float(x) for x in np.percentile(finite, [2.5, 97.5])] if len(finite) else None)
    return out


def hand_json(hand: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """One hand of hands.jsonl: box, side, score, landmarks (21×3: x, y px, relative depth), world (21×3 m)."""
    score = None if verdict.score != verdict.score else round(verdict.score, 4)
    return {
        "box": [round(v, 1) for v in hand["box"]],
        "side": hand["side"],
        "score": round(hand["score"], 4),
        "landmarks": [[round(float(a), 2), round(float(b), 2), round(float(c), 2)] for a, b, c in hand["landmarks"]],
        "world": [[round(float(a), 5), round(float(b), 5), round(float(c), 5)] for a, b, c in hand["world"]],
        "plausibility": score,
        "failed": verdict.failed,
    }
