from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from humanfix.data.faces import detect_faces, iou, keypoint_face_box, merge_faces


def kps(**points) -> np.ndarray:
    """17×3 keypoints with the named face points labelled (nose, left_eye, right_eye, left_ear, right_ear)."""
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    k = np.zeros((17, 3))
    for name, (x, y) in points.items():
        k[names.index(name)] = [x, y, 2]
    return k


BIG = (0.0, 0.0, 1000.0, 1000.0)


def test_keypoint_rule_frontal_face():
    box = keypoint_face_box(kps(nose=(100, 108), left_eye=(110, 100), right_eye=(90, 100)), BIG)
    assert box is not None
    assert box[2] - box[0] == pytest.approx(2.5 * 20)  # 2.5 × eye distance (beats nose-eye: 3.5 × 12.8 = 44.8)
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])
    assert (box[0] + box[2]) / 2 == pytest.approx(100)  # centred on nose and eyes
    assert (box[1] + box[3]) / 2 == pytest.approx(308 / 3)


def test_keypoint_rule_profile_uses_eye_ear_and_clips_to_person():
    box = keypoint_face_box(kps(left_eye=(100, 100), left_ear=(80, 102)), BIG)
    side = 1.9 * np.hypot(20, 2)
    assert box[2] - box[0] == pytest.approx(side)
    clipped = keypoint_face_box(kps(left_eye=(100, 100), left_ear=(80, 102)), (95.0, 90.0, 200.0, 300.0))
    assert clipped[0] == 95.0 and clipped[1] == 90.0


def test_keypoint_rule_needs_two_points():
    assert keypoint_face_box(kps(nose=(5, 5)), BIG) is None
    assert keypoint_face_box(np.zeros((17, 3)), BIG) is None


def test_merge_rules():
    persons = [(0.0, 0.0, 100.0, 300.0), (200.0, 0.0, 300.0, 300.0), (400.0, 0.0, 500.0, 300.0)]
    kp_boxes = [(30.0, 10.0, 70.0, 50.0), (230.0, 10.0, 270.0, 50.0), None]
    detections = [
        (32.0, 12.0, 72.0, 55.0),  # matches person 0's keypoint box -> both
        (420.0, 20.0, 460.0, 60.0),  # inside person 2, who has no keypoint face -> mtcnn
        (700.0, 10.0, 740.0, 50.0),  # nobody's -> dropped
    ]
    faces = merge_faces(kp_boxes, persons, detections)
    assert [(f.person, f.source) for f in faces] == [(0, "both"), (1, "keypoints"), (2, "mtcnn")]
    assert faces[0].box == detections[0] and faces[1].box == kp_boxes[1]


def test_mtcnn_finds_the_real_faces():
    astronaut = detect_faces(Image.fromarray(skimage.data.astronaut()))
    assert len(astronaut) == 1
    (box, prob) = astronaut[0]
    # Eileen Collins' face lies in x 160..290, y 40..200 of the 512² picture.
    assert 160 <= box[0] < box[2] <= 290 and 40 <= box[1] < box[3] <= 200 and box[3] - box[1] > 60
    camera = detect_faces(Image.fromarray(skimage.data.camera()).convert("RGB"))
    assert len(camera) == 1 and 180 <= camera[0][0][0] and camera[0][0][2] <= 280
    assert detect_faces(Image.fromarray(skimage.data.coffee())) == []  # a cup of coffee has no face


def test_keypoint_boxes_agree_with_mtcnn_on_real_photos(ochuman):
    data = json.loads((ochuman / "person_keypoints.json").read_text())
    agree = []
    for im in data["images"]:
        dets = [b for b, _ in detect_faces(Image.open(ochuman / im["file_name"]).convert("RGB"))]
        for a in data["annotations"]:
            if a["image_id"] != im["id"]:
                continue
            x, y, w, h = a["bbox"]
            kb = keypoint_face_box(a["keypoints"], (x, y, x + w, y + h))
            matches = [iou(kb, d) for d in dets] if kb else []
            if matches and max(matches) > 0.3:
                agree.append(max(matches))
    # Two people have both a keypoint face and a detected face; the boxes agree closely.
    assert len(agree) >= 2 and min(agree) >= 0.5, agree


def test_ears_alone_give_no_face():
    """A head seen from behind (ears labelled, no nose, no eye) has no face to compare identities on."""
    assert keypoint_face_box(kps(left_ear=(80, 100), right_ear=(120, 100)), BIG) is None
    assert keypoint_face_box(kps(left_ear=(80, 100), right_ear=(120, 100), nose=(100, 104)), BIG) is not None
    assert keypoint_face_box(kps(left_ear=(80, 100), left_eye=(92, 98)), BIG) is not None
