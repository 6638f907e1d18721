"""Which images an evaluation reads: index.jsonl, plain folders, prepare-data splits, model grouping."""

from __future__ import annotations

import json

import pytest

from humanfix.errors import UserError
from humanfix.evaluate.sets import group_by_model, list_images, read_generated, real_images


def test_index_names_the_images_and_grids_are_left_out(tmp_path, compare_output):
    out = compare_output(tmp_path / "gen", ["a man", "a woman"], [3, 4], ["base", "ours"])
    s = read_generated(out)
    assert s.indexed and len(s.items) == 8
    assert not any("grids" in str(it.path) for it in s.items)
    groups = group_by_model([s])
    assert sorted(groups) == ["base", "ours"]
    first = groups["ours"][0]
    assert (first.prompt, first.seed, first.negative_prompt, first.root) == ("a man", 3, "", out)


def test_plain_folder_is_read_like_cleanfid(tmp_path, noise_folder):
    folder = noise_folder(tmp_path / "plain", n=3)
    noise_folder(folder / "sub", n=2, seed=1)
    (folder / "notes.txt").write_text("not an image")
    s = read_generated(folder)
    assert not s.indexed and len(s.items) == 5 and {it.label for it in s.items} == {"plain"}
    assert [it.path for it in s.items] == sorted(it.path for it in s.items)


def test_real_uses_images_subfolder_of_a_split(tmp_path, noise_folder):
    split = tmp_path / "val"
    noise_folder(split / "images", n=4)
    noise_folder(split / "conditioning", n=2, seed=3)  # not part of the real set
    assert len(real_images(split)) == 4
    assert len(real_images(split / "images")) == 4


def test_same_label_from_two_folders_is_kept_apart(tmp_path, compare_output):
    a = compare_output(tmp_path / "run1", ["p"], [0], ["base"])
    b = compare_output(tmp_path / "run2", ["p"], [0], ["base"])
    groups = group_by_model([read_generated(a), read_generated(b)])
    assert sorted(groups) == ["run1/base", "run2/base"]


def test_errors_name_the_problem(tmp_path, noise_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        read_generated(tmp_path / "empty")
    with pytest.raises(UserError, match="no images found"):
        real_images(tmp_path / "empty")
    with pytest.raises(UserError, match="not found"):
        real_images(tmp_path / "missing")
    bad = noise_folder(tmp_path / "bad", n=1)
    (bad / "index.jsonl").write_text('{"file": "000.png", "prompt": "x"}\nnot json\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_generated(bad)
    (bad / "index.jsonl").write_text(json.dumps({"file": "gone.png"}) + "\n")
    with pytest.raises(UserError, match="gone.png not found"):
        read_generated(bad)
    (bad / "index.jsonl").write_text(json.dumps({"file": "../escape.png"}) + "\n")
    with pytest.raises(UserError, match="outside"):
        read_generated(bad)


def test_list_images_recurses_and_sorts(tmp_path, noise_folder):
    noise_folder(tmp_path / "b", n=1)
    noise_folder(tmp_path / "a", n=2)
    files = list_images(tmp_path)
    assert [f.parent.name for f in files] == ["a", "a", "b"]


def test_real_on_a_prepare_data_root_reads_its_split_images_only(tmp_path, noise_folder, write_split):
    """The folder `train --data` takes holds masks and crops beside the images: none of them is a real image."""
    root = tmp_path / "data"
    split = write_split(root / "val", n=3)
    noise_folder(split / "crops" / "faces", n=3, seed=1)
    noise_folder(split / "crops" / "persons", n=3, seed=2)
    expected = sorted(split / f"images/{100 + i}.jpg" for i in range(3))
    assert real_images(root) == expected
    assert real_images(split) == expected
    write_split(root / "train", n=2)
    with pytest.raises(UserError, match=r"several splits.*train.*val"):
        real_images(root)
    assert len(real_images(root / "train")) == 2


def test_generated_folder_without_index_never_counts_grids_masks_or_crops(tmp_path, noise_folder, write_split):
    folder = noise_folder(tmp_path / "plain", n=3)
    noise_folder(folder / "grids", n=2, seed=1)
    assert len(read_generated(folder).items) == 3
    write_split(tmp_path / "prepared" / "val", n=2)
    assert len(read_generated(tmp_path / "prepared").items) == 2
