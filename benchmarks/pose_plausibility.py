"""How often does `pose_plausibility` pass real poses, and catch broken ones, from every viewpoint?

1. Synthetic 3D bodies (segment lengths drawn around Drillis & Contini's fractions with a 5% spread per
   segment, shoulder and hip keypoint widths over the range COCO annotations show), in five kinds of
   pose and view, one table row each:
   - standing (arms mostly down, knees nearly straight) seen from elevation 0°, 10°, … 80° above, any
     azimuth: from high up every bone along the body shortens and only the shoulder line keeps its length;
   - seated (hips and knees flexed ~90°: the thighs point at a frontal camera), elevation 0–60°;
   - lying (on the back, side or front, straight or in any pose), seen from 0–80° above;
   - half bodies: legs out of frame (no knees or ankles; hips out of frame half the time), arms anywhere,
     or both reaching toward the camera;
   - limbs toward the camera: a standing body with one or both arms pointing at the camera;
   - any pose, any view: joints anywhere in their ranges of motion, upright, lying or at any rotation.
   Each is seen through a perspective camera (1.5-8 statures away; half bodies 1.5-4), with COCO-sized
   keypoint noise (1× and 2× the annotators' per-keypoint spread) and 10% of the keypoints dropped.
   Every one is a pose a body can make, so every flag is a false alarm.
2. The same bodies, corrupted in 3D and seen with the same noise, must be flagged:
   - left forearm ×3 (where that forearm shows >= 0.7 of its length: a forearm pointing at the camera
     can be any length, no 2D score sees it), left shin ×2 (same rule);
   - hips swapped (their labels exchanged), on views within 45° of the pelvis's front;
   - head below the hips (the face moved down the spine by twice its length);
   - 17 points thrown uniformly into the person's box.
3. Real: the ground-truth keypoints of a COCO-format file (the OCHuman sample by default), and the same
   corruptions in 2D.

    .venv/bin/python benchmarks/pose_plausibility.py [--n 1000] [--keypoints PERSON_KEYPOINTS_JSON]
    .venv/bin/python benchmarks/pose_plausibility.py --thresholds    # the table of limits docs/evaluate.md shows

The synthetic poses share the scorer's proportions table (with spread), so they test the geometry
(foreshortening, perspective, noise), not the table; the real rows test the table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from humanfix.evaluate import pose as P
from humanfix.evaluate.pose import FOREARM, HEAD_AND_NECK, PLAUSIBLE, SHANK, THIGH, TORSO_SIDE, UPPER_ARM, K, judge

COCO_SIGMAS = np.array(P.COCO_SIGMAS)
OCHUMAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ochuman-sample" / "person_keypoints.json"
FACE = [K["nose"], K["left_eye"], K["right_eye"], K["left_ear"], K["right_ear"]]
LEGS = [K["left_knee"], K["right_knee"], K["left_ankle"], K["right_ankle"]]
SHOWS = 0.7  # a lengthened bone counts where it shows at least this fraction of its length
FRONTAL = 45.0  # hips swapped counts on views within this angle of the pelvis's front
GOALS = {  # the goals at 1× COCO noise: (column, at least / at most, value)
    "real 1×": (">=", 0.97),
    "forearm ×3 caught": (">=", 0.8),
    "shin ×2 caught": (">=", 0.8),
    "hips swapped caught": (">=", 0.7),
    "head below hips caught": (">=", 0.9),
    "random points plausible": ("<=", 0.25),
}


def rot(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def random_perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    v = rng.standard_normal(3)
    v -= (v @ d) * d
    return v / np.linalg.norm(v)


def cone(rng: np.random.Generator, d: np.ndarray, deg: float) -> np.ndarray:
    """A unit direction within ``deg`` of the unit vector ``d``."""
    return rot(random_perpendicular(rng, d), rng.uniform(0, deg)) @ d


def body_3d(rng: np.random.Generator, kind: str = "any", toward: np.ndarray | None = None, arms: int = 0) -> np.ndarray:
    """One body, 17×3, stature 1; x = the person's left, y = up, z = forward (pelvis frame).

    ``kind``: ``any`` (joints anywhere in their ranges), ``standing`` or ``seated``. ``toward``: the
    direction to the camera in the pelvis frame; the first ``arms`` arms (1 or 2, left first, in random
    order) point within 25° of it, nearly straight.
    """
    u = rng.uniform

    def seg(fraction: float) -> float:
        return fraction * (1 + 0.05 * rng.standard_normal())

    p = np.zeros((17, 3))
    hip_w, sho_w = u(0.08, 0.12), u(0.20, 0.26)  # keypoint widths as COCO annotations show them
    p[K["left_hip"]], p[K["right_hip"]] = [hip_w / 2, 0, 0], [-hip_w / 2, 0, 0]
    # torso: flexion (forward), lateral bend, then the shoulders' axial twist against the pelvis
    if kind == "any":
        flex, bend, twist = u(-20, 90), u(-30, 30), u(-45, 45)
    else:
        flex, bend, twist = u(-10, 25), u(-10, 10), u(-30, 30)
    spine_r = rot([1, 0, 0], flex) @ rot([0, 0, 1], bend)
    up = spine_r @ [0, 1, 0]
    neck = up * seg(TORSO_SIDE)
    sho_r = spine_r @ rot([0, 1, 0], twist)
    p[K["left_shoulder"]], p[K["right_shoulder"]] = neck + sho_r @ [sho_w / 2, 0, 0], neck - sho_r @ [sho_w / 2, 0, 0]
    # head: turn and nod against the shoulders
    turn, nod = (u(-80, 80), u(-40, 50)) if kind == "any" else (u(-60, 60), u(-20, 30))
    head_r = sho_r @ rot([0, 1, 0], turn) @ rot([1, 0, 0], nod)
    nose = neck + head_r @ np.array([0, 0.11, 0.09]) * (HEAD_AND_NECK / 0.182) * (1 + 0.05 * rng.standard_normal())
    p[K["nose"]] = nose
    for side, s in (("left", 1), ("right", -1)):
        p[K[f"{side}_eye"]] = nose + head_r @ [s * 0.019, 0.03, -0.02]  # pupils 63 mm apart at 1.70 m
        p[K[f"{side}_ear"]] = nose + head_r @ [s * 0.043, 0.02, -0.066]  # bitragion ~0.085 H, 0.08 H to the nose
    pointing = [side for side in ("left", "right")[:: 1 if u() < 0.5 else -1]][:arms] if toward is not None else []
    for side, s in (("left", 1), ("right", -1)):
        upper, fore = seg(UPPER_ARM), seg(FOREARM)
        if side in pointing:
            d1 = cone(rng, toward, 25)
            d2 = rot(random_perpendicular(rng, d1), u(0, 30)) @ d1
        else:
            if kind == "any":
                while True:  # anywhere but through the chest
                    d1 = rng.standard_normal(3)
                    d1 /= np.linalg.norm(d1)
                    local = sho_r.T @ d1
                    if not (s * local[0] < -0.5 and local[2] < 0.2 and local[1] > -0.8):
                        break
            else:  # hanging, within 35° of straight down, a little away from the body
                d1 = sho_r @ cone(rng, np.array([s * 0.2, -1, 0]) / np.hypot(0.2, 1), 35)
            d2 = rot(random_perpendicular(rng, d1), u(0, 150 if kind == "any" else 100)) @ d1
        elbow = p[K[f"{side}_shoulder"]] + upper * d1
        p[K[f"{side}_elbow"]], p[K[f"{side}_wrist"]] = elbow, elbow + fore * d2
        thigh, shank = seg(THIGH), seg(SHANK)
        flexion, abduction, knee = {
            "any": (u(-20, 120), u(-20, 45), u(0, 150)),
            "standing": (u(-10, 25), u(-5, 15), u(0, 30)),
            "seated": (u(70, 110), u(0, 25), u(60, 110)),
        }[kind]
        leg_r = rot([1, 0, 0], -flexion) @ rot([0, 0, 1], s * abduction) @ rot([0, 1, 0], u(-40, 40))
        kp = p[K[f"{side}_hip"]] + leg_r @ [0, -thigh, 0]
        knee_flex = rot(leg_r @ [1, 0, 0], knee)  # the shank folds backwards, in the thigh's plane
        p[K[f"{side}_knee"]], p[K[f"{side}_ankle"]] = kp, kp + knee_flex @ leg_r @ [0, -shank, 0]
    return p


@dataclass
class View:
    """One synthetic person: the 3D body, how it is seen, and its noisy 2D keypoints (17×3)."""

    body: np.ndarray  # 17×3, pelvis frame, stature 1
    r: np.ndarray  # pelvis frame -> camera frame
    distance: float  # camera distance, statures
    noise: np.ndarray  # 17×2 standard normal draws
    v: np.ndarray  # 17 visibilities (0 missing, 2 visible)
    sigma: np.ndarray = field(init=False)  # 17 per-keypoint noise SDs, pixels
    kp: np.ndarray = field(init=False)  # 17×3 keypoints with noise
    level: float = 1.0  # × COCO's noise

    def __post_init__(self) -> None:
        xy = self.project(self.body)
        seen = self.v > 0
        box = xy[seen].max(axis=0) - xy[seen].min(axis=0)
        scale = np.sqrt(max(0.5 * box[0] * box[1], (0.1 * box.max()) ** 2))  # ~ sqrt(segmentation area)
        self.sigma = COCO_SIGMAS * scale / np.sqrt(2) * self.level
        self.kp = self.keypoints(self.body)

    def center(self) -> np.ndarray:
        return self.body[self.v > 0].mean(axis=0)

    def project(self, body: np.ndarray) -> np.ndarray:
        world = (body - self.center()) @ self.r.T
        depth = self.distance - world[:, 2]  # the camera looks along -z from z = distance
        return np.stack([world[:, 0] / depth, -world[:, 1] / depth], axis=1) * 1000

    def keypoints(self, body: np.ndarray) -> np.ndarray:
        """``body`` (the view's body, or a corrupted copy) through this view, with the same noise."""
        xy = self.project(body) + self.noise * self.sigma[:, None]
        return np.concatenate([xy, self.v[:, None]], axis=1)

    def shows(self, a: str, b: str) -> float:
        """The fraction of bone a-b's length the image shows (1: parallel to the image plane)."""
        i, j = K[a], K[b]
        world = (self.body - self.center()) @ self.r.T
        depth = self.distance - world[[i, j], 2].mean()
        full = np.linalg.norm(self.body[i] - self.body[j]) * 1000 / depth
        xy = self.project(self.body)
        return float(np.linalg.norm(xy[i] - xy[j]) / full)

    def shows_spine(self) -> float:
        """The fraction of the spine's length (shoulders' to hips' midpoint) the image shows."""
        mid = np.array([(self.body[K["left_shoulder"]] + self.body[K["right_shoulder"]]) / 2,
                        (self.body[K["left_hip"]] + self.body[K["right_hip"]]) / 2])  # fmt: skip
        world = (mid - self.center()) @ self.r.T
        full = np.linalg.norm(mid[0] - mid[1]) * 1000 / (self.distance - world[:, 2].mean())
        depth = self.distance - world[:, 2]
        xy = np.stack([world[:, 0] / depth, -world[:, 1] / depth], axis=1) * 1000
        return float(np.linalg.norm(xy[0] - xy[1]) / full)

    def frontal(self) -> float:
        """Angle (degrees) between the pelvis's forward axis and the direction to the camera."""
        forward = self.r @ [0, 0, 1.0]
        world = (self.body - self.center()) @ self.r.T
        to_camera = np.array([0, 0, self.distance]) - world[[K["left_hip"], K["right_hip"]]].mean(axis=0)
        cos = forward @ to_camera / np.linalg.norm(to_camera)
        return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def seen_from(elevation: float, azimuth: float, roll: float = 0.0) -> np.ndarray:
    """Pelvis frame -> camera frame for a camera ``elevation`` degrees above the horizon, ``azimuth`` around."""
    return rot([0, 0, 1], roll) @ rot([1, 0, 0], elevation) @ rot([0, 1, 0], azimuth)


def any_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    return rot(q[:3], np.degrees(2 * np.arccos(abs(q[3]) / np.linalg.norm(q))))


def make_view(rng: np.random.Generator, category: str, level: float) -> View:
    """One synthetic person of a table row (``category``), seen with ``level`` × COCO's keypoint noise."""
    u = rng.uniform
    distance = u(1.5, 8.0)
    v = (u(size=17) > 0.1).astype(float) * 2
    if category.startswith("standing"):
        r = seen_from(float(category.split()[-1].rstrip("°")) + u(-2.5, 2.5), u(0, 360), u(-10, 10))
        body = body_3d(rng, "standing")
    elif category == "seated":
        r = seen_from(u(0, 60), u(0, 360), u(-10, 10))
        body = body_3d(rng, "seated")
    elif category == "lying":  # turned about its long axis (back, side, front), laid flat, seen from above
        r = seen_from(u(0, 80), u(0, 360)) @ rot([1, 0, 0], -90) @ rot([0, 1, 0], u(0, 360))
        body = body_3d(rng, "standing" if u() < 0.5 else "any")
    elif category.startswith("half body"):
        kind = "standing" if u() < 0.5 else "seated"
        toward = "toward" in category  # reaching toward the camera: facing it within 45°
        r = seen_from(u(0, 45), u(-45, 45) if toward else u(-60, 60) if u() < 0.8 else u(0, 360), u(-10, 10))
        toward = r.T @ [0, 0, 1.0] if toward else None
        body = body_3d(rng, kind if toward is None else "standing", toward, arms=2)
        v[LEGS] = 0
        if u() < 0.5:
            v[[K["left_hip"], K["right_hip"]]] = 0
        distance = u(1.5, 4.0)
    elif category == "limbs toward the camera":
        r = seen_from(u(0, 45), u(-45, 45), u(-10, 10))
        body = body_3d(rng, "standing", r.T @ [0, 0, 1.0], arms=1 if u() < 0.5 else 2)
    else:  # any pose, any view: upright turned any way, lying, or any rotation
        kind = u()
        if kind < 0.7:
            r = seen_from(u(-15, 15), u(0, 360), u(-15, 15))
        elif kind < 0.85:
            r = seen_from(u(-20, 20), u(0, 360)) @ rot([1, 0, 0], -90) @ rot([0, 1, 0], u(0, 360))
        else:
            r = any_rotation(rng)
        body = body_3d(rng, "any")
    view = View(body, r, distance, rng.standard_normal((17, 2)), v, level)
    world = (body - view.center()) @ r.T
    head_fwd = r @ (body[K["nose"]] - (body[K["left_ear"]] + body[K["right_ear"]]) / 2)
    if head_fwd[2] < 0 or (world[:, 2] >= distance - 0.05).any():  # the face looks away: no nose or eyes
        view.v[[K["nose"], K["left_eye"], K["right_eye"]]] = 0
        view.kp[:, 2] = view.v
    return view


# -- corruptions: 3D (seen through the same view, with the same noise), or 2D for real keypoints ------------


def stretched(view: View, joint: str, end: str, times: float) -> np.ndarray | None:
    """The bone joint -> end made ``times`` as long (in 3D), where it shows >= SHOWS of its length."""
    j, e = K[joint], K[end]
    if not (view.v[j] and view.v[e]) or view.shows(joint, end) < SHOWS:
        return None
    body = view.body.copy()
    body[e] = body[j] + times * (body[e] - body[j])
    return view.keypoints(body)


def hips_swapped_3d(view: View) -> np.ndarray | None:
    h = [K["left_hip"], K["right_hip"]]
    if not view.v[h].all() or view.frontal() > FRONTAL:
        return None
    kp = view.kp.copy()
    kp[h] = kp[h[::-1]]
    return kp


def head_below_hips_3d(view: View) -> np.ndarray | None:
    """The face moved down the spine by twice its length: the nose ends ~0.2 statures below the hips.

    Where the spine shows >= SHOWS of its length (a move along the line of sight shows as nothing)."""
    if not view.v[FACE].any() or view.shows_spine() < SHOWS:
        return None
    b = view.body
    spine = (b[K["left_hip"]] + b[K["right_hip"]] - b[K["left_shoulder"]] - b[K["right_shoulder"]]) / 2
    body = b.copy()
    body[FACE] += 2 * spine
    return view.keypoints(body)


def random_in_box(rng: np.random.Generator, view: View) -> np.ndarray:
    """17 points thrown uniformly into the box of the person's keypoints, all visible."""
    seen = view.kp[view.v > 0, :2]
    lo, hi = seen.min(axis=0), seen.max(axis=0)
    return np.concatenate([rng.uniform(lo, hi, (17, 2)), np.full((17, 1), 2.0)], axis=1)


def forearm_x3(p: np.ndarray) -> np.ndarray | None:  # as ../shared/acceptance/pose.py
    e, w = K["left_elbow"], K["left_wrist"]
    if not (p[e, 2] and p[w, 2]):
        return None
    q = p.copy()
    q[w, :2] = q[e, :2] + 3 * (q[w, :2] - q[e, :2])
    return q


def shin_x2(p: np.ndarray) -> np.ndarray | None:
    k, a = K["left_knee"], K["left_ankle"]
    if not (p[k, 2] and p[a, 2]):
        return None
    q = p.copy()
    q[a, :2] = q[k, :2] + 2 * (q[a, :2] - q[k, :2])
    return q


def wrist_across(p: np.ndarray) -> np.ndarray | None:  # as ../shared/acceptance/pose.py
    w, ls, rs = K["left_wrist"], K["left_shoulder"], K["right_shoulder"]
    if not (p[w, 2] and p[ls, 2] and p[rs, 2]):
        return None
    q = p.copy()
    q[w, :2] = q[rs, :2] + 2.5 * (q[rs, :2] - q[ls, :2])
    return q


def hips_swapped(p: np.ndarray) -> np.ndarray | None:
    """The hips' labels exchanged: hips that face the other way from the shoulders."""
    h = [K["left_hip"], K["right_hip"]]
    if not p[h, 2].all():
        return None
    q = p.copy()
    q[h] = q[h[::-1]]
    return q


def head_below_hips(p: np.ndarray) -> np.ndarray | None:
    """The face moved down the spine by twice the neck-to-pelvis vector."""
    body = [K["left_shoulder"], K["right_shoulder"], K["left_hip"], K["right_hip"]]
    if not p[body, 2].all() or not p[FACE, 2].any():
        return None
    q = p.copy()
    q[FACE, :2] += 2 * (q[body[2:], :2].mean(axis=0) - q[body[:2], :2].mean(axis=0))
    return q


REAL_CORRUPTIONS = {
    "forearm x3": forearm_x3,
    "shin x2": shin_x2,
    "wrist across the body": wrist_across,
    "hips swapped": hips_swapped,
    "head below the hips": head_below_hips,
}

CATEGORIES = (
    *(f"standing, elevation {e}°" for e in range(0, 90, 10)),
    "seated",
    "lying",
    "half body",
    "half body, arms toward the camera",
    "limbs toward the camera",
    "any pose, any view",
)


def plausible(people: list[np.ndarray]) -> tuple[float, int]:
    """Plausible rate over the scored persons, and how many were scored."""
    if not people:
        return float("nan"), 0
    scores = np.array([v.score for v in judge(np.array(people))])
    scored = scores[~np.isnan(scores)]
    return (float(np.mean(scored >= PLAUSIBLE)) if len(scored) else float("nan")), len(scored)


def row(rng: np.random.Generator, category: str, n: int) -> dict[str, tuple[float, int]]:
    """One table row: the rates of ``n`` bodies of ``category`` and of their corrupted copies."""
    views = [make_view(rng, category, 1.0) for _ in range(n)]
    noisy = [make_view(rng, category, 2.0) for _ in range(n)]
    out = {"real 1×": plausible([w.kp for w in views]), "real 2×": plausible([w.kp for w in noisy])}
    corrupted = {
        "forearm ×3 caught": [stretched(w, "left_elbow", "left_wrist", 3) for w in views],
        "shin ×2 caught": [stretched(w, "left_knee", "left_ankle", 2) for w in views],
        "hips swapped caught": [hips_swapped_3d(w) for w in views],
        "head below hips caught": [head_below_hips_3d(w) for w in views],
    }
    for name, kps in corrupted.items():
        rate, m = plausible([k for k in kps if k is not None])
        out[name] = (1 - rate, m)
    shoulders = [k for k in corrupted["hips swapped caught"] if k is not None and k[[5, 6], 2].all()]
    rate, m = plausible(shoulders)
    out["hips swapped caught, both shoulders seen"] = (1 - rate, m)
    out["random points plausible"] = plausible([random_in_box(rng, w) for w in views])
    return out


def table(rows: dict[str, dict[str, tuple[float, int]]]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| view | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    goal = ["| **goal** (1× noise) |"] + [f" {GOALS[c][0]} {GOALS[c][1]:g} |" if c in GOALS else " |" for c in columns]
    lines.append("".join(goal))
    for name, r in rows.items():
        cells = []
        for c in columns:
            rate, m = r[c]
            cells.append("–" if m == 0 else f"{rate:.3f} ({m})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shortfalls(rows: dict[str, dict[str, tuple[float, int]]]) -> list[str]:
    """The cells that miss their goal: real bodies in every row but 80° of elevation (the goal stops at
    70°), random points in every row, the corruptions over all rows together."""
    out = []
    for name, r in rows.items():
        for column, (op, goal) in GOALS.items():
            rate, m = r[column]
            if column == "real 1×" and name == "standing, elevation 80°":
                continue
            if column.endswith("caught") and name != "all rows together":
                continue
            if m and not (rate >= goal if op == ">=" else rate <= goal):
                out.append(f"{name}: {column} {rate:.3f} (goal {op} {goal:g}, n={m})")
    return out


def report_real(path: Path) -> None:
    ann = json.loads(path.read_text())["annotations"]
    people = [np.array(a["keypoints"], float).reshape(17, 3) for a in ann]
    rate, n = plausible(people)
    print(f"\nreal ground truth ({path.name}): real poses plausible {rate:.3f} (n={n} of {len(people)})")
    for name, corrupt in REAL_CORRUPTIONS.items():
        bad = [q for q in (corrupt(p) for p in people) if q is not None]
        rb, nb = plausible(bad)
        print(f"   {name:<24} still plausible {rb:.3f} (n={nb})")


def thresholds() -> None:
    """Every length check: its fraction of stature, its tolerance, and the largest 2D length it allows."""
    print("| check | fraction of stature | tolerance | allowed: fraction × tolerance × scale |")
    print("|---|---|---|---|")
    rows = [(s.name, s.fraction, s.tolerance) for s in P.SEGMENTS if s.judged]
    rows += [("head off the shoulders", P.HEAD_AND_NECK, P.HEAD_OFF_TOLERANCE)]
    rows += [("face too large", P.HEAD_HEIGHT, P.FACE_TOLERANCE)]
    for name, fraction, tol in rows:
        print(f"| {name} | {fraction:.3f} | {tol:.2f} | {fraction * tol:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="synthetic bodies per row (and noise level)")
    ap.add_argument("--keypoints", type=Path, default=OCHUMAN, help="a COCO person_keypoints JSON")
    ap.add_argument("--rows", nargs="*", default=None, help="only these rows (names as in the table)")
    ap.add_argument("--thresholds", action="store_true", help="print the length limits and stop")
    args = ap.parse_args()
    if args.thresholds:
        thresholds()
        return
    start = time.perf_counter()
    rows = {}
    for i, category in enumerate(CATEGORIES):
        if args.rows and category not in args.rows:
            continue
        rows[category] = row(np.random.default_rng(i), category, args.n)  # each row seeded on its own
    if len(rows) > 1:
        rows["all rows together"] = {
            c: (sum(r[c][0] * r[c][1] for r in rows.values() if r[c][1]) / max(sum(r[c][1] for r in rows.values()), 1),
                sum(r[c][1] for r in rows.values()))
            for c in next(iter(rows.values()))
        }  # fmt: skip
    print(f"{args.n} synthetic bodies per row; rate (persons scored); corruptions at 1× COCO noise")
    print(table(rows))
    missed = shortfalls(rows)
    print("goals met" if not missed else "short of the goal:\n  " + "\n  ".join(missed))
    if args.keypoints.is_file():
        report_real(args.keypoints)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
