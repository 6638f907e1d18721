"""Persons and keypoints: the tiny random RT-DETR and ViTPose end to end, real loading paths, ground truth, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from humanfix.errors import UserError
from humanfix.evaluate.persons import detect_poses, ground_truth_poses, load_pose_models
from humanfix.models.tiny_pose import tiny_detector, tiny_estimator
from humanfix.models.weights import POSE_DETECTOR, POSE_ESTIMATOR

CPU = torch.device("cpu")


def _save_tiny(folder: Path) -> tuple[Path, Path]:
    """The stand-ins as checkpoint folders, the layout `hf download` gives."""
    det, est = folder / "detector", folder / "estimator"
    for (model, processor), where in ((tiny_detector(), det), (tiny_estimator(), est)):
        model.save_pretrained(where)
        processor.save_pretrained(where)
    return det, est


def test_random_models_find_persons_and_keypoints(tmp_path, ochuman, noise_folder):
    models = load_pose_models(None, None, "random", CPU)
    assert models.weights == "random" and models.describe()["detector"].startswith("random")
    files = sorted(ochuman.glob("*.jpg")) + sorted(noise_folder(tmp_path / "noise", n=2, size=48).glob("*.png"))
    found = detect_poses(files, models, person_threshold=0.5, batch_size=2)
    assert [f.path for f in found] == files
    for im, f in zip(found, files, strict=True):
        with Image.open(f) as pil:
            assert (im.width, im.height) == pil.size
        p = len(im.boxes)
        assert p >= 1 and im.boxes.shape == (p, 4) and im.box_scores.shape == (p,) and im.keypoints.shape == (p, 17, 3)
        assert (im.box_scores >= 0.5).all() and ((im.keypoints[:, :, 2] >= 0) & (im.keypoints[:, :, 2] <= 1)).all()
        assert (im.boxes[:, [0, 2]] <= im.width).all() and (im.boxes[:, [1, 3]] <= im.height).all()
    again = detect_poses(files, load_pose_models(None, None, "random", CPU), 0.5, batch_size=5)
    np.testing.assert_allclose(again[0].keypoints, found[0].keypoints, rtol=1e-5, atol=1e-3)  # seeded, any batch
    assert all(len(im.boxes) == 0 for im in detect_poses(files[:2], models, person_threshold=0.99))


def test_pretrained_path_loads_checkpoint_folders(tmp_path, ochuman):
    det, est = _save_tiny(tmp_path)
    models = load_pose_models(str(det), str(est), "pretrained", CPU)
    assert models.weights == "pretrained" and models.names == (str(det), str(est)) and models.person_label == 0
    files = sorted(ochuman.glob("*.jpg"))[:1]
    from_folder = detect_poses(files, models, 0.5)[0]
    in_memory = detect_poses(files, load_pose_models(None, None, "random", CPU), 0.5)[0]
    np.testing.assert_allclose(from_folder.keypoints, in_memory.keypoints, rtol=1e-5, atol=1e-3)


def test_hub_ids_load_from_the_local_cache_offline(tmp_path, run_offline):
    """Hub ids resolve through the Hugging Face cache with no network, as the real checkpoints would."""
    det, est = _save_tiny(tmp_path / "saved")
    code = (
        "import torch\n"
        "from humanfix.evaluate.persons import load_pose_models\n"
        "from humanfix.models.weights import POSE_DETECTOR\n"
        "m = load_pose_models('someone/tiny-rtdetr', 'someone/tiny-vitpose', 'pretrained', torch.device('cpu'))\n"
        "cached = POSE_DETECTOR.location('someone/tiny-rtdetr')[0]\n"
        "print(type(m.detector).__name__, type(m.estimator).__name__, cached)\n"
    )
    out = run_offline({"someone/tiny-rtdetr": det, "someone/tiny-vitpose": est}, code)
    assert out.split() == ["RTDetrForObjectDetection", "VitPoseForPoseEstimation", "True"]


def test_missing_and_wrong_checkpoints_are_one_line_errors(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # whatever this machine holds
    with pytest.raises(UserError) as e:
        POSE_DETECTOR.require()
    msg = str(e.value)
    assert "hf download PekingU/rtdetr_r50vd_coco_o365" in msg and "--pose-detector" in msg and "\n" not in msg
    assert str(tmp_path / "empty-cache") in msg
    det, est = _save_tiny(tmp_path)
    with pytest.raises(UserError, match="hf download usyd-community/vitpose-base-simple"):
        load_pose_models(str(det), None, "pretrained", CPU)
    with pytest.raises(UserError, match="not found"):
        POSE_ESTIMATOR.require(str(tmp_path / "no-such-folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        POSE_DETECTOR.require(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="--pose-weights must be"):
        load_pose_models(None, None, "imagenet", CPU)
    with pytest.raises(UserError, match="cannot load the pose estimator"):  # a detector is no ViTPose
        load_pose_models(str(det), str(det), "pretrained", CPU)
    config = json.loads((det / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "cat", "1": "dog"}, {"cat": 0, "dog": 1}
    (det / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no 'person' class"):
        load_pose_models(str(det), str(est), "pretrained", CPU)


def test_ground_truth_of_a_prepared_split(tmp_path, prepared_set, noise_folder):
    files = sorted((prepared_set / "val" / "images").glob("*.jpg"))
    found = ground_truth_poses(files)
    assert [len(f.keypoints) for f in found] == [1, 1, 1] and found[0].keypoints.shape == (1, 17, 3)
    assert np.isnan(found[0].box_scores).all() and (found[0].width, found[0].height) == (64, 64)
    with pytest.raises(UserError, match="prepare-data split"):
        ground_truth_poses(sorted(noise_folder(tmp_path / "plain", n=2).glob("*.png")))
