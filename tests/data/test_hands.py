"""Hand boxes: the keypoint rule, COCO-WholeBody's boxes, and which one wins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from humanfix.data.hands import HAND_OFFSET, HAND_SIDE, find_hands, keypoint_hand_box, load_wholebody
from humanfix.errors import UserError

BIG = (0.0, 0.0, 1000.0, 1000.0)


def arm(side: str = "left", shoulder=None, elbow=(100.0, 100.0), wrist=(100.0, 200.0)) -> np.ndarray:
    """17×3 keypoints with one arm labelled (COCO: 5/7/9 left, 6/8/10 right)."""
    s, e, w = (5, 7, 9) if side == "left" else (6, 8, 10)
    k = np.zeros((17, 3))
    for i, p in ((s, shoulder), (e, elbow), (w, wrist)):
        if p is not None:
            k[i] = [*p, 2]
    return k


def test_factors_come_from_the_sample_and_drillis_contini():
    assert HAND_OFFSET == pytest.approx(0.46 * 0.108 / 0.146, abs=0.005)
    assert HAND_SIDE == pytest.approx(1.19 * 0.108 / 0.146, abs=0.005)


def test_keypoint_box_is_a_square_beyond_the_wrist_along_the_forearm():
    box = keypoint_hand_box(arm(), "left", BIG)  # forearm 100 px pointing down
    side = HAND_SIDE * 100
    assert box[2] - box[0] == pytest.approx(side) and box[3] - box[1] == pytest.approx(side)
    assert (box[0] + box[2]) / 2 == pytest.approx(100)
    assert (box[1] + box[3]) / 2 == pytest.approx(200 + HAND_OFFSET * 100)
    flipped = keypoint_hand_box(arm("right", elbow=(300.0, 100.0), wrist=(200.0, 100.0)), "right", BIG)
    assert (flipped[0] + flipped[2]) / 2 == pytest.approx(200 - HAND_OFFSET * 100)  # beyond the wrist, leftwards
    assert keypoint_hand_box(arm("right"), "left", BIG) is None  # the other arm is not labelled


def test_a_foreshortened_forearm_takes_its_scale_from_the_upper_arm():
    k = arm(shoulder=(100.0, 0.0), elbow=(100.0, 100.0), wrist=(100.0, 110.0))  # forearm seen end-on: 10 px
    box = keypoint_hand_box(k, "left", BIG)
    assert box[2] - box[0] == pytest.approx(HAND_SIDE * 100 * 0.146 / 0.186)
    assert (box[1] + box[3]) / 2 == pytest.approx(110 + HAND_OFFSET * 10)  # the direction stays the forearm's


def test_keypoint_box_is_clipped_to_the_person_and_needs_elbow_and_wrist():
    box = keypoint_hand_box(arm(), "left", (0.0, 0.0, 1000.0, 230.0))
    assert box[3] == 230.0
    assert keypoint_hand_box(arm(wrist=None), "left", BIG) is None
    assert keypoint_hand_box(arm(elbow=None), "left", BIG) is None


def test_wholebody_boxes_win_where_valid(tmp_path):
    path = tmp_path / "wb.json"
    anns = [
        {"id": 7, "lefthand_box": [10, 20, 30, 40], "lefthand_valid": True, "righthand_box": [0, 0, 0, 0],
         "righthand_valid": False},
        {"id": 8, "lefthand_box": [1, 1, 5, 5], "lefthand_valid": False, "righthand_box": [5, 5, 0, 0],
         "righthand_valid": True},  # valid but empty: ignored
    ]  # fmt: skip
    path.write_text(json.dumps({"images": [], "annotations": anns}))
    wb = load_wholebody(path)
    assert wb == {7: {"left": (10.0, 20.0, 40.0, 60.0)}}
    both = arm() + arm("right", elbow=(300.0, 100.0), wrist=(300.0, 200.0))
    hands = find_hands([(both, BIG, wb[7]), (both, BIG, None), (np.zeros((17, 3)), BIG, None)])
    assert [(h.person, h.side, h.source) for h in hands] == [
        (0, "left", "wholebody"), (0, "right", "keypoints"), (1, "left", "keypoints"), (1, "right", "keypoints"),
    ]  # fmt: skip
    assert hands[0].box == (10.0, 20.0, 40.0, 60.0)


def test_a_bad_wholebody_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_wholebody(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_wholebody(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="COCO-WholeBody"):
        load_wholebody(tmp_path / "list.json")
