from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from humanfix.data import coco
from humanfix.errors import UserError


def pycoco_union(path, image_id) -> np.ndarray:
    """The reference: pycocotools' annToMask over the image's non-crowd persons, OR-ed."""
    c = COCO(str(path))
    info = c.imgs[image_id]
    union = np.zeros((info["height"], info["width"]), bool)
    for a in c.loadAnns(c.getAnnIds(imgIds=[image_id], iscrowd=False)):
        union |= c.annToMask(a).astype(bool)
    return union


def test_coverage_matches_pycocotools_on_ochuman(ochuman):
    path = ochuman / "person_keypoints.json"
    data = json.loads(path.read_text())
    for im in data["images"]:
        segs = [a["segmentation"] for a in data["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]]
        ref = pycoco_union(path, im["id"])
        assert coco.coverage(segs, im["height"], im["width"]) == pytest.approx(ref.mean(), abs=1e-9)
        assert np.array_equal(coco.union_mask(segs, im["height"], im["width"]), ref)


def test_coverage_for_polygons_and_both_rle_forms(tmp_path):
    h, w = 60, 80
    m = np.zeros((h, w), np.uint8, order="F")
    m[5:25, 40:70] = 1
    compressed = mask_utils.encode(np.asfortranarray(m))
    compressed["counts"] = compressed["counts"].decode()
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    uncompressed = {"counts": runs, "size": [h, w]}
    polygon = [[10, 10, 30, 10, 30, 50, 10, 50]]
    data = {
        "images": [{"id": 1, "width": w, "height": h, "file_name": "x.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": polygon, "area": 800,
             "bbox": [10, 10, 20, 40]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": compressed, "area": 600,
             "bbox": [40, 5, 30, 20]},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed, "area": 600,
             "bbox": [40, 5, 30, 20]},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    ref = pycoco_union(path, 1)
    segs = [a["segmentation"] for a in data["annotations"]]
    assert coco.coverage(segs, h, w) == pytest.approx(ref.mean(), abs=1e-12)
    assert 0.2 < ref.mean() < 0.4


def filters(**kw):
    d = dict(min_coverage=0.1, min_person_area=0.01, max_persons=2, skip_crowd=True)
    d.update(kw)
    return coco.Filters(**d)


def test_select_counts_every_reason(make_coco):
    kp, _, _ = make_coco(
        [
            (100, 100, [(10, 10, 60, 90)]),  # kept: coverage 0.4
            (100, 100, [(10, 10, 20, 20), (50, 50, 55, 55)]),  # coverage 0.0125 < 0.1
            (100, 100, [(0, 0, 5, 5)]),  # the only person is 25 px < 1% of 10,000
            (100, 100, [(0, 0, 40, 40), (50, 0, 90, 40), (0, 50, 40, 90)]),  # 3 persons > 2
            (100, 100, []),  # nobody
            (100, 100, [(10, 10, 90, 90)]),  # will get a crowd annotation
        ]
    )
    data = json.loads(kp.read_text())
    crowd = dict(data["annotations"][-1], id=999, iscrowd=1)
    data["annotations"].append(crowd)
    sel = coco.select(data, filters())
    assert [c.image["id"] for c in sel.candidates] == [1]
    assert sel.candidates[0].coverage == pytest.approx(0.4)
    assert sel.seen == 6
    assert sel.dropped == {"low_coverage": 1, "small_persons": 1, "too_many_persons": 1, "no_person": 1, "crowd": 1}
    # Without --skip-crowd the crowd image is kept, its crowd region out of persons and coverage.
    sel = coco.select(data, filters(skip_crowd=False))
    kept = {c.image["id"]: c for c in sel.candidates}
    assert set(kept) == {1, 6}
    assert len(kept[6].persons) == 1 and kept[6].coverage == pytest.approx(0.64)
    # Small persons stay in the mask and coverage but are not counted persons.
    data["annotations"].append(dict(data["annotations"][0], id=1000, segmentation=[[90, 90, 95, 90, 95, 95, 90, 95]],
                                    bbox=[90, 90, 5, 5], area=25))  # fmt: skip
    c = next(c for c in coco.select(data, filters()).candidates if c.image["id"] == 1)
    assert len(c.persons) == 1 and len(c.segmentations) == 2 and c.coverage == pytest.approx(0.4025)


def test_zero_min_coverage_skips_the_rle_work(make_coco):
    kp, _, _ = make_coco([(100, 100, [(10, 10, 60, 90)])])
    sel = coco.select(json.loads(kp.read_text()), filters(min_coverage=0.0))
    assert sel.candidates[0].coverage is None


def test_load_errors_and_captions(tmp_path, make_coco):
    with pytest.raises(UserError, match="not found"):
        coco.load_json(tmp_path / "nope.json", "person keypoints annotation file")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        coco.load_json(tmp_path / "bad.json", "x")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="not a COCO annotation file"):
        coco.load_json(tmp_path / "list.json", "x")
    _, cp, _ = make_coco([(50, 50, [(0, 0, 40, 40)])])
    assert coco.load_captions(cp) == {1: ["first caption 1", "second caption 1"]}  # by id, stripped
