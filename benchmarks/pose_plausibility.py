"""How often does `pose_plausibility` pass real poses, and catch broken ones? Synthetic 3D bodies + real ones.

1. Synthetic: random 3D skeletons (segment lengths drawn around Drillis & Contini's fractions with 5% spread
   per segment, shoulder and hip keypoint widths drawn from the range COCO annotations show, joint angles
   anywhere in the usual ranges of motion: spine flexion/bend/twist, head turn, arms anywhere, hips and
   knees flexed), posed upright, lying or at any rotation, seen from any direction through a perspective
   camera at 1.5-8 statures, with COCO-sized keypoint noise (1× and 2× the annotators' per-keypoint
   spread) and 10% of the keypoints dropped. Every one is a pose a body can make, so every flag is a false
   alarm. The same skeletons, corrupted, must be flagged.
2. A floor: 17 points thrown uniformly into a square. Whatever passes here passes because no length or
   turn rules it out (it could be a large body with most parts pointing at the camera).
3. Real: the ground-truth keypoints of a COCO-format file (the OCHuman sample by default) and the same
   corruptions.

    .venv/bin/python benchmarks/pose_plausibility.py [--n 4000] [--keypoints PERSON_KEYPOINTS_JSON]
    .venv/bin/python benchmarks/pose_plausibility.py --thresholds    # the table of limits docs/evaluate.md shows

The synthetic poses share the scorer's proportions table (with spread), so they test the geometry
(foreshortening, perspective, noise), not the table; the real rows test the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from humanfix.evaluate import pose as P
from humanfix.evaluate.pose import FOREARM, HEAD_AND_NECK, PLAUSIBLE, SHANK, THIGH, TORSO_SIDE, UPPER_ARM, K, judge

COCO_SIGMAS = np.array(P.COCO_SIGMAS)
OCHUMAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ochuman-sample" / "person_keypoints.json"


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


def body_3d(rng: np.random.Generator) -> np.ndarray:
    """One random body, 17×3, stature 1; x = the person's left, y = up, z = forward (pelvis frame)."""
    u = rng.uniform

    def seg(fraction: float) -> float:
        return fraction * (1 + 0.05 * rng.standard_normal())

    p = np.zeros((17, 3))
    hip_w, sho_w = u(0.08, 0.12), u(0.20, 0.26)  # keypoint widths as COCO annotations show them
    p[K["left_hip"]], p[K["right_hip"]] = [hip_w / 2, 0, 0], [-hip_w / 2, 0, 0]
    # torso: flexion (forward), lateral bend, then the shoulders' axial twist against the pelvis
    spine_r = rot([1, 0, 0], u(-20, 90)) @ rot([0, 0, 1], u(-30, 30))
    up = spine_r @ [0, 1, 0]
    neck = up * seg(TORSO_SIDE)
    sho_r = spine_r @ rot([0, 1, 0], u(-45, 45))
    p[K["left_shoulder"]], p[K["right_shoulder"]] = neck + sho_r @ [sho_w / 2, 0, 0], neck - sho_r @ [sho_w / 2, 0, 0]
    # head: turn and nod against the shoulders
    head_r = sho_r @ rot([0, 1, 0], u(-80, 80)) @ rot([1, 0, 0], u(-40, 50))
    nose = neck + head_r @ np.array([0, 0.11, 0.09]) * (HEAD_AND_NECK / 0.182) * (1 + 0.05 * rng.standard_normal())
    p[K["nose"]] = nose
    for side, s in (("left", 1), ("right", -1)):
        p[K[f"{side}_eye"]] = nose + head_r @ [s * 0.019, 0.03, -0.02]  # pupils 63 mm apart at 1.70 m
        p[K[f"{side}_ear"]] = nose + head_r @ [s * 0.043, 0.02, -0.10]  # bitragion ~0.085 H
    for side, s in (("left", 1), ("right", -1)):
        upper, fore = seg(UPPER_ARM), seg(FOREARM)
        while True:  # anywhere but through the chest
            d1 = rng.standard_normal(3)
            d1 /= np.linalg.norm(d1)
            local = sho_r.T @ d1
            if not (s * local[0] < -0.5 and local[2] < 0.2 and local[1] > -0.8):
                break
        elbow = p[K[f"{side}_shoulder"]] + upper * d1
        d2 = rot(random_perpendicular(rng, d1), u(0, 150)) @ d1
        p[K[f"{side}_elbow"]], p[K[f"{side}_wrist"]] = elbow, elbow + fore * d2
        thigh, shank = seg(THIGH), seg(SHANK)
        leg_r = rot([1, 0, 0], -u(-20, 120)) @ rot([0, 0, 1], s * u(-20, 45)) @ rot([0, 1, 0], u(-40, 40))
        knee = p[K[f"{side}_hip"]] + leg_r @ [0, -thigh, 0]
        knee_flex = rot(leg_r @ [1, 0, 0], u(0, 150))  # the shank folds backwards, in the thigh's plane
        p[K[f"{side}_knee"]], p[K[f"{side}_ankle"]] = knee, knee + knee_flex @ leg_r @ [0, -shank, 0]
    return p


def view(rng: np.random.Generator, body: np.ndarray, noise: float) -> np.ndarray:
    """Pose the body (upright, lying or anyhow), project it through a perspective camera; 17×3 with v."""
    kind = rng.uniform()
    if kind < 0.7:  # upright, turned any way
        r = (
            rot([0, 1, 0], rng.uniform(0, 360))
            @ rot([1, 0, 0], rng.uniform(-15, 15))
            @ rot([0, 0, 1], rng.uniform(-15, 15))
        )
    elif kind < 0.85:  # lying
        r = (
            rot([0, 1, 0], rng.uniform(0, 360))
            @ rot([1, 0, 0], 90 + rng.uniform(-20, 20))
            @ rot([0, 1, 0], rng.uniform(0, 360))
        )
    else:  # any rotation
        q = rng.standard_normal(4)
        r = rot(q[:3], np.degrees(2 * np.arccos(abs(q[3]) / np.linalg.norm(q))))
    world = (body - body.mean(axis=0)) @ r.T
    distance = rng.uniform(1.5, 8.0)
    depth = distance - world[:, 2]  # the camera looks along -z from z = distance
    xy = np.stack([world[:, 0] / depth, -world[:, 1] / depth], axis=1) * 1000
    box = xy.max(axis=0) - xy.min(axis=0)
    scale = np.sqrt(max(0.5 * box[0] * box[1], (0.1 * box.max()) ** 2))  # ~ sqrt(segmentation area)
    xy = xy + rng.standard_normal(xy.shape) * (COCO_SIGMAS * scale / np.sqrt(2) * noise)[:, None]
    v = (rng.uniform(size=17) > 0.1).astype(float) * 2
    head_fwd = r @ (body[K["nose"]] - (body[K["left_ear"]] + body[K["right_ear"]]) / 2)
    if head_fwd[2] < 0:  # the face looks away: no nose or eyes
        v[[K["nose"], K["left_eye"], K["right_eye"]]] = 0
    return np.concatenate([xy, v[:, None]], axis=1)


# -- corruptions: each returns a corrupted copy, or None where it does not apply ---------------------------


def forearm_x3(p: np.ndarray) -> np.ndarray | None:  # as ../shared/acceptance/pose.py
    e, w = K["left_elbow"], K["left_wrist"]
    if not (p[e, 2] and p[w, 2]):
        return None
    q = p.copy()
    q[w, :2] = q[e, :2] + 3 * (q[w, :2] - q[e, :2])
    return q


def wrist_across(p: np.ndarray) -> np.ndarray | None:  # as ../shared/acceptance/pose.py
    w, ls, rs = K["left_wrist"], K["left_shoulder"], K["right_shoulder"]
    if not (p[w, 2] and p[ls, 2] and p[rs, 2]):
        return None
    q = p.copy()
    q[w, :2] = q[rs, :2] + 2.5 * (q[rs, :2] - q[ls, :2])
    return q


def stretch_x2(root: str, joint: str, end: str):
    """A corruption doubling the limb root -> joint -> end away from its root (None where root or joint is missing)."""

    def corrupt(p: np.ndarray) -> np.ndarray | None:
        r, j, e = K[root], K[joint], K[end]
        if not (p[r, 2] and p[j, 2]):
            return None
        q = p.copy()
        for i in (j, e):
            q[i, :2] = q[r, :2] + 2 * (q[i, :2] - q[r, :2])
        return q

    return corrupt


def torso_x2(p: np.ndarray) -> np.ndarray | None:
    sh, hp = [K["left_shoulder"], K["right_shoulder"]], [K["left_hip"], K["right_hip"]]
    if not (p[sh + hp, 2].all()):
        return None
    q = p.copy()
    shift = q[hp, :2].mean(axis=0) - q[sh, :2].mean(axis=0)
    for i in (K["left_hip"], K["right_hip"], K["left_knee"], K["right_knee"], K["left_ankle"], K["right_ankle"]):
        q[i, :2] += shift  # the hips (and legs) one more torso length away
    return q


def head_turned_around(p: np.ndarray) -> np.ndarray | None:
    """The face mirrored left-right about its own centre: a face looking out of the other side of the body."""
    face = [K["nose"], K["left_eye"], K["right_eye"], K["left_ear"], K["right_ear"]]
    if not (p[[K["left_eye"], K["right_eye"]], 2].all()):
        return None
    q = p.copy()
    present = [i for i in face if p[i, 2]]
    c = q[present, :2].mean(axis=0)
    axis = q[K["left_eye"], :2] - q[K["right_eye"], :2]
    axis /= np.linalg.norm(axis) + 1e-12
    for i in present:
        d = q[i, :2] - c
        q[i, :2] = c + d - 2 * (d @ axis) * axis
    return q


def hips_swapped(p: np.ndarray) -> np.ndarray | None:
    """The hips' labels exchanged: hips that face the other way from the shoulders."""
    h = [K["left_hip"], K["right_hip"]]
    if not p[h, 2].all():
        return None
    q = p.copy()
    q[h] = q[h[::-1]]
    return q


def shoulders_along_the_spine(p: np.ndarray) -> np.ndarray | None:
    """Shoulders and arms turned 90° in the image about the shoulders' midpoint."""
    arm = [K[f"{s}_{j}"] for s in ("left", "right") for j in ("shoulder", "elbow", "wrist")]
    if not p[[K["left_shoulder"], K["right_shoulder"], K["left_hip"], K["right_hip"]], 2].all():
        return None
    q = p.copy()
    neck = (q[K["left_shoulder"], :2] + q[K["right_shoulder"], :2]) / 2
    d = q[arm, :2] - neck
    q[arm, :2] = neck + np.stack([-d[:, 1], d[:, 0]], axis=1)
    return q


CORRUPTIONS = {
    "forearm x3": forearm_x3,
    "wrist across the body": wrist_across,
    "arm x2": stretch_x2("right_shoulder", "right_elbow", "right_wrist"),
    "leg x2": stretch_x2("left_hip", "left_knee", "left_ankle"),
    "torso x2": torso_x2,
    "head turned around": head_turned_around,
    "hips swapped": hips_swapped,
    "shoulders along the spine": shoulders_along_the_spine,
}


def rates(people: list[np.ndarray]) -> tuple[float, int, int]:
    """Plausible rate over the scored persons, how many were scored, how many were given."""
    scores = np.array([v.score for v in judge(np.array(people))]) if people else np.zeros(0)
    scored = scores[~np.isnan(scores)]
    return (float(np.mean(scored >= PLAUSIBLE)) if len(scored) else float("nan")), len(scored), len(people)


def report(title: str, people: list[np.ndarray]) -> None:
    r, n, given = rates(people)
    print(f"{title}: real poses plausible {r:.3f} (n={n} of {given})")
    for name, corrupt in CORRUPTIONS.items():
        bad = [q for q in (corrupt(p) for p in people) if q is not None]
        rb, nb, _ = rates(bad)
        print(f"   {name:<26} still plausible {rb:.3f} (n={nb})")


def thresholds() -> None:
    """Every length check: its fraction of stature, its tolerance, and the largest 2D length it allows."""
    print("| check | fraction of stature | tolerance | allowed: fraction × tolerance × scale |")
    print("|---|---|---|---|")
    rows = [(s.name, s.fraction, s.tolerance) for s in P.SEGMENTS]
    rows += [("head off the shoulders", P.HEAD_AND_NECK, P.HEAD_OFF_TOLERANCE)]
    rows += [("face too large", P.HEAD_HEIGHT, P.FACE_TOLERANCE)]
    for name, fraction, tol in rows:
        print(f"| {name} | {fraction:.3f} | {tol:.2f} | {fraction * tol:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="synthetic bodies per noise level")
    ap.add_argument("--keypoints", type=Path, default=OCHUMAN, help="a COCO person_keypoints JSON")
    ap.add_argument("--thresholds", action="store_true", help="print the length limits and stop")
    args = ap.parse_args()
    if args.thresholds:
        thresholds()
        return
    rng = np.random.default_rng(0)
    for noise in (1.0, 2.0):
        people = [view(rng, body_3d(rng), noise) for _ in range(args.n)]
        report(f"synthetic, keypoint noise {noise:g}× COCO annotators'", people)
    scatter = np.concatenate([rng.uniform(0, 100, (args.n, 17, 2)), np.full((args.n, 17, 1), 2.0)], axis=2)
    print(f"17 points thrown uniformly into a square: plausible {rates(list(scatter))[0]:.3f} (n={args.n})")
    if args.keypoints.is_file():
        ann = json.loads(args.keypoints.read_text())["annotations"]
        people = [np.array(a["keypoints"], float).reshape(17, 3) for a in ann]
        report(f"real ground truth ({args.keypoints.name})", people)


if __name__ == "__main__":
    main()
