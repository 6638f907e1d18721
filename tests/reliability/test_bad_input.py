"""Bad and odd input: each is one clear line (exit 2) naming what is wrong, or handled as documented; none silent."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from humanfix.config import build_config
from humanfix.errors import UserError

write_prepared_split = sys.modules["tests.conftest"].write_prepared_split


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [x for x in err.strip().splitlines() if x.startswith("humanfix:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------------- TOML types

TRAIN_TOML = {
    "max_steps = 2.5": "option 'max_steps': expected an integer, got 2.5",
    'gradient_checkpointing = "false"': "option 'gradient_checkpointing': expected true or false, got 'false'",
    "objective = 3": "option 'objective': expected a table",
    'batch_size = "two"': "option 'batch_size': expected an integer, got 'two'",
    'learning_rate = "1e-4"': "option 'learning_rate': expected a number, got '1e-4'",
    '[objective]\nlambda_lpips = "high"': "option 'objective.lambda_lpips': expected a number, got 'high'",
    "seed = true": "option 'seed': expected an integer, got True",
    "learning_rate = nan": "option 'learning_rate': must be a finite number, got nan",
    "[objective]\nlpips_layer_weights = [1, 1, 1, 1, inf]": "option 'objective.lpips_layer_weights[4]': must be",
}


@pytest.mark.parametrize("body", list(TRAIN_TOML))
def test_train_toml_values_are_type_checked(tmp_path, body):
    from humanfix.train import TrainConfig

    path = tmp_path / "train.toml"
    path.write_text(f'data = "somewhere"\n{body}\n')
    with pytest.raises(UserError) as e:
        build_config(TrainConfig, path)
    assert TRAIN_TOML[body] in str(e.value)


def test_an_integer_is_a_fine_float_and_the_config_still_round_trips(tmp_path):
    from humanfix.train import TrainConfig

    path = tmp_path / "train.toml"
    path.write_text('data = "d"\nlearning_rate = 1\nmax_grad_norm = 2\n[objective]\nlambda_lpips = 0\n')
    cfg = build_config(TrainConfig, path)
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert isinstance(cfg.objective.lambda_lpips, float)


def test_prepare_toml_resolution_big_is_one_line(tmp_path, humanfix_cli):
    path = tmp_path / "prepare.toml"
    path.write_text('resolution = "big"\n')
    code, _, err = humanfix_cli(["prepare-data", "--config", path, "--coco-root", tmp_path])
    one_line_error(code, err, "option 'resolution': expected an integer, got 'big'")


# ---------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lambda-face", "nan"], "option 'objective.lambda_face': must be a finite number, got nan"),
        (["--max-grad-norm", "nan"], "option 'max_grad_norm': must be a finite number, got nan"),
        (["--learning-rate", "inf"], "option 'learning_rate': must be a finite number, got inf"),
        (["--seed", "-1"], "seed must be an integer in [0, 2**32), got -1"),
        (["--seed", str(2**64)], f"seed must be an integer in [0, 2**32), got {2**64}"),
    ],
)
def test_bad_train_options_are_one_line(prepared_set, tmp_path, humanfix_cli, args, needle):
    code, _, err = humanfix_cli(["train", "--model", "tiny", "--data", prepared_set, "--split", "val",
                                 "--output", tmp_path / "run", *args])  # fmt: skip
    one_line_error(code, err, needle)
    assert not (tmp_path / "run" / "controlnet").exists()


def test_generate_guidance_scale_nan_is_one_line(tmp_path, humanfix_cli):
    code, _, err = humanfix_cli(["generate", "a person", "--model", "tiny", "--guidance-scale", "nan",
                                 "--output", tmp_path / "out"])  # fmt: skip
    one_line_error(code, err, "option 'guidance_scale': must be a finite number, got nan")
    assert not (tmp_path / "out" / "index.jsonl").exists()


def test_generate_seeds_past_what_seed_takes_are_one_line(tmp_path, humanfix_cli):
    code, _, err = humanfix_cli(["generate", "a person", "--model", "tiny", "--seed", str(2**63 - 1),
                                 "--num-images", "2", "--output", tmp_path / "out"])  # fmt: skip
    one_line_error(code, err, f"prompt 1, image 2 would get seed {2**63}, past 2**63 - 1")


def test_a_prompt_longer_than_clip_takes_is_warned_once_with_its_count(tiny_model, caplog):
    from transformers import CLIPTokenizer

    from humanfix.generate import warn_long_prompts
    from humanfix.generation.jobs import Job

    tok = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    long = " ".join(["person"] * 100)
    jobs = [Job(0, i, long, "", i, None) for i in range(3)] + [Job(1, 0, "short", "", 9, None)]
    with caplog.at_level(logging.WARNING, logger="humanfix"):
        warn_long_prompts(tok, jobs)
    records = [r for r in caplog.records if r.name.startswith("humanfix") and "longer than" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert f"1 prompt(s) are longer than the text encoder's {tok.model_max_length} tokens" in message
    assert f"the longest has {len(tok(long).input_ids)}:" in message


def test_evaluate_faces_on_a_1x1_image_is_one_line(tmp_path, humanfix_cli):
    from PIL import Image

    (tmp_path / "gen").mkdir()
    Image.new("RGB", (1, 1)).save(tmp_path / "gen" / "a.png")
    code, _, err = humanfix_cli(["evaluate", "--faces", "--generated", tmp_path / "gen", "--output", tmp_path / "o"])
    one_line_error(code, err, "a.png is 1×1 px: too small for face detection")


# ---------------------------------------------------------------------------------------------------- metadata.jsonl


def _edit_first_record(split: Path, **changes) -> None:
    meta = split / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    rec = json.loads(lines[0])
    rec.update(changes)
    lines[0] = json.dumps(rec)
    meta.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"width": "64"}, "width must be a positive integer, got '64'"),
        ({"person_boxes": [["16", "8", "48", "64"]]}, "person_boxes must be a list of [x0, y0, x1, y1] numbers"),
        ({"coco_id": "one"}, "coco_id must be an integer, got 'one'"),
        ({"keypoints": None}, "keypoints must be a list of 17 [x, y, v] numbers per person, got None"),
        ({"person_boxes": [[16, 8, 480, 64]]}, "person_boxes must lie inside the 64×64 image"),
    ],
)
def test_malformed_records_name_the_file_line_and_field(tmp_path, changes, needle):
    from humanfix.data.records import read_records

    split = write_prepared_split(tmp_path / "val")
    _edit_first_record(split, **changes)
    with pytest.raises(UserError) as e:
        read_records(split)
    assert f"{split / 'metadata.jsonl'}:1: bad record" in str(e.value) and needle in str(e.value)


def test_a_missing_or_unreadable_image_is_one_line(tmp_path):
    from humanfix.data.dataset import PreparedDataset

    split = write_prepared_split(tmp_path / "val")
    (split / "images" / "100.jpg").unlink()
    with pytest.raises(UserError, match=r"metadata.jsonl names images/100.jpg, which is not in"):
        PreparedDataset(split)
    (split / "images" / "100.jpg").write_text("this is text, not a JPEG")
    ds = PreparedDataset(split)
    with pytest.raises(UserError, match=r"images/100.jpg is not a readable image"):
        ds[0]


# ---------------------------------------------------------------------------------------------------- COCO


def _person(aid: int, image_id: int, **changes) -> dict:
    ann = {"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": 1200.0, "bbox": [12, 4, 40, 40],
           "segmentation": [[12, 4, 52, 4, 52, 44, 12, 44]], "keypoints": [0] * 51}  # fmt: skip
    ann.update(changes)
    return {k: v for k, v in ann.items() if v is not ...}


MALFORMED = {
    "negative bbox width": {"bbox": [12, 4, -40, 40]},
    "no bbox": {"bbox": ...},
    "no segmentation": {"segmentation": ...},
    "16 keypoints": {"keypoints": [0] * 48},
    "string keypoints": {"keypoints": ["1"] * 51},
    "string bbox": {"bbox": ["12", "4", "40", "40"]},
}


def test_malformed_coco_entries_are_counted_under_their_own_reason(caplog):
    from humanfix.data import coco

    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(1, len(MALFORMED) + 3)]
    anns = [_person(10 + i, i, **change) for i, change in enumerate(MALFORMED.values(), 1)]
    good = len(MALFORMED) + 1
    anns.append(_person(99, good))
    images[-1] = {"id": good + 1, "file_name": "x.jpg", "height": 48}  # no width
    filters = coco.Filters(min_coverage=0.0, min_person_area=0.0, max_persons=5, skip_crowd=True)
    with caplog.at_level(logging.WARNING, logger="humanfix"):
        sel = coco.select({"images": images, "annotations": anns}, filters)
    assert dict(sel.dropped) == {coco.MALFORMED_ANNOTATION: len(MALFORMED), coco.MALFORMED_IMAGE: 1}
    assert [c.image["id"] for c in sel.candidates] == [good]
    assert "bbox has a width or height <= 0" in caplog.text  # not low_coverage, even with --min-coverage 0


def test_a_null_caption_is_no_caption(tmp_path):
    from humanfix.data.coco import load_captions

    path = tmp_path / "captions.json"
    anns = [{"id": 1, "image_id": 1, "caption": None}, {"id": 2, "image_id": 1, "caption": " a man "},
            {"id": 3, "image_id": 2, "caption": None}]  # fmt: skip
    path.write_text(json.dumps({"images": [], "annotations": anns}))
    assert load_captions(path) == {1: ["a man"]}
