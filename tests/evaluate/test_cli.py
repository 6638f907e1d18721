"""``humanfix evaluate`` end to end: metrics.json, saved statistics, faces, report, ratings, and the errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from PIL import Image

from humanfix.evaluate import fid as M


def test_fid_kid_bootstrap_report_and_saved_stats(
    tmp_path, humanfix_cli, compare_output, noise_folder, fake_inception, monkeypatch
):
    import scipy.linalg
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W

    def no_sqrtm(*args, **kwargs):  # scipy 1.18 removed sqrtm's disp, which clean-fid's frechet_distance passes
        raise AssertionError("humanfix must not reach scipy.linalg.sqrtm")

    monkeypatch.setattr(scipy.linalg, "sqrtm", no_sqrtm)

    gen = compare_output(tmp_path / "gen", ["a man", "a woman"], [1, 2, 3], ["base", "ours"])
    real = noise_folder(tmp_path / "split" / "images", n=8, seed=5, size=72).parent
    out = tmp_path / "out"
    code, stdout, stderr = humanfix_cli(
        ["evaluate", "--fid", "--kid", "--bootstrap", "20", "--report", "--generated", gen, "--real", real,
         "--save-stats", "mine", "--inception-weights", fake_inception, "--output", out]
    )  # fmt: skip
    assert code == 0, stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "clean" and m["n_real"] == 8 and sorted(m["models"]) == ["base", "ours"]
    assert m["feature_extractor"]["sha256"] == M.file_sha256(fake_inception)
    assert "fid" not in m  # two models: numbers live under "models"
    assert any("fewer than 10,000" in n for n in m["notes"])

    # the same numbers from clean-fid's own feature pipeline on the same folders (grids/ left out)
    ext = InceptionV3W(str(fake_inception.parent), download=False)
    feats = {
        name: get_folder_features(str(folder), ext, num_workers=0, device=torch.device("cpu"), verbose=False)
        for name, folder in [("real", real / "images"), ("base", gen / "base"), ("ours", gen / "ours")]
    }
    for label in ("base", "ours"):
        r = m["models"][label]
        assert r["n_generated"] == 6
        assert r["fid"] == pytest.approx(M.fid_from_features(feats["real"], feats[label]), rel=1e-6)
        assert r["fid_interval"][0] < r["fid"] < r["fid_interval"][1]
        assert r["kid"] == pytest.approx(M.kid_from_features(feats["real"], feats[label], seed=0), rel=1e-6)
    assert m["models"]["base"]["fid"] != pytest.approx(m["models"]["ours"]["fid"])
    assert "base" in stdout and "ours" in stdout and "95% interval" in stdout
    page = (out / "report.html").read_text()
    assert page.count('id="img-') == 12 and "a woman" in page

    # the saved real statistics stand in for --real
    code, _, stderr = humanfix_cli(
        ["evaluate", "--fid", "--generated", gen, "--real-stats", "mine", "--inception-weights", fake_inception,
         "--output", tmp_path / "out2"]
    )  # fmt: skip
    assert code == 0, stderr
    m2 = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert m2["models"]["ours"]["fid"] == pytest.approx(m["models"]["ours"]["fid"], rel=1e-9)


def test_a_folder_against_itself_is_zero(tmp_path, humanfix_cli, noise_folder, fake_inception):
    folder = noise_folder(tmp_path / "imgs", n=6)
    code, _, stderr = humanfix_cli(
        ["evaluate", "--fid", "--generated", folder, "--real", folder, "--inception-weights", fake_inception,
         "--output", tmp_path / "out"]
    )  # fmt: skip
    assert code == 0, stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["n_generated"] == m["n_real"] == 6 and abs(m["fid"]) < 1e-6


def test_face_metrics_and_face_crop_fid(tmp_path, humanfix_cli, ochuman, compare_output, fake_inception):
    photos = sorted(ochuman.glob("*.jpg"))
    gen = compare_output(tmp_path / "gen", ["people"], [0, 1, 2], ["photos", "noise"], photos=photos)
    real = tmp_path / "real"  # the photos at half size too (MTCNN's time grows with the pixels)
    real.mkdir()
    for f in photos:
        with Image.open(f) as im:
            im.resize((im.width // 2, im.height // 2)).save(real / f"{f.stem}.png")
    code, stdout, stderr = humanfix_cli(
        ["evaluate", "--fid", "--faces", "--clip", "--clip-model", tmp_path / "no-clip", "--generated", gen,
         "--real", real, "--inception-weights", fake_inception, "--output", tmp_path / "out"]
    )  # fmt: skip
    assert code == 0, stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["real"]["faces"]["face_rate"] == 1.0 and m["real"]["n_face_crops"] >= 3
    photos_m, noise_m = m["models"]["photos"], m["models"]["noise"]
    assert photos_m["faces"]["face_rate"] > 0.5 and photos_m["faces"]["face_confidence"] > 0.9
    assert noise_m["faces"]["face_rate"] == 0.0 and noise_m["faces"]["face_confidence"] is None
    assert abs(photos_m["face_fid"]) < 1e-6 and "face_fid" not in noise_m  # the same photos on both sides
    assert any("face-crop FID of noise skipped" in n for n in m["notes"])
    assert any("CLIP score skipped" in n for n in m["notes"])
    assert "face rate" in stdout


def test_ratings_files_are_summarised(tmp_path, humanfix_cli):
    choices = [{"left": "base", "right": "ours", "choice": "right"}] * 9 + [
        {"left": "ours", "right": "base", "choice": "right"},
        {"left": "ours", "right": "base", "choice": "tie"},
    ]
    f = tmp_path / "ab.json"
    f.write_text(json.dumps({"format": "humanfix-ab-choices", "version": 1, "choices": choices}))
    code, stdout, stderr = humanfix_cli(["evaluate", "--ratings", f, "--output", tmp_path / "out"])
    assert code == 0, stderr
    (pair,) = json.loads((tmp_path / "out" / "ratings.json").read_text())["pairs"]
    assert (pair["a"], pair["wins_a"], pair["wins_b"], pair["ties"]) == ("base", 1, 9, 1)
    assert pair["p_value"] == pytest.approx(2 * 11 / 1024)  # 2 * P(X <= 1 | 10, 1/2)
    assert "base" in stdout and "ours" in stdout


def test_user_errors_are_one_line(tmp_path, humanfix_cli, noise_folder, fake_inception):
    (tmp_path / "empty").mkdir()
    good = noise_folder(tmp_path / "good", n=3)
    broken = noise_folder(tmp_path / "broken", n=2)
    (broken / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    w = ["--inception-weights", fake_inception, "--output", tmp_path / "out"]
    cases = [
        (["--fid", "--generated", tmp_path / "empty", "--real", good, *w], "no images found"),
        (["--fid", "--generated", good, "--real", tmp_path / "empty", *w], "no images found"),
        (["--fid", "--generated", broken, "--real", good, *w], "cannot read image"),
        (["--fid", "--generated", good, "--real", good, "--inception-weights", tmp_path / "x.pt"], "x.pt not found"),
        (["--fid", "--generated", good, *w], "need a real set"),
        (["--generated", good], "nothing to do"),
        (["--fid", "--generated", good, "--real", good, "--mode", "fast", *w], "--mode must be"),
    ]
    for args, message in cases:
        code, _, stderr = humanfix_cli(["evaluate", *args])
        assert code == 2 and message in stderr, (args, stderr)
        assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr


def test_missing_default_weights_say_where_they_go(tmp_path, humanfix_cli, noise_folder, monkeypatch):
    import dataclasses

    elsewhere = dataclasses.replace(M.INCEPTION_FID, folder_fn=lambda: tmp_path)  # clean-fid's /tmp may hold it
    monkeypatch.setattr(M, "INCEPTION_FID", elsewhere)
    good = noise_folder(tmp_path / "good", n=2)
    code, _, stderr = humanfix_cli(
        ["evaluate", "--fid", "--generated", good, "--real", good, "--output", tmp_path / "o"]
    )
    assert code == 2 and f"place it at {tmp_path / 'inception-2015-12-05.pt'}" in stderr


def test_toml_config_gives_the_same_options(tmp_path, humanfix_cli, noise_folder, fake_inception):
    a, b = noise_folder(tmp_path / "a", n=3), noise_folder(tmp_path / "b", n=3, seed=1, mean=90)
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        f'generated = ["{a}"]\nreal = "{b}"\nfid = true\ninception_weights = "{fake_inception}"\n'
        f'output = "{tmp_path / "out"}"\n'
    )
    code, _, stderr = humanfix_cli(["evaluate", "--config", cfg, "--kid"])
    assert code == 0, stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["fid"] > 0 and "kid" in m and m["n_generated"] == m["n_real"] == 3
    cfg.write_text('generated = ["x"]\nfidd = true\n')
    code, _, stderr = humanfix_cli(["evaluate", "--config", cfg])
    assert code == 2 and "unknown EvaluateConfig option(s): fidd" in stderr


# A person standing facing the camera, 60 px tall in a 64×64 image, at Drillis & Contini's heights (COCO order).
STANDING = [[32, 6.2, 2], [33.1, 5.6, 2], [30.9, 5.6, 2], [34.5, 6, 2], [29.5, 6, 2], [38.6, 12.9, 2], [25.4, 12.9, 2],
            [39, 24.2, 2], [25, 24.2, 2], [39.5, 32.9, 2], [24.5, 32.9, 2], [35, 30.2, 2], [29, 30.2, 2],
            [35, 44.9, 2], [29, 44.9, 2], [35, 59.7, 2], [29, 59.7, 2]]  # fmt: skip


def _with_keypoints(split, keypoints) -> None:
    from humanfix.data.records import read_records, write_records

    write_records(split, [dataclasses.replace(r, keypoints=[keypoints]) for r in read_records(split)])


def test_pose_end_to_end_with_random_weights(tmp_path, humanfix_cli, compare_output, prepared_set):
    gen = compare_output(tmp_path / "gen", ["a person", "two people"], [1, 2], ["base", "ours"])
    _with_keypoints(prepared_set / "val", STANDING)
    out = tmp_path / "out"
    code, stdout, stderr = humanfix_cli(
        ["evaluate", "--pose", "--pose-weights", "random", "--pose-reference", "ground-truth", "--report",
         "--generated", gen, "--real", prepared_set / "val", "--pose-bootstrap", "200", "--device", "cpu",
         "--output", out]
    )  # fmt: skip
    assert code == 0, stderr
    m = json.loads((out / "metrics.json").read_text())
    setup = m["pose_setup"]
    assert setup["weights"] == "random" and "random stand-in weights" in setup["label"]
    assert setup["reference"] == "ground-truth" and setup["bootstrap"]["resamples"] == 200
    assert any("random stand-in weights" in n for n in m["notes"])
    for label in ("base", "ours"):
        p = m["models"][label]["pose"]
        assert p["n_images"] == 4 and p["person_rate"] == 1.0 and p["n_persons"] >= 4
        assert 0 < p["keypoint_confidence"] <= 1 and p["n_scored"] + p["n_unscored"] == p["n_persons"]
        lo, hi = p["plausible_rate_interval"]
        assert 0 <= lo <= p["plausible_rate"] <= hi <= 1 and 0 <= p["plausibility"] <= 1
    real = m["real"]["pose"]
    assert real["source"].startswith("ground truth") and real["keypoint_confidence"] is None
    assert (real["n_persons"], real["n_scored"], real["plausible_rate"], real["plausibility"]) == (3, 3, 1.0, 1.0)
    lines = [json.loads(line) for line in (out / "pose.jsonl").read_text().splitlines()]
    assert len(lines) == 8 + 3 and {ln["model"] for ln in lines} == {"base", "ours", "real"}
    assert all(len(p["keypoints"]) == 17 and len(p["box"]) == 4 for ln in lines for p in ln["persons"])
    page = (out / "report.html").read_text()
    data = json.loads(re.search(r'<script id="pose-data" type="application/json">(.*?)</script>', page, re.S)[1])
    assert len(data["images"]) == 8 and data["min_confidence"] == 0.3 and 'id="show-skeletons"' in page
    assert "random stand-in weights" in page and "plausible poses" in page
    assert "RANDOM" in stdout and "plausible" in stdout and "pose.jsonl" in stdout


def test_pose_bad_input_is_one_line_or_a_note(tmp_path, humanfix_cli, noise_folder, prepared_set, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    gen = noise_folder(tmp_path / "gen", n=2)
    random = ["--pose", "--pose-weights", "random", "--device", "cpu", "--pose-bootstrap", "50"]
    errors = [
        (["--pose", "--pose-detector", "nobody/nothing", "--generated", gen], "hf download nobody/nothing"),
        (["--pose", "--generated", gen], "hf download PekingU/rtdetr_r50vd_coco_o365"),
        ([*random, "--pose-reference", "ground-truth", "--generated", gen], "reads the keypoints of --real"),
        ([*random, "--pose-reference", "ground-truth", "--generated", gen, "--real", gen], "prepare-data split"),
        ([*random, "--pose-weights", "imagenet", "--generated", gen], "--pose-weights must be"),
        ([*random, "--person-threshold", "1.5", "--generated", gen], "--person-threshold must be"),
    ]
    for args, message in errors:
        code, _, stderr = humanfix_cli(["evaluate", *args, "--output", tmp_path / "o"])
        assert code == 2 and message in stderr, (args, stderr)
        assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
    # no person in any image; every person with too few confident keypoints; ground truth with too few
    _with_keypoints(prepared_set / "val", [[0, 0, 0]] * 12 + STANDING[12:])
    for args, note in [
        (["--person-threshold", "0.99"], "no person found in 2 image(s)"),
        (["--keypoint-threshold", "0.99"], "above --keypoint-threshold 0.99: no plausibility"),
        (["--pose-reference", "ground-truth", "--real", prepared_set / "val"], "pose, real: none of 3 person(s)"),
    ]:
        out = tmp_path / "notes"
        code, _, stderr = humanfix_cli(["evaluate", *random, *args, "--generated", gen, "--output", out])
        assert code == 0, stderr
        m = json.loads((out / "metrics.json").read_text())
        assert any(note in n for n in m["notes"]), m["notes"]
        pose = m["real"]["pose"] if "--real" in args else m["pose"]
        assert pose["plausible_rate"] is None and pose["plausibility"] is None


def test_pose_ground_truth_of_the_prepared_ochuman_sample_is_plausible(tmp_path, humanfix_cli, ochuman, noise_folder):
    """A prepared split's keypoints (resized and cropped by prepare-data) are the real reference row."""
    code, _, err = humanfix_cli(
        ["prepare-data", "--keypoints", ochuman / "person_keypoints.json", "--captions", ochuman / "captions.json",
         "--images", ochuman, "--split", "val", "--min-coverage", "0", "--resolution", "128", "--face-detector",
         "none", "--workers", "1", "--no-save-crops", "--out", tmp_path / "data"]
    )  # fmt: skip
    assert code == 0, err
    code, _, err = humanfix_cli(
        ["evaluate", "--pose", "--pose-weights", "random", "--pose-reference", "ground-truth", "--device", "cpu",
         "--generated", noise_folder(tmp_path / "gen", n=2), "--real", tmp_path / "data" / "val",
         "--output", tmp_path / "out"]
    )  # fmt: skip
    assert code == 0, err
    real = json.loads((tmp_path / "out" / "metrics.json").read_text())["real"]["pose"]
    assert (real["n_images"], real["n_persons"], real["n_scored"]) == (3, 5, 5)
    assert real["plausible_rate"] == 1.0 and real["plausibility"] > 0.9  # every check within ~80% of its limit
