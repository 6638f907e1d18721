from __future__ import annotations

import json
import os

import pytest

from humanfix.data.records import Record, read_records, write_atomic, write_records
from humanfix.errors import UserError


def rec(cid: int = 785, **kw) -> Record:
    d = dict(
        file_name=f"images/{cid}.jpg", mask_file_name=f"masks/{cid}.png", text=["a person"],
        person_boxes=[[10, 20, 110, 300]], face_boxes=[[40, 30, 80, 70]], face_sources=["both"],
        keypoints=[[[50.5, 40.25, 2]] * 17], coverage=0.42, coco_id=cid, width=512, height=512,
        face_crop_files=[f"crops/faces/{cid}_0.png"], person_crop_files=[f"crops/persons/{cid}_0.png"],
    )  # fmt: skip
    d.update(kw)
    return Record(**d)


def test_json_round_trip_and_key_order():
    r = rec()
    line = r.to_json()
    assert "\n" not in line
    assert list(json.loads(line))[:4] == ["file_name", "mask_file_name", "text", "person_boxes"]
    assert Record.from_json(line) == r
    assert Record.from_json(line).to_json() == line


@pytest.mark.parametrize(
    "bad",
    [
        {"file_name": "../785.jpg"},
        {"file_name": "/etc/passwd"},
        {"mask_file_name": "masks/../../x.png"},
        {"face_crop_files": ["..\\x.png"]},
        {"face_sources": ["guess"]},
        {"face_boxes": [[5, 5, 5, 9]]},
        {"keypoints": [[[1, 2, 2]] * 16]},
        {"text": []},
        {"text": "one caption, not a list"},
        {"coverage": 1.5},
    ],
)
def test_invalid_records_are_refused(bad):
    with pytest.raises(ValueError):
        rec(**bad)


def test_read_records_refuses_paths_leaving_the_split(tmp_path):
    write_records(tmp_path, [rec(2), rec(1)])
    assert [r.coco_id for r in read_records(tmp_path)] == [1, 2]
    line = json.loads(rec(3).to_json())
    line["file_name"] = "../../outside.jpg"
    with (tmp_path / "metadata.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    with pytest.raises(UserError, match=r"metadata.jsonl:3"):
        read_records(tmp_path)


def test_read_records_refuses_symlink_escape(tmp_path):
    split = tmp_path / "val"
    write_records(split, [rec(1, file_name="images/link.jpg")])
    (split / "images").mkdir()
    os.symlink(tmp_path / "elsewhere.jpg", split / "images" / "link.jpg")
    with pytest.raises(UserError, match="leaves the split folder"):
        read_records(split)


def test_read_records_errors(tmp_path):
    with pytest.raises(UserError, match="prepare-data"):
        read_records(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "images/1.jpg"\n')
    with pytest.raises(UserError, match=r":1: bad record"):
        read_records(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "images/1.jpg"}\n')
    with pytest.raises(UserError, match="missing keys"):
        read_records(tmp_path)


def test_write_atomic_leaves_no_temporary_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_hand_fields_round_trip_and_old_records_load_without_them():
    r = rec(hand_boxes=[[5, 6, 40, 41]], hand_sides=["right"], hand_sources=["wholebody"],
            hand_crop_files=["crops/hands/785_0.png"])  # fmt: skip
    assert Record.from_json(r.to_json()) == r and "crops/hands/785_0.png" in r.paths()
    old = json.loads(rec().to_json())
    for key in ("hand_boxes", "hand_sides", "hand_sources", "hand_crop_files"):
        del old[key]
    loaded = Record.from_json(json.dumps(old))
    assert loaded.hand_boxes == [] and loaded.hand_sides == [] and loaded.hand_sources == []


@pytest.mark.parametrize(
    "bad",
    [
        {"hand_boxes": [[5, 6, 40, 41]], "hand_sides": ["left"], "hand_sources": ["guess"]},
        {"hand_boxes": [[5, 6, 40, 41]], "hand_sides": ["middle"], "hand_sources": ["keypoints"]},
        {"hand_boxes": [[5, 6, 40, 41]], "hand_sides": [], "hand_sources": ["keypoints"]},
        {"hand_boxes": [[5, 6, 5, 41]], "hand_sides": ["left"], "hand_sources": ["keypoints"]},
        {"hand_boxes": [[5, 6, 40, 41]], "hand_sides": ["left"], "hand_sources": ["keypoints"],
         "hand_crop_files": ["../x.png"]},
    ],
)  # fmt: skip
def test_invalid_hand_fields_are_refused(bad):
    with pytest.raises(ValueError):
        rec(**bad)
