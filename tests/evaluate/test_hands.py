"""Hands: the 3D plausibility score on constructed and real hands, and ``evaluate --hands`` end to end."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from humanfix.errors import UserError
from humanfix.evaluate import hands as H

HANDS_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hands-sample"

# -- constructed hands (centimetres; palm in the x-y plane, fingers along +y, the palm side is +z) ------------

KNUCKLES_X = {"index": -3.0, "middle": -1.0, "ring": 1.0, "pinky": 2.8}
KNUCKLES_Y = {"index": 9.0, "middle": 9.2, "ring": 8.6, "pinky": 7.8}
PHALANGES = {"index": (4.0, 2.3, 1.6), "middle": (4.5, 2.7, 1.7), "ring": (4.2, 2.6, 1.7), "pinky": (3.3, 1.8, 1.4)}


def constructed_hand(mcp: float = 0.0, pip: float = 0.0, dip: float = 0.0, left: bool = False) -> np.ndarray:
    """A right hand (``left``: its mirror image) with every finger flexed by these angles (degrees) palmwards."""
    p = np.zeros((21, 3))
    p[1:5] = [[-2.5, 2.0, 1.2], [-4.5, 4.0, 1.8], [-5.8, 6.0, 2.0], [-6.6, 7.8, 2.0]]  # thumb: its base is palmwards
    for finger, chain in H.FINGERS.items():
        p[chain[0]] = [KNUCKLES_X[finger], KNUCKLES_Y[finger], 0.0]
        direction, bend = 0.0, (mcp, pip, dip)
        for k, length in enumerate(PHALANGES[finger]):
            direction += math.radians(bend[k])  # rotation about the x axis, from +y towards +z (the palm side)
            p[chain[k + 1]] = p[chain[k]] + length * np.array([0.0, math.cos(direction), math.sin(direction)])
    if left:
        p[:, 0] *= -1
    return p


def bent_sideways(h: np.ndarray, finger: str = "middle") -> np.ndarray:
    """The finger's distal part turned 90° sideways at the PIP (towards the pinky), lengths kept."""
    _, pip, dip, tip = H.FINGERS[finger]
    mcp = H.FINGERS[finger][0]
    q = h.copy()
    u = (q[pip] - q[mcp]) / np.linalg.norm(q[pip] - q[mcp])
    lat = q[17] - q[5]
    lat -= lat.dot(u) * u
    lat /= np.linalg.norm(lat)
    for j in (dip, tip):
        q[j] = q[pip] + np.linalg.norm(h[j] - h[pip]) * lat
    return q


def bent_backwards(h: np.ndarray, finger: str = "middle") -> np.ndarray:
    """The finger bent 90° backwards (away from the palm) at the PIP, lengths kept."""
    mcp, pip, dip, tip = H.FINGERS[finger]
    q = h.copy()
    u = (q[pip] - q[mcp]) / np.linalg.norm(q[pip] - q[mcp])
    thumb = (q[1] + q[2]) / 2 - q[0]
    across = q[17] - q[5]
    normal = np.cross(across, q[9] - q[0])
    palmward = normal * np.sign(thumb.dot(normal))
    back = -(palmward - palmward.dot(u) * u)
    back /= np.linalg.norm(back)
    q[dip] = q[pip] + np.linalg.norm(h[dip] - h[pip]) * back
    q[tip] = q[dip] + np.linalg.norm(h[tip] - h[dip]) * back
    return q


def swapped(h: np.ndarray) -> np.ndarray:
    q = h.copy()
    q[[5, 6, 7, 8, 13, 14, 15, 16]] = h[[13, 14, 15, 16, 5, 6, 7, 8]]
    return q


@pytest.mark.parametrize("left", [False, True])
def test_flat_hand_and_fist_are_plausible(left):
    flat = constructed_hand(left=left)
    fist = constructed_hand(mcp=80, pip=100, dip=60, left=left)
    half = constructed_hand(mcp=40, pip=50, dip=20, left=left)
    scores = H.hand_plausibility(np.stack([flat, fist, half]))
    assert scores.shape == (3,)
    assert (scores >= H.PLAUSIBLE).all(), [v.failed for v in H.judge(np.stack([flat, fist, half]))]
    # the same hand in another unit and another pose of the whole hand scores the same
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert H.hand_plausibility(fist @ rot.T * 0.01)[0] == pytest.approx(scores[1])


@pytest.mark.parametrize("left", [False, True])
def test_each_corruption_is_caught(left):
    for base in (constructed_hand(left=left), constructed_hand(mcp=30, pip=40, dip=20, left=left)):
        for name, bad in {
            "sideways": bent_sideways(base),
            "backwards": bent_backwards(base),
            "swapped": swapped(base),
        }.items():
            v = H.judge(bad)[0]
            assert v.score < H.PLAUSIBLE, (name, left, v.ratios)
        assert any("sideways" in f for f in H.judge(bent_sideways(base))[0].failed)
        assert any("hyperextension" in f for f in H.judge(bent_backwards(base))[0].failed)
        assert "knuckle order" in H.judge(swapped(base))[0].failed
    rng = np.random.default_rng(0)
    base = constructed_hand(left=left)
    lo, hi = base.min(0), base.max(0)
    scattered = np.stack([lo + (hi - lo) * rng.random((21, 3)) for _ in range(200)])
    assert np.nanmean(H.hand_plausibility(scattered) < H.PLAUSIBLE) >= 0.9


def test_missing_joints_and_bad_shapes():
    h = constructed_hand()
    gap = h.copy()
    gap[[7, 8]] = np.nan  # a fingertip and its DIP missing: the rest is judged
    assert H.hand_plausibility(gap)[0] >= H.PLAUSIBLE
    no_palm = h.copy()
    no_palm[[0, 9]] = np.nan
    assert math.isnan(H.hand_plausibility(no_palm)[0])
    assert H.hand_plausibility(np.zeros((0, 21, 3))).shape == (0,)
    with pytest.raises(ValueError, match="21"):
        H.hand_plausibility(np.zeros((2, 17, 3)))
    # a middle phalanx 2.5 times too long is beyond anatomy but inside the detector's spread: not judged
    long = h.copy()
    long[11:13] += 1.5 * (h[11] - h[10])
    assert H.judge(long)[0].ratios["middle middle/proximal phalanx"] < 1


def test_every_check_is_named_with_a_limit():
    for joint, (flex, hyper) in H.FLEXION.items():
        assert flex.value > flex.anatomy >= 0 and hyper.value > hyper.anatomy >= 0 and flex.source, joint
    assert all(limit.value < 90 for limit in (H.SIDEWAYS["PIP"], H.FLEXION["PIP"][1]))  # 90° must fail
    v = H.judge(bent_backwards(constructed_hand()))[0]
    assert set(v.ratios) <= set(H.CHECKS)


def test_summary_bootstrap_and_unreadable():
    hand = {"box": [0, 0, 10, 10], "side": "right", "score": 0.9, "landmarks": np.zeros((21, 3))}
    good = H.ImageHands(Path("a.png"), 32, 32, [{**hand, "world": constructed_hand()}])
    bad = H.ImageHands(Path("b.png"), 32, 32, [{**hand, "score": 0.7, "world": swapped(constructed_hand())}])
    empty = H.ImageHands(Path("c.png"), 32, 32, [])
    broken = H.ImageHands(Path("d.png"), 0, 0, [], readable=False)
    s, verdicts = H.summarize([good, bad, empty, broken], resamples=200, seed=0)
    assert s["n_images"] == 4 and s["n_unreadable"] == 1 and s["n_hands"] == 2
    assert s["hands_per_image"] == pytest.approx(2 / 3)
    assert s["hand_conf"] == pytest.approx(0.8)
    assert s["plausible_rate"] == 0.5 and s["failed_checks"]["knuckle order"] == 1
    lo, hi = s["plausible_rate_interval"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    assert [len(v) for v in verdicts] == [1, 1, 0, 0]
    again, _ = H.summarize([good, bad, empty, broken], resamples=200, seed=0)
    assert again == s  # seeded
    none, _ = H.summarize([empty, broken], resamples=50)
    assert none["n_hands"] == 0 and none["hand_conf"] is None and none["plausible_rate"] is None


def test_missing_extra_is_one_line(monkeypatch, tmp_path, humanfix_cli, noise_folder):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(UserError, match=r"pip install 'humanfix\[hands\]'"):
        H.load_detector()
    assert H.mediapipe_status()[0] is False
    folder = noise_folder(tmp_path / "gen", n=2)
    code, _, err = humanfix_cli(["evaluate", "--hands", "--generated", folder, "--output", tmp_path / "out"])
    assert code == 2 and "humanfix[hands]" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# -- the real detector ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    try:
        return H.load_detector()
    except UserError as e:
        pytest.skip(f"MediaPipe Hands not available: {e}")


@pytest.fixture(scope="module")
def sample() -> Path:
    if not HANDS_SAMPLE.is_dir():
        pytest.skip(f"hands sample not found at {HANDS_SAMPLE}")
    return HANDS_SAMPLE


def test_real_hands_are_plausible_and_corruptions_caught(detector, sample):
    found = H.detect_hands(sorted(sample.glob("*.jpg")), detector)
    world = np.stack([h["world"] for im in found for h in im.hands])
    assert len(world) >= 9  # 10 of the 12 photos at the default threshold
    scores = H.hand_plausibility(world)
    assert (scores >= H.PLAUSIBLE).mean() >= 0.95
    for corrupt in (bent_sideways, bent_backwards, swapped):
        caught = H.hand_plausibility(np.stack([corrupt(w) for w in world])) < H.PLAUSIBLE
        assert caught.mean() >= 0.9, corrupt.__name__


def test_evaluate_hands_end_to_end_on_the_sample(tmp_path, humanfix_cli, detector, sample, fake_inception):
    out = tmp_path / "eval"
    code, stdout, err = humanfix_cli([
        "evaluate", "--hands", "--fid", "--bootstrap", "20", "--inception-weights", fake_inception, "--generated",
        sample, "--real", sample, "--report", "--hand-bootstrap", "200", "--output", out,
    ])  # fmt: skip
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    gen, real = m["hands"], m["real"]["hands"]
    assert gen["n_images"] == 12 and gen["n_hands"] >= 9 and gen["hands_per_image"] >= 0.75
    assert gen["hand_conf"] > 0.9 and real["plausible_rate"] >= 0.95
    assert gen["plausible_rate_interval"][0] <= gen["plausible_rate"] <= gen["plausible_rate_interval"][1]
    assert m["hands_setup"]["min_crops"] >= 2 and "MediaPipe" in m["hands_setup"]["detector"]
    model = next(iter(m["models"].values()))
    assert model["hand_fid"] == pytest.approx(0, abs=1e-3) and len(model["hand_fid_interval"]) == 2
    lines = [json.loads(line) for line in (out / "hands.jsonl").read_text().splitlines()]
    assert len(lines) == 24  # 12 generated + 12 real
    hand = next(h for line in lines for h in line["hands"])
    assert np.asarray(hand["landmarks"]).shape == (21, 3) and np.asarray(hand["world"]).shape == (21, 3)
    assert hand["side"] in ("left", "right") and len(hand["box"]) == 4 and hand["plausibility"] is not None
    page = (out / "report.html").read_text()
    assert 'id="show-hands"' in page and 'id="hands-data"' in page
    assert "hands.jsonl" in stdout


def test_no_hands_and_unreadable_images_are_counts(tmp_path, humanfix_cli, detector, noise_folder, fake_inception):
    gen = noise_folder(tmp_path / "noise", n=3, size=64)
    real = noise_folder(tmp_path / "noise-real", n=3, size=64, seed=1)
    out = tmp_path / "eval"
    code, _, err = humanfix_cli([
        "evaluate", "--hands", "--fid", "--inception-weights", fake_inception, "--generated", gen, "--real", real,
        "--output", out,
    ])  # fmt: skip
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["hands"]["n_hands"] == 0 and m["hands"]["hands_per_image"] == 0 and m["hands"]["plausible_rate"] is None
    notes = " ".join(m["notes"])
    assert "no hand found" in notes and "too few hand crops" in notes
    assert "hand_fid" not in m["models"][next(iter(m["models"]))]

    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(2):
        (broken / f"{i}.png").write_bytes(b"not an image")
    code, _, err = humanfix_cli(["evaluate", "--hands", "--generated", broken, "--real", gen, "--output", out])
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["hands"]["n_unreadable"] == 2 and m["hands"]["n_hands"] == 0 and m["hands"]["hands_per_image"] is None
    assert "2 of 2 image(s) unreadable" in " ".join(m["notes"])


def test_expected_hands_counts_wrists_whose_crop_holds_a_hand(detector, sample):
    photo = sample / "onehand10k-784.jpg"
    (im,) = H.detect_hands([photo], detector)
    wrist = im.hands[0]["landmarks"][0, :2]
    kp = np.zeros((2, 17, 3))
    kp[0, 9] = [*wrist, 0.9]  # left wrist on the hand, its elbow a forearm (400 px) below
    kp[0, 7] = [wrist[0], wrist[1] + 400, 0.9]
    kp[1, 10] = [5, 5, 0.9]  # a right wrist in the corner, far from the hand; its elbow not found
    kp[1, 8] = [40, 40, 0.1]
    poses = SimpleNamespace(path=photo, width=im.width, height=im.height, keypoints=kp)
    boxes = H.wrist_crops(poses, keypoint_threshold=0.3)
    assert len(boxes) == 2 and boxes[1] == (0, 0, 5 + H.MIN_WRIST_CROP, 5 + H.MIN_WRIST_CROP)
    rows = H.expected_hands([poses], detector, keypoint_threshold=0.3)
    assert rows.tolist() == [[2, 1]]
    s, _ = H.summarize([im], resamples=50, wrists=rows)
    assert s["expected_hand_rate"] == 0.5 and (s["n_wrists"], s["n_wrists_with_hand"]) == (2, 1)


def test_evaluate_hands_with_pose_on_the_tiny_demo_layout(tmp_path, humanfix_cli, detector, sample, compare_output,
                                                          prepared_set):  # fmt: skip
    photos = sorted(sample.glob("onehand10k-*.jpg"))
    gen = compare_output(tmp_path / "gen", ["a hand", "two hands"], [1, 2], ["base", "photos"], photos=photos)
    out = tmp_path / "out"
    code, stdout, err = humanfix_cli([
        "evaluate", "--hands", "--pose", "--pose-weights", "random", "--report", "--generated", gen,
        "--real", prepared_set / "val", "--hand-bootstrap", "100", "--pose-bootstrap", "100", "--output", out,
    ])  # fmt: skip
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    for label in ("base", "photos"):
        h = m["models"][label]["hands"]
        assert h["n_images"] == 4 and "expected_hand_rate" in h and h["n_wrists"] >= h["n_wrists_with_hand"] >= 0
    assert m["models"]["photos"]["hands"]["n_hands"] >= 1 and m["models"]["base"]["hands"]["n_hands"] == 0
    assert "hands" in m["real"] and "wrist_crop" in m["hands_setup"]
    page = (out / "report.html").read_text()
    data = json.loads(re.search(r'<script id="hands-data" type="application/json">(.*?)</script>', page, re.S)[1])
    assert (
        data["images"]
        and data["connections"]
        and all(len(h["landmarks"]) == 21 and "world" not in h for im in data["images"].values() for h in im["hands"])
    )
