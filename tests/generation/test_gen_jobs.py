"""Prompts, seeds, model labels and index records: plain data, no model."""

from __future__ import annotations

import json

import pytest

from humanfix.errors import UserError
from humanfix.generation.jobs import INDEX_KEYS, index_record, make_jobs, read_prompts, resolve_models


def _branch(folder, conditioning=None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if conditioning:
        (folder / "humanfix.json").write_text(json.dumps({"conditioning": conditioning, "base_model": "tiny"}))
    return folder


def _lora(folder):
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    return folder


def test_prompts_from_arguments_text_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a skier\n\n  two people hugging  \n")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a batter", "seed": 42, "negative_prompt": "blurry"}\n{"prompt": "a cook"}\n')
    specs = read_prompts(["first"], txt)
    assert [s.prompt for s in specs] == ["first", "a skier", "two people hugging"]
    specs = read_prompts([], jsonl)
    assert [(s.prompt, s.seed, s.negative_prompt) for s in specs] == [
        ("a batter", 42, "blurry"),
        ("a cook", None, None),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no prompts"),
        ('{"prompt": "x"}\n{"prompt": 3}\n', '"prompt" string'),
        ('{"prompt": "x"}\n{not json\n', "not valid JSON"),
        ('{"prompt": "x", "sed": 1}\n', "unknown key"),
        ('{"prompt": "x", "seed": -1}\n', "non-negative"),
        ('{"prompt": "x", "condition_image": "nope.png"}\n', "condition image not found"),
        ('{"prompt": "   "}\n', "empty prompt"),
    ],
)
def test_bad_prompts_are_user_errors(tmp_path, text, message):
    f = tmp_path / "p.jsonl"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        read_prompts([], f)


def test_missing_prompts_file(tmp_path):
    with pytest.raises(UserError, match="prompts file not found"):
        read_prompts(["x"], tmp_path / "nope.txt")


def test_seeds_are_unique_per_image_and_follow_jsonl(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": "b", "seed": 100, "negative_prompt": "ugly"}\n{"prompt": "c"}\n')
    jobs = make_jobs(read_prompts([], f), num_images=3, seed=7, negative_prompt="neg")
    assert [j.seed for j in jobs] == [7, 8, 9, 100, 101, 102, 13, 14, 15]
    assert [j.negative_prompt for j in jobs[2:4]] == ["neg", "ugly"]
    assert jobs[4].name == "00001_01_seed101.png"
    assert len({j.name for j in jobs}) == len(jobs)


def test_model_labels(tmp_path):
    a = _branch(tmp_path / "straight" / "controlnet")
    b = _branch(tmp_path / "ours" / "controlnet", "pose")
    c = _branch(tmp_path / "x" / "ours")
    models = resolve_models(None, ["base", str(a), str(b), str(c), f"mine={a}"])
    assert [m.label for m in models] == ["base", "straight", "ours", "x-ours", "mine"]
    assert [m.subdir for m in models] == [m.label for m in models]
    assert [m.conditioning for m in models] == [None, "none", "pose", "none", "none"]
    (single,) = resolve_models(a, None)
    assert single.subdir == "" and single.branch == a
    assert resolve_models(None, None)[0].branch is None


def test_lora_folders_say_what_they_are(tmp_path):
    branch = _branch(tmp_path / "run" / "controlnet")
    lora = _lora(tmp_path / "run" / "lora")
    models = resolve_models(None, ["base", str(branch), str(lora)])
    assert [(m.label, m.branch, m.lora) for m in models] == [
        ("base", None, None), ("run", branch, None), ("run-lora", None, lora),
    ]  # fmt: skip
    (single,) = resolve_models(None, None, lora)
    assert (single.label, single.subdir, single.lora, single.conditioning) == ("run", "", lora, None)


def test_model_errors(tmp_path):
    a = _branch(tmp_path / "run" / "controlnet")
    with pytest.raises(UserError, match="not a folder"):
        resolve_models(tmp_path / "missing", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither config.json nor pytorch_lora_weights.safetensors"):
        resolve_models(None, ["base", str(tmp_path / "empty")])
    with pytest.raises(UserError, match="no config.json"):
        resolve_models(tmp_path / "empty", None)
    with pytest.raises(UserError, match="either --controlnet/--lora or --compare"):
        resolve_models(a, ["base"])
    with pytest.raises(UserError, match="twice"):
        resolve_models(None, ["base", "base"])
    with pytest.raises(UserError, match="at least one"):
        resolve_models(None, [" "])


def test_index_record_keys(tmp_path):
    a = _branch(tmp_path / "run" / "controlnet", "mask")
    (job,) = make_jobs(read_prompts(["p"], None), 1, 0, "")
    settings = dict(model="tiny", steps=2, guidance_scale=7.5, scheduler="ddim", height=64, width=64,
                    conditioning_scale=0.5, lora_scale=0.8)  # fmt: skip
    base, branch, lora = resolve_models(None, ["base", str(a), str(_lora(tmp_path / "l" / "lora"))])
    rb = index_record(job, base, settings, "pose.png")
    rc = index_record(job, branch, settings, "pose.png")
    rl = index_record(job, lora, settings, "pose.png")
    assert tuple(rb) == tuple(rc) == tuple(rl) == INDEX_KEYS
    assert (rb["branch"], rb["conditioning"], rb["conditioning_scale"], rb["condition_image"]) == (None,) * 4
    assert (rb["lora"], rb["lora_scale"], rc["lora"], rc["lora_scale"]) == (None,) * 4
    assert (rc["conditioning"], rc["conditioning_scale"], rc["condition_image"]) == ("mask", 0.5, "pose.png")
    assert (rl["lora"], rl["lora_scale"], rl["branch"], rl["conditioning"]) == (
        str(tmp_path / "l" / "lora"),
        0.8,
        None,
        None,
    )
    assert rb["file"] == "base/00000_00_seed0.png" and rc["file"] == "run/00000_00_seed0.png"
