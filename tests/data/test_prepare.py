from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from humanfix.data import geometry
from humanfix.data import prepare as prep
from humanfix.data.prepare import PrepareConfig, prepare
from humanfix.data.records import read_records
from humanfix.errors import UserError

SPECS = [
    (120, 100, [(20, 10, 80, 95)]),
    (100, 140, [(10, 20, 60, 130), (55, 30, 95, 120)]),
    (90, 90, [(5, 5, 85, 85)]),
    (160, 100, [(60, 5, 110, 95)]),
    (100, 100, [(30, 10, 70, 90)]),
    (100, 100, [(20, 20, 80, 80)]),
    (100, 120, [(20, 10, 90, 110)]),
    (110, 100, [(10, 10, 90, 95)]),
]


def config(kp, cp, images, out, **kw) -> PrepareConfig:
    d = dict(keypoints=kp, captions=cp, images=images, split="val", output=out, min_coverage=0.1, resolution=64,
             min_face_size=4, workers=1, face_detector="none")  # fmt: skip
    d.update(kw)
    return PrepareConfig(**d)


def test_outputs_follow_the_contract(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS[:3])
    summary = prepare(config(kp, cp, images, tmp_path / "out"))
    split = tmp_path / "out" / "val"
    recs = read_records(split)
    assert [r.coco_id for r in recs] == [1, 2, 3]
    assert summary["splits"]["val"]["kept"] == 3 and summary["splits"]["val"]["seen"] == 3
    for r in recs:
        img, mask = Image.open(split / r.file_name), Image.open(split / r.mask_file_name)
        assert img.mode == "RGB" and img.size == (64, 64) == mask.size and (r.width, r.height) == (64, 64)
        m = np.asarray(mask)
        assert set(np.unique(m)) <= {0, 255}
        red = np.asarray(img)[..., 0] > 170
        assert ((m > 0) & red).sum() / ((m > 0) | red).sum() > 0.9  # the mask is where the people are
        assert r.text[0].startswith("first caption") and len(r.text) == 2
        assert len(r.keypoints) == len(r.person_boxes) == len(r.person_crop_files)
        assert r.face_sources == ["keypoints"] * len(r.face_boxes) and len(r.face_crop_files) == len(r.face_boxes)
        for f in r.face_crop_files:
            assert Image.open(split / f).size == (160, 160)
        for f, b in zip(r.person_crop_files, r.person_boxes, strict=True):
            assert Image.open(split / f).size == (b[2] - b[0], b[3] - b[1])
    # image 1: 120×100 -> 77×64, crop from x=6; person 20..80 × 10..95 -> x 12.8-6, y 6.4..60.8
    assert recs[0].person_boxes == [[6, 6, 46, 61]]
    assert recs[0].coverage == pytest.approx(60 * 85 / 12000, abs=1e-6)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["splits"]["val"]["faces"]["keypoints"] >= 3


def test_bad_images_are_converted_or_skipped_and_counted(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS)
    src = {i: images / f"{i:06d}.jpg" for i in range(1, 9)}
    raw = src[1].read_bytes()
    src[1].write_bytes(raw[: len(raw) // 3])  # truncated
    Image.open(src[2]).convert("CMYK").save(src[2])  # CMYK JPEG
    Image.open(src[3]).convert("L").save(src[3], format="JPEG")  # grayscale
    Image.open(src[4]).convert("P").save(src[4], format="PNG")  # palette PNG under a .jpg name
    src[5].unlink()  # missing
    src[6].write_text("not an image")  # garbage
    Image.open(src[7]).resize((50, 60)).save(src[7])  # size differs from the annotation
    summary = prepare(config(kp, cp, images, tmp_path / "out"))["splits"]["val"]
    assert summary["dropped"] == {"missing_image": 1, "unreadable_image": 2, "size_mismatch": 1}
    recs = read_records(tmp_path / "out" / "val")
    assert [r.coco_id for r in recs] == [2, 3, 4, 8]
    for r in recs:
        assert Image.open(tmp_path / "out" / "val" / r.file_name).mode == "RGB"


def test_resume_after_a_crash_ends_with_the_same_bytes(make_coco, tmp_path, monkeypatch):
    kp, cp, images = make_coco(SPECS)
    clean = tmp_path / "clean"
    prepare(config(kp, cp, images, clean))

    out = tmp_path / "out"
    real = prep.process_image
    calls = []

    def crashing(job, s):
        calls.append(job.image["id"])
        if len(calls) == 4:
            # Die half way through an image: its JPEG is written, its record is not.
            (s.split_dir / "images").mkdir(parents=True, exist_ok=True)
            (s.split_dir / "images" / f"{job.image['id']}.jpg").write_bytes(b"half")
            (s.split_dir / "masks").mkdir(parents=True, exist_ok=True)
            (s.split_dir / "masks" / ".4.png.x1y2.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(job, s)

    monkeypatch.setattr(prep, "process_image", crashing)
    with pytest.raises(KeyboardInterrupt):
        prepare(config(kp, cp, images, out))
    assert not (out / "val" / "metadata.jsonl").exists()  # nothing a reader would take as done
    assert len(list((out / "val" / prep.STATE_DIR).glob("*.json"))) == 3

    monkeypatch.setattr(prep, "process_image", real)
    summary = prepare(config(kp, cp, images, out))["splits"]["val"]
    assert summary["reused"] == 3
    assert (out / "val" / "metadata.jsonl").read_bytes() == (clean / "val" / "metadata.jsonl").read_bytes()
    assert (out / "val" / "images" / "4.jpg").read_bytes() == (clean / "val" / "images" / "4.jpg").read_bytes()
    assert not list((out / "val").rglob("*.tmp"))
    before = (out / "val" / "metadata.jsonl").read_bytes()
    assert prepare(config(kp, cp, images, out))["splits"]["val"]["reused"] == len(SPECS)
    assert (out / "val" / "metadata.jsonl").read_bytes() == before


def test_parallel_workers_give_the_same_output(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS[:4])
    prepare(config(kp, cp, images, tmp_path / "one"))
    prepare(config(kp, cp, images, tmp_path / "two", workers=2))
    assert (tmp_path / "one/val/metadata.jsonl").read_bytes() == (tmp_path / "two/val/metadata.jsonl").read_bytes()


def test_limit_captions_and_face_size(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS[:4], captions=False)
    with pytest.raises(UserError, match="captions file not found"):
        prepare(config(kp, cp, images, tmp_path / "a"))
    s = prepare(config(kp, None, images, tmp_path / "b", default_caption="a photo of people", limit=2))
    assert s["splits"]["val"]["kept"] == 2 and s["splits"]["val"]["not_processed_limit"] == 2
    assert all(r.text == ["a photo of people"] for r in read_records(tmp_path / "b" / "val"))
    prepare(config(kp, None, images, tmp_path / "c", default_caption="x", min_face_size=1000, save_crops=False))
    recs = read_records(tmp_path / "c" / "val")
    assert all(r.face_boxes == [] and r.person_crop_files == [] for r in recs)
    assert not (tmp_path / "c" / "val" / "crops").exists()


def test_coco_root_layout_and_split_all(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS[:2])
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"person_keypoints_{split}2017.json").write_bytes(kp.read_bytes())
        (root / "annotations" / f"captions_{split}2017.json").write_bytes(cp.read_bytes())
        (root / f"{split}2017").symlink_to(images)
    s = prepare(PrepareConfig(coco_root=root, split="all", output=tmp_path / "out", resolution=64, workers=1,
                              min_face_size=4, face_detector="none"))  # fmt: skip
    assert set(s["splits"]) == {"train", "val"} and s["splits"]["train"]["kept"] == 2
    assert len(read_records(tmp_path / "out" / "train")) == 2


def test_settings_change_needs_overwrite(make_coco, tmp_path):
    kp, cp, images = make_coco(SPECS[:2])
    prepare(config(kp, cp, images, tmp_path / "out"))
    with pytest.raises(UserError, match="other settings.*resolution"):
        prepare(config(kp, cp, images, tmp_path / "out", resolution=32))
    prepare(config(kp, cp, images, tmp_path / "out", resolution=32, overwrite=True))
    assert read_records(tmp_path / "out" / "val")[0].width == 32


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keypoints", "{tmp}/nope.json"], "person keypoints annotation file not found"),
        (["--images", "{tmp}/no-images"], "image folder not found"),
        (["--captions", "{tmp}/nope.json"], "captions file not found"),
        (["--split", "all"], "name one split's files"),
        (["--min-coverage", "1.5"], "--min-coverage must lie in"),
        (["--face-detector", "dlib"], "--face-detector must be"),
        (["--resolution", "0"], "--resolution must lie in"),
        (["--resolution", "500", "--buckets", ""], "--buckets needs --resolution a multiple of 64 (got 500)"),
        (["--crop", "left"], "--crop must be people or center"),
    ],
)
def test_cli_error_paths_exit_2(make_coco, tmp_path, humanfix_cli, args, message):
    kp, cp, images = make_coco(SPECS[:1])
    base = {"--keypoints": str(kp), "--captions": str(cp), "--images": str(images), "--split": "val"}
    extra = [a.format(tmp=tmp_path) for a in args]
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        base[k] = v
    argv = [x for kv in base.items() for x in kv if x != ""]  # "" : a flag without a value
    code, out, err = humanfix_cli(["prepare-data", *argv, "--output", tmp_path / "o"])
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one line


def test_cli_needs_a_source(humanfix_cli, tmp_path):
    code, _, err = humanfix_cli(["prepare-data", "--output", tmp_path / "o"])
    assert code == 2 and "--coco-root" in err


def test_cli_end_to_end_on_ochuman(ochuman, tmp_path, humanfix_cli):
    args = ["prepare-data", "--keypoints", ochuman / "person_keypoints.json", "--captions", ochuman / "captions.json",
            "--images", ochuman, "--split", "val", "--min-coverage", "0", "--resolution", "256",
            "--min-face-size", "8", "--workers", "2", "--output", tmp_path / "out"]  # fmt: skip
    code, out, err = humanfix_cli(args)
    assert code == 0, err
    assert "kept" in out and "faces: both" in out  # the rich summary table
    split = tmp_path / "out" / "val"
    recs = read_records(split)
    assert [r.coco_id for r in recs] == [1, 2, 3]
    sources = [s for r in recs for s in r.face_sources]
    assert sources.count("both") == 2 and "mtcnn" in sources and "keypoints" in sources
    for r in recs:
        assert Path(split / r.file_name).is_file() and Image.open(split / r.mask_file_name).size == (256, 256)
        assert all((split / f).is_file() for f in r.face_crop_files + r.person_crop_files)
        assert r.text and 0.0 < r.coverage < 1.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["splits"]["val"]["kept"] == 3 and summary["settings"]["resolution"] == 256
    before = (split / "metadata.jsonl").read_bytes()
    code, _, err = humanfix_cli(args)
    assert code == 0, err
    assert (split / "metadata.jsonl").read_bytes() == before


# ---------------------------------------------------------------------------------------------------- crop, buckets

# A wide photo with its person at the left edge, a tall one with its person at the bottom, a square one.
SIDES = [(200, 100, [(0, 5, 60, 95)]), (100, 220, [(10, 140, 90, 220)]), (100, 100, [(20, 10, 80, 90)])]


def test_the_people_crop_keeps_the_people_the_centre_crop_cuts(make_coco, tmp_path):
    kp, cp, images = make_coco(SIDES)
    kept, recs = {}, {}
    for crop in ("center", "people"):
        summary = prepare(config(kp, cp, images, tmp_path / crop, crop=crop))
        kept[crop] = summary["splits"]["val"]["kept_in_output"]
        recs[crop] = {r.coco_id: r for r in read_records(tmp_path / crop / "val")}
        assert summary["splits"]["val"]["buckets"] == {"64x64": 3 if crop == "people" else 1}
    # The wide one: resized 128×64; its person's keypoints (x 25..36 in the source) lie left of the centre
    # window (x 50..150): the people window is the least move from the centre that holds them all.
    assert recs["center"].get(1) is None and recs["people"][1].window == [25.0, 0.0, 125.0, 100.0]
    # The tall one: resized 64×141; the centre window (y 60..160) keeps too little of the person (y 140..220).
    assert 2 not in recs["center"] and recs["people"][2].window == [0.0, 88.94, 100.0, 188.79]
    assert recs["center"][3].window == recs["people"][3].window == [0.0, 0.0, 100.0, 100.0]
    assert kept["people"]["keypoints"]["fraction"] == 1.0 and kept["people"]["faces"]["fraction"] == 1.0
    assert kept["center"]["keypoints"] == {"kept": 4, "of": 12, "fraction": 0.3333}  # 2 of 3 images dropped
    for r in recs["people"].values():  # every labelled keypoint inside the output
        assert all(0 <= x < r.width and 0 <= y < r.height for person in r.keypoints for x, y, v in person if v > 0)


def test_buckets_keep_the_aspect_and_count_images_per_bucket(make_coco, tmp_path):
    kp, cp, images = make_coco([(400, 200, [(0, 10, 120, 190)]), (200, 400, [(10, 200, 190, 400)]),
                                (300, 290, [(20, 10, 280, 280)]), (300, 200, [(50, 0, 250, 60)])])  # fmt: skip
    summary = prepare(config(kp, cp, images, tmp_path / "b", resolution=192, buckets=True))
    recs = {r.coco_id: r for r in read_records(tmp_path / "b" / "val")}
    assert {cid: (r.width, r.height) for cid, r in recs.items()} == {
        1: (256, 128), 2: (128, 256), 3: (192, 192), 4: (256, 128)
    }  # fmt: skip
    assert summary["splits"]["val"]["buckets"] == {"256x128": 2, "128x256": 1, "192x192": 1}
    for r in recs.values():
        img = Image.open(tmp_path / "b" / "val" / r.file_name)
        assert img.size == (r.width, r.height) == Image.open(tmp_path / "b" / "val" / r.mask_file_name).size
    # 300×200 -> 256×171 resized, 43 rows to lose: the person's keypoints (rows 5..31) at the top keep the window
    # there (row 5, the least move from the centre's 21 that holds them), not the centre
    assert recs[4].window == [0.0, 5.85, 300.0, 155.56]
    assert geometry.plan(300, 200, (256, 128), "center").window == [0.0, 24.56, 300.0, 174.27]
    assert summary["splits"]["val"]["kept_in_output"]["keypoints"]["fraction"] == 1.0


def test_crop_and_buckets_are_part_of_the_resume_contract(make_coco, tmp_path):
    kp, cp, images = make_coco(SIDES[:1])
    prepare(config(kp, cp, images, tmp_path / "out", resolution=64))
    with pytest.raises(UserError, match="other settings \\(crop\\)"):
        prepare(config(kp, cp, images, tmp_path / "out", resolution=64, crop="center"))
    with pytest.raises(UserError, match="other settings \\(buckets\\)"):
        prepare(config(kp, cp, images, tmp_path / "out", resolution=64, buckets=True))
    prepare(config(kp, cp, images, tmp_path / "out", resolution=64, buckets=True, overwrite=True))
    # a rerun with the same settings resumes (nothing to do) and reports the same kept fractions
    first = json.loads((tmp_path / "out" / "summary.json").read_text())["splits"]["val"]
    again = prepare(config(kp, cp, images, tmp_path / "out", resolution=64, buckets=True))["splits"]["val"]
    assert again["reused"] == 1 and again["kept_in_output"] == first["kept_in_output"]


def test_hand_boxes_from_keypoints_and_wholebody(make_coco, tmp_path):
    """Person 1 gets arms; a WholeBody file gives person 1's right hand and person 2's left; summary counts them."""
    kp, cp, images = make_coco([(100, 100, [(10, 10, 50, 95), (55, 10, 95, 95)])])
    data = json.loads(kp.read_text())
    k = np.asarray(data["annotations"][0]["keypoints"], dtype=float).reshape(17, 3)
    k[7], k[9] = [20, 40, 2], [20, 60, 2]  # left elbow, wrist: forearm 20 px pointing down
    k[8], k[10] = [40, 40, 2], [40, 60, 2]
    data["annotations"][0]["keypoints"] = k.ravel().tolist()
    kp.write_text(json.dumps(data))
    out = tmp_path / "kp"
    summary = prepare(config(kp, cp, images, out, min_hand_size=4))
    (r,) = read_records(out / "val")
    assert r.hand_sides == ["left", "right"] and r.hand_sources == ["keypoints"] * 2
    assert summary["splits"]["val"]["hands"] == {"keypoints": 2, "wholebody": 0}
    # 100² -> 64²: ×0.64; left hand centre (20, 60 + 0.34 × 20) -> (12.8, 42.75), side 0.88 × 20 × 0.64 = 11.3
    x0, y0, x1, y1 = r.hand_boxes[0]
    assert (x0, x1) == (7, 19) and (y0, y1) == (37, 49)
    assert [Image.open(out / "val" / f).size for f in r.hand_crop_files] == [(64, 64)] * 2
    assert r.hand_crop_files[0] == "crops/hands/1_0.png"

    given = (("right", [30, 70, 10, 10]), ("left", [60, 50, 20, 25]))
    for a, (side, box) in zip(data["annotations"], given, strict=True):
        a.update({f"{side}hand_box": box, f"{side}hand_valid": True})
    wb = tmp_path / "wholebody.json"
    wb.write_text(json.dumps(data))
    out = tmp_path / "wb"
    summary = prepare(config(kp, cp, images, out, min_hand_size=4, wholebody=wb))
    (r,) = read_records(out / "val")
    assert list(zip(r.hand_sides, r.hand_sources, strict=True)) == [
        ("left", "keypoints"), ("right", "wholebody"), ("left", "wholebody")
    ]  # fmt: skip
    assert r.hand_boxes[1] == [19, 44, 26, 52] and r.hand_boxes[2] == [38, 32, 52, 48]  # ×0.64, rounded outwards
    assert summary["splits"]["val"]["hands"] == {"keypoints": 1, "wholebody": 2}
    # --min-hand-size applies to the long side: at 14 px the 12-px keypoint hand and the 8-px WholeBody one go,
    # the 14 × 16 one stays.
    summary = prepare(config(kp, cp, images, tmp_path / "big", min_hand_size=14, wholebody=wb))
    (r,) = read_records(tmp_path / "big" / "val")
    assert r.hand_sources == ["wholebody"] and summary["splits"]["val"]["hands_below_min_size_this_run"] == 2
