"""Who is in each image, and where their joints are: a person detector, then a top-down pose estimator.

- Detector: any transformers object detector with a ``person`` class, loaded with
  ``AutoModelForObjectDetection`` (default RT-DETR ``PekingU/rtdetr_r50vd_coco_o365``, COCO classes). A
  detection counts as a person from ``person_threshold`` on (its class probability after the checkpoint's
  own post-processing).
- Estimator: ``VitPoseForPoseEstimation`` (default ``usyd-community/vitpose-base-simple``) on each person's
  box: 17 COCO keypoints, each with a heatmap confidence in [0, 1].
- Both come from the local Hugging Face cache or a folder (``local_files_only``); a missing one is one
  line naming it and the ``hf download`` command. ``weights="random"`` uses the tiny random stand-ins of
  :mod:`humanfix.models.tiny_pose` instead.
- Ground truth: for a prepare-data split, the keypoints in its ``metadata.jsonl`` (output pixels, COCO
  ``v`` as the third value) stand in for the detector (``--pose-reference ground-truth``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanfix.data.records import METADATA, NUM_KEYPOINTS, read_records
from humanfix.errors import UserError
from humanfix.evaluate.sets import open_rgb
from humanfix.models.weights import POSE_DETECTOR, POSE_ESTIMATOR

WEIGHTS = ("pretrained", "random")


@dataclass
class ImagePoses:
    """The persons found in one image; P may be 0."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # P×4 float, x0 y0 x1 y1 in pixels
    box_scores: np.ndarray  # P float, the detector's person probability (NaN for ground truth)
    keypoints: np.ndarray  # P×17×3 float: x, y in pixels; confidence in [0, 1] (or COCO v for ground truth)


@dataclass
class PoseModels:
    """The detector and the estimator, their processors, and where they came from."""

    detector: Any
    detector_processor: Any
    person_label: int
    estimator: Any
    estimator_processor: Any
    device: torch.device
    weights: str  # "pretrained" or "random"
    names: tuple[str, str]  # detector, estimator: hub id or folder ("random" for the stand-ins)

    def describe(self) -> dict[str, Any]:
        return {"detector": self.names[0], "estimator": self.names[1], "weights": self.weights}


def _person_label(config: Any, name: str) -> int:
    labels = {str(v).lower(): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if "person" not in labels:
        raise UserError(f"pose detector {name} has no 'person' class (its classes: {', '.join(sorted(labels))[:200]})")
    return labels["person"]


def load_pose_models(
    detector: str | None, estimator: str | None, weights: str, device: torch.device, seed: int = 0
) -> PoseModels:
    """The two models on ``device``, pretrained from the cache or a folder, or the random stand-ins."""
    if weights not in WEIGHTS:
        raise UserError(f"--pose-weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights == "random":
        from humanfix.models.tiny_pose import tiny_detector, tiny_estimator

        det, det_proc = tiny_detector(seed)
        est, est_proc = tiny_estimator(seed)
        names = ("random (tiny RT-DETR)", "random (tiny ViTPose)")
    else:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection, VitPoseForPoseEstimation

        det_name, est_name = POSE_DETECTOR.require(detector), POSE_ESTIMATOR.require(estimator)
        det = _load(AutoModelForObjectDetection, det_name, "pose detector (an object detector)")
        det_proc = _load(AutoImageProcessor, det_name, "pose detector's image processor")
        est = _load(VitPoseForPoseEstimation, est_name, "pose estimator (a ViTPose checkpoint)")
        est_proc = _load(AutoImageProcessor, est_name, "pose estimator's image processor")
        if est.config.num_labels != NUM_KEYPOINTS:
            raise UserError(f"pose estimator {est_name} predicts {est.config.num_labels} keypoints, not COCO's 17")
        names = (det_name, est_name)
    return PoseModels(
        det.to(device).eval(), det_proc, _person_label(det.config, names[0]), est.to(device).eval(), est_proc,
        device, weights, names,
    )  # fmt: skip


def _load(cls: Any, name: str, what: str) -> Any:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load the {what} from {name}: {first}") from None


def detect_poses(
    files: Sequence[Path],
    models: PoseModels,
    person_threshold: float,
    batch_size: int = 8,
    progress: str | None = None,
) -> list[ImagePoses]:
    """Persons (detector) and their keypoints (estimator) in each image; one :class:`ImagePoses` per file."""
    from humanfix.evaluate.fid import _progress

    out: list[ImagePoses] = []
    with _progress(progress, len(files)) as advance, torch.no_grad():
        for start in range(0, len(files), batch_size):
            chunk = list(files[start : start + batch_size])
            images = [open_rgb(f) for f in chunk]
            boxes, scores = _detect(images, models, person_threshold)
            keypoints = _estimate(images, boxes, models)
            for f, im, b, s, k in zip(chunk, images, boxes, scores, keypoints, strict=True):
                out.append(ImagePoses(f, im.width, im.height, b, s, k))
            advance(len(chunk))
    return out


def _detect(images: list, models: PoseModels, threshold: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Person boxes (P×4 xyxy, clipped to the image) and probabilities per image."""
    inputs = models.detector_processor(images=images, return_tensors="pt").to(models.device)
    outputs = models.detector(**inputs)
    sizes = [(im.height, im.width) for im in images]
    results = models.detector_processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=sizes)
    boxes, scores = [], []
    for im, r in zip(images, results, strict=True):
        keep = (r["labels"] == models.person_label).cpu()
        b = r["boxes"].detach().float().cpu()[keep].numpy().reshape(-1, 4)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, im.width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, im.height)
        ok = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)  # a box the estimator can crop
        boxes.append(b[ok])
        scores.append(r["scores"].detach().float().cpu()[keep].numpy()[ok])
    return boxes, scores


def _estimate(images: list, boxes: list[np.ndarray], models: PoseModels) -> list[np.ndarray]:
    """ViTPose keypoints (P×17×3: x, y, confidence) for every box of every image."""
    out = [np.zeros((len(b), NUM_KEYPOINTS, 3)) for b in boxes]
    todo = [k for k, b in enumerate(boxes) if len(b)]
    if not todo:
        return out
    coco = [[[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes[k].tolist()] for k in todo]
    inputs = models.estimator_processor(images=[images[k] for k in todo], boxes=coco, return_tensors="pt")
    pixels = inputs["pixel_values"].to(models.device)
    extra = {}
    if getattr(models.estimator.config.backbone_config, "num_experts", 1) > 1:  # ViTPose+: COCO is dataset 0
        extra["dataset_index"] = torch.zeros(len(pixels), dtype=torch.long, device=models.device)
    outputs = models.estimator(pixel_values=pixels, **extra)
    outputs.heatmaps = outputs.heatmaps.float().cpu()
    results = models.estimator_processor.post_process_pose_estimation(outputs, boxes=coco)
    for k, persons in zip(todo, results, strict=True):
        for p, person in enumerate(persons):
            out[k][p, :, :2] = person["keypoints"].numpy()
            out[k][p, :, 2] = person["scores"].numpy().clip(0, 1)
    return out


def ground_truth_poses(files: Sequence[Path]) -> list[ImagePoses]:
    """The annotated persons of a prepare-data split's images (``SPLIT/images/*``), from its metadata.jsonl."""
    splits = {f.parent.parent for f in files if f.parent.name == "images"}
    if len(splits) != 1 or not (next(iter(splits)) / METADATA).is_file():
        where = files[0].parent if files else "--real"
        raise UserError(
            f"--pose-reference ground-truth needs --real to be a prepare-data split (with {METADATA}); "
            f"{where} is not one"
        )
    split = next(iter(splits))
    records = {(split / r.file_name).resolve(): r for r in read_records(split)}
    out = []
    for f in files:
        rec = records.get(f.resolve())
        if rec is None:
            raise UserError(f"{f} has no record in {split / METADATA}")
        kp = np.array(rec.keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        boxes = np.array(rec.person_boxes, dtype=np.float64).reshape(-1, 4)
        out.append(ImagePoses(f, rec.width, rec.height, boxes, np.full(len(boxes), np.nan), kp))
    return out
