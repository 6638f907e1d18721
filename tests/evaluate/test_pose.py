"""The plausibility score: real poses pass, broken copies of them do not, and the per-set metrics add up.

Rates on the OCHuman sample's 5 annotated persons (ground truth, COCO keypoints), as this test asserts them:
real 5/5 plausible; left forearm ×3 1/5 still plausible (that forearm points at the camera: 0.2 of its
length shows, so tripled it still fits); left wrist moved to the far side of the body 0/5; legs ×2 0/5;
hips' labels swapped (left <-> right) 1/5; the face mirrored onto a body that faces the other way 0/2.
``benchmarks/pose_plausibility.py`` gives the same on thousands of synthetic views.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from humanfix.evaluate.persons import ImagePoses
from humanfix.evaluate.pose import (
    CHECKS,
    KEYPOINTS,
    MIN_BODY_KEYPOINTS,
    PLAUSIBLE,
    judge,
    pose_plausibility,
    summarize,
)

K = {"nose": 0, "l_eye": 1, "r_eye": 2, "l_sho": 5, "r_sho": 6, "l_elb": 7, "l_wri": 9, "l_hip": 11, "r_hip": 12,
     "l_knee": 13, "l_ank": 15}  # fmt: skip


@pytest.fixture
def real_keypoints(ochuman) -> np.ndarray:
    """The sample's annotated persons, P×17×3 (x, y, v)."""
    ann = json.loads((ochuman / "person_keypoints.json").read_text())["annotations"]
    return np.array([a["keypoints"] for a in ann], dtype=np.float64).reshape(-1, 17, 3)


def _rate(scores: np.ndarray) -> float:
    scored = scores[~np.isnan(scores)]
    return float(np.mean(scored >= PLAUSIBLE))


def _forearm_x3(p):
    p[K["l_wri"], :2] = p[K["l_elb"], :2] + 3 * (p[K["l_wri"], :2] - p[K["l_elb"], :2])


def _wrist_across(p):
    p[K["l_wri"], :2] = p[K["r_sho"], :2] + 2.5 * (p[K["r_sho"], :2] - p[K["l_sho"], :2])


def _leg_x2(p):
    for i in (K["l_knee"], K["l_ank"]):
        p[i, :2] = p[K["l_hip"], :2] + 2 * (p[i, :2] - p[K["l_hip"], :2])


def _hips_swapped(p):
    p[[K["l_hip"], K["r_hip"]]] = p[[K["r_hip"], K["l_hip"]]]


def _corrupt(kp: np.ndarray, how) -> np.ndarray:
    out = kp.copy()
    for p in out:
        how(p)
    return out


def test_real_poses_pass_and_broken_copies_do_not(real_keypoints):
    kp = real_keypoints
    assert len(kp) == 5 and (kp[:, :, 2] > 0).all(axis=0)[[5, 6, 7, 9, 11, 12, 13, 15]].all()
    real = pose_plausibility(kp)
    assert real.shape == (5,) and not np.isnan(real).any()
    assert _rate(real) == 1.0 and real.min() > 0.9  # every check within 80% of its limit
    assert _rate(pose_plausibility(_corrupt(kp, _forearm_x3))) == 0.2
    assert _rate(pose_plausibility(_corrupt(kp, _wrist_across))) == 0.0
    assert _rate(pose_plausibility(_corrupt(kp, _leg_x2))) == 0.0
    assert _rate(pose_plausibility(_corrupt(kp, _hips_swapped))) == 0.2
    # the failed check names the culprit
    assert judge(_corrupt(kp, _forearm_x3))[0].failed[0] == "left forearm"
    assert "torso twist" in judge(_corrupt(kp, _hips_swapped))[0].failed


def test_a_face_on_a_body_facing_the_other_way(real_keypoints):
    faces = [p for p in real_keypoints if p[[K["l_eye"], K["r_eye"]], 2].all()]
    assert len(faces) == 2
    for p in faces:
        q = p.copy()
        centre = q[:5, :2][q[:5, 2] > 0].mean(axis=0)
        axis = (q[K["l_eye"], :2] - q[K["r_eye"], :2]) / np.linalg.norm(q[K["l_eye"], :2] - q[K["r_eye"], :2])
        for i in range(5):  # mirror the face left-right about its own centre
            if q[i, 2] > 0:
                d = q[i, :2] - centre
                q[i, :2] = centre + d - 2 * (d @ axis) * axis
        assert judge(p)[0].score >= PLAUSIBLE
        verdict = judge(q)[0]
        assert verdict.score < PLAUSIBLE and verdict.failed == ["head twist"]


def test_foreshortening_is_never_flagged(real_keypoints):
    """A bone pointing at the camera shows short, down to nothing: only long bones are impossible."""
    for p in real_keypoints:
        for a, b in ((K["l_elb"], K["l_wri"]), (K["l_hip"], K["l_knee"]), (K["l_sho"], K["l_elb"])):
            q = p.copy()
            shift = 0.9 * (q[b, :2] - q[a, :2])  # the bone at 10% of its length, what hangs on it follows
            chain = {K["l_elb"]: [K["l_elb"], K["l_wri"]], K["l_wri"]: [K["l_wri"]], K["l_knee"]: [13, 15]}[b]
            q[chain, :2] -= shift
            assert pose_plausibility(q)[0] >= PLAUSIBLE


def test_collapsed_torso_detached_head_and_giant_face(real_keypoints):
    p = real_keypoints[0]
    torso = [K["l_sho"], K["r_sho"], K["l_hip"], K["r_hip"]]
    q = p.copy()
    q[torso, :2] = q[torso, :2].mean(axis=0) + np.array([[-2, 0], [2, 0], [-1, 1], [1, 1]])
    assert "torso collapsed" in judge(q)[0].failed
    q = p.copy()
    q[:5, 1] -= 400  # the head 400 px above the shoulders (the person is ~800 px tall)
    assert judge(q)[0].failed == ["head off the shoulders"]
    q = p.copy()
    q[:5, :2] = q[:5, :2].mean(axis=0) + 5 * (q[:5, :2] - q[:5, :2].mean(axis=0))
    assert "face too large" in judge(q)[0].failed


def test_invariant_to_position_size_rotation_and_mirroring(real_keypoints):
    base = pose_plausibility(real_keypoints)
    t = np.radians(70)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = real_keypoints.copy()
    moved[:, :, :2] = (real_keypoints[:, :, :2] @ rot.T) * 0.13 + [5000, -20]
    np.testing.assert_allclose(pose_plausibility(moved), base, atol=1e-9)
    mirrored = real_keypoints.copy()  # a mirror image swaps the labels too: the same person, seen in a mirror
    mirrored[:, :, 0] *= -1
    mirrored = mirrored[:, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]]
    np.testing.assert_allclose(pose_plausibility(mirrored), base, atol=1e-9)
    broken = _corrupt(real_keypoints, _forearm_x3)
    broken[:, :, :2] = (broken[:, :, :2] @ rot.T) * 0.13
    np.testing.assert_allclose(pose_plausibility(broken), pose_plausibility(_corrupt(real_keypoints, _forearm_x3)))


def test_shapes_missing_keypoints_and_bad_input(real_keypoints):
    assert pose_plausibility(np.zeros((0, 17, 3))).shape == (0,)
    assert pose_plausibility(real_keypoints[0]).shape == (1,)  # one person, 17×3
    few = real_keypoints[:2].copy()
    body = np.arange(5, 17)
    few[0, body[MIN_BODY_KEYPOINTS - 1 :], 2] = 0  # MIN_BODY_KEYPOINTS - 1 body keypoints left
    few[1, :, 2] = 0
    assert np.isnan(pose_plausibility(few)).all()
    conf = real_keypoints.copy()
    conf[:, :, 2] = 0.2  # confidences below the threshold count as missing
    assert np.isnan(pose_plausibility(conf, min_confidence=0.3)).all()
    assert not np.isnan(pose_plausibility(conf, min_confidence=0.1)).any()
    nan_xy = real_keypoints[:1].copy()
    nan_xy[0, 9, :2] = np.nan  # a NaN coordinate is a missing keypoint, not a crash
    assert 0 <= pose_plausibility(nan_xy)[0] <= 1
    with pytest.raises(ValueError, match="P×17×3"):
        pose_plausibility(np.zeros((2, 18, 3)))
    assert set(judge(real_keypoints)[0].ratios) <= set(CHECKS)


def test_random_skeletons_score_in_range():
    """Keypoints thrown at random, with random confidences: scores stay in [0, 1]."""
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 100, (400, 17, 2)), rng.uniform(0, 1, (400, 17, 1))], axis=2)
    s = pose_plausibility(kp, min_confidence=0.2)
    s = s[~np.isnan(s)]
    assert len(s) > 300 and ((s >= 0) & (s <= 1)).all()


# -- constructed bodies: stature 1 (×1000 px), x = the person's left, y = up, z = toward a frontal camera ----

J = {name: i for i, name in enumerate(KEYPOINTS)}


def _body(pose: str = "standing", arms: str = "down", hips: float = 0.05, knees: float = 0.04) -> np.ndarray:
    """A 3D skeleton (17×3) with Drillis & Contini's proportions: ``pose`` standing or seated (thighs toward
    the camera, knees ``knees`` out to the side), ``arms`` down or reaching toward the camera."""
    p = np.zeros((17, 3))
    for side, s in (("left", 1), ("right", -1)):
        p[J[f"{side}_hip"]] = [s * hips, 0, 0]
        p[J[f"{side}_shoulder"]] = [s * 0.13, 0.288, 0]
        if arms == "down":
            p[J[f"{side}_elbow"]] = p[J[f"{side}_shoulder"]] + [s * 0.03, -0.184, 0]
            p[J[f"{side}_wrist"]] = p[J[f"{side}_elbow"]] + [s * 0.01, -0.146, 0]
        else:
            p[J[f"{side}_elbow"]] = p[J[f"{side}_shoulder"]] + [-s * 0.02, -0.03, 0.182]
            p[J[f"{side}_wrist"]] = p[J[f"{side}_elbow"]] + [-s * 0.01, 0.0, 0.146]
        if pose == "standing":
            p[J[f"{side}_knee"]] = p[J[f"{side}_hip"]] + [s * 0.01, -0.245, 0]
        else:
            p[J[f"{side}_knee"]] = p[J[f"{side}_hip"]] + [s * knees, 0, np.sqrt(0.245**2 - knees**2)]
        p[J[f"{side}_ankle"]] = p[J[f"{side}_knee"]] + [0, -0.246, 0]
    nose = np.array([0, 0.398, 0.09])
    p[J["nose"]] = nose
    for side, s in (("left", 1), ("right", -1)):
        p[J[f"{side}_eye"]] = nose + [s * 0.019, 0.03, -0.02]
        p[J[f"{side}_ear"]] = nose + [s * 0.043, 0.02, -0.066]
    return p


def _seen(body: np.ndarray, elevation: float = 0.0, azimuth: float = 0.0) -> np.ndarray:
    """The body seen from ``elevation`` degrees above and ``azimuth`` around (orthographic): 17×3 keypoints."""
    t, a = np.radians(elevation), np.radians(azimuth)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    world = body @ turn.T @ tilt.T
    return np.concatenate([np.stack([world[:, 0], -world[:, 1]], 1) * 1000 + 500, np.full((17, 1), 2.0)], axis=1)


@pytest.mark.parametrize("elevation", [0, 40, 60, 65, 70])
def test_a_body_seen_from_high_above_is_plausible(elevation):
    """From high up every bone along the body shortens and only the shoulder line keeps its length; the
    old scale (the largest stature the limbs imply) judged that shoulder line too long from 60° on."""
    verdict = judge(_seen(_body(), elevation))[0]
    assert verdict.score >= PLAUSIBLE and not verdict.failed


def test_a_half_body_reaching_toward_the_camera_is_plausible():
    kp = _seen(_body(arms="toward"))
    kp[[J["left_hip"], J["right_hip"], J["left_knee"], J["right_knee"], J["left_ankle"], J["right_ankle"]], 2] = 0
    verdict = judge(kp)[0]  # the old score: 0.00, "shoulder width" too long for arms pointing at the camera
    assert verdict.score >= PLAUSIBLE and not verdict.failed


@pytest.mark.parametrize("elevation", [0, 30, 40])
def test_a_doubled_shin_is_caught_where_it_shows_most_of_its_length(elevation):
    """Seen from 40° above the shins show cos 40° = 0.77 of their length: doubled, 1.53 of a full one."""
    kp = _seen(_body(), elevation)
    assert judge(kp)[0].score >= PLAUSIBLE
    kp[J["left_ankle"], :2] = kp[J["left_knee"], :2] + 2 * (kp[J["left_ankle"], :2] - kp[J["left_knee"], :2])
    verdict = judge(kp)[0]
    assert verdict.score < PLAUSIBLE and verdict.failed[0] == "left shank"


def test_swapped_hips_on_a_frontal_seated_body():
    """Knees wide apart and hip keypoints close together: with the hips' labels swapped each thigh runs
    from one hip to the other knee, and the old scale grew from that thigh until the narrow hip line no
    longer had a direction to check. The torso's own scale (shoulder line, spine) is not moved by it."""
    kp = _seen(_body("seated", hips=0.03, knees=0.235))
    assert judge(kp)[0].score >= PLAUSIBLE
    kp[[J["left_hip"], J["right_hip"]]] = kp[[J["right_hip"], J["left_hip"]]]
    verdict = judge(kp)[0]
    assert verdict.score < PLAUSIBLE and verdict.failed == ["torso twist"]


def test_random_points_in_a_persons_box_are_mostly_implausible():
    kp = _seen(_body())
    rng = np.random.default_rng(0)
    lo, hi = kp[:, :2].min(axis=0), kp[:, :2].max(axis=0)
    points = np.concatenate([rng.uniform(lo, hi, (300, 17, 2)), np.full((300, 17, 1), 2.0)], axis=2)
    assert _rate(pose_plausibility(points)) <= 0.25  # the old score passed 35%


@pytest.mark.parametrize("missing", [None, "left_shoulder"])
def test_a_head_below_the_hips(missing):
    kp = _seen(_body())
    if missing:
        kp[J[missing], 2] = 0
    assert judge(kp)[0].score >= PLAUSIBLE
    spine = kp[[J["left_hip"], J["right_hip"]], :2].mean(axis=0) - kp[
        [J["left_shoulder"], J["right_shoulder"]], :2
    ].mean(axis=0)
    kp[:5, :2] += 2 * spine
    verdict = judge(kp)[0]
    assert verdict.score < PLAUSIBLE and {"head off the shoulders", "head below the shoulders"} & set(verdict.failed)


def test_a_keypoint_counts_from_the_threshold_on():
    """--keypoint-threshold 0.3: a keypoint of confidence exactly 0.3 counts (>=); 0 never counts."""
    kp = _seen(_body())
    kp[:, 2] = 0.0
    kp[[J[f"{s}_{j}"] for s in ("left", "right") for j in ("shoulder", "hip", "knee")], 2] = 0.3  # 6 body keypoints
    assert not np.isnan(pose_plausibility(kp, min_confidence=0.3)[0])
    assert np.isnan(pose_plausibility(kp, min_confidence=0.31)[0])
    kp[J["left_knee"], 2] = 0.0
    assert np.isnan(pose_plausibility(kp, min_confidence=0.0)[0])  # 0 is missing, whatever the threshold


def _image(keypoints: list[np.ndarray], name: str = "x.png") -> ImagePoses:
    kp = np.array(keypoints, dtype=np.float64).reshape(-1, 17, 3)
    return ImagePoses(Path(name), 900, 900, np.zeros((len(kp), 4)), np.full(len(kp), 0.9), kp)


def test_summary_counts_rates_and_intervals(real_keypoints):
    good = real_keypoints.copy()
    good[:, :, 2] = np.where(good[:, :, 2] > 0, 0.9, 0.0)  # as a pose estimator's confidences
    bad = _corrupt(good, _wrist_across)
    unscored = good[:1].copy()
    unscored[:, :, 2] = 0.1
    images = [_image([good[0], bad[1]]), _image([good[2]]), _image([]), _image([unscored[0]]), _image([bad[3]])]
    s, verdicts = summarize(images, min_confidence=0.3, resamples=500, seed=1)
    assert (s["n_images"], s["n_with_person"], s["n_persons"], s["n_scored"], s["n_plausible"]) == (5, 4, 5, 4, 2)
    assert s["person_rate"] == 0.8 and s["plausible_rate"] == 0.5 and s["n_unscored"] == 1
    persons = (good[0], bad[1], good[2], unscored[0], bad[3])
    assert s["keypoint_confidence"] == pytest.approx(np.mean([k[:, 2].mean() for k in persons]))
    scores = [v.score for vs in verdicts for v in vs if not math.isnan(v.score)]
    assert s["plausibility"] == pytest.approx(np.mean(scores))
    for key in ("person_rate", "plausible_rate", "plausibility", "keypoint_confidence"):
        lo, hi = s[f"{key}_interval"]
        assert 0 <= lo <= s[key] <= hi <= 1, key
    assert s["plausible_rate_interval"] != [0.5, 0.5]  # resampling the images moves it
    assert s["failed_checks"]["left forearm"] == 2  # both broken persons, by the check that caught them
    assert [len(v) for v in verdicts] == [2, 1, 0, 1, 1]
    again, _ = summarize(images, min_confidence=0.3, resamples=500, seed=1)
    assert again == s  # seeded


def test_summary_of_nothing_is_none_not_nan(real_keypoints):
    empty, _ = summarize([_image([]), _image([])], 0.3, resamples=100)
    assert empty["person_rate"] == 0.0 and empty["plausible_rate"] is None and empty["plausibility"] is None
    assert empty["plausible_rate_interval"] is None and empty["keypoint_confidence"] is None
    faint = real_keypoints[:2].copy()
    faint[:, :, 2] = 0.05
    s, _ = summarize([_image(list(faint))], 0.3, resamples=100)
    assert s["n_persons"] == 2 and s["n_scored"] == 0 and s["plausible_rate"] is None
    json.dumps(s, allow_nan=False)  # no NaN reaches metrics.json
    truth, _ = summarize([_image(list(real_keypoints))], 0.0, resamples=0, ground_truth=True)
    assert truth["keypoint_confidence"] is None and truth["plausible_rate"] == 1.0
    assert "person_rate_interval" not in truth  # no resamples, no intervals
