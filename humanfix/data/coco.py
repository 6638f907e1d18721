"""COCO reading and the person filter: which images people fill, from the annotation file alone.

Reads ``person_keypoints_{split}2017.json`` (person segmentations, boxes, keypoints) and
``captions_{split}2017.json``. Masks are decoded with pycocotools; coverage is the fraction of the
original image inside the union of the non-crowd person masks.

Speed: the filter applies the cheap tests first (crowd, person count, person size, and an upper
bound on coverage from the sum of the persons' bounding-box areas, which no union of masks inside
them can exceed), and runs pycocotools' RLE union only for the images that survive them, and only when
there is a coverage threshold to test (the pipeline measures every kept image's coverage on its decoded
mask anyway).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from humanfix.errors import UserError

log = logging.getLogger(__name__)

PERSON_CATEGORY = 1

# Reasons an image is dropped by the annotation filter, in the order they are tested.
NO_PERSON = "no_person"  # no person annotation at all
CROWD = "crowd"  # has a crowd annotation and crowds are skipped
SMALL_PERSONS = "small_persons"  # every non-crowd person is below --min-person-area
TOO_MANY_PERSONS = "too_many_persons"  # more than --max-persons persons above --min-person-area
LOW_COVERAGE = "low_coverage"  # union of person masks below --min-coverage
MALFORMED_IMAGE = "malformed_image"  # the image entry lacks a positive integer width/height, an id or a file_name
MALFORMED_ANNOTATION = "malformed_annotation"  # a person without a valid bbox/segmentation, or with bad keypoints


@dataclass(frozen=True)
class Filters:
    """The annotation filter's thresholds (documented with their defaults in ``PrepareConfig``)."""

    min_coverage: float
    min_person_area: float  # fraction of the image area
    max_persons: int
    skip_crowd: bool


@dataclass
class Candidate:
    """An image that passed the annotation filter."""

    image: dict[str, Any]  # the COCO image entry: id, file_name, width, height
    persons: list[dict[str, Any]]  # non-crowd persons above --min-person-area, by annotation id
    segmentations: list[Any]  # every non-crowd person's segmentation (the mask and coverage use all)
    coverage: float | None  # None when --min-coverage is 0 (nothing to test; prepare measures it on the mask)


@dataclass
class Selection:
    candidates: list[Candidate]  # sorted by image id
    seen: int  # images in the annotation file
    dropped: Counter = field(default_factory=Counter)  # reason -> count


def load_json(path: str | Path, what: str) -> dict[str, Any]:
    """A COCO JSON file as a dict; a missing or malformed file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with path.open("rb") as f, _no_gc():
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{what} {path} is not a COCO annotation file (no 'images' list)")
    if not isinstance(data.get("annotations"), list):
        raise UserError(f"{what} {path} is not a COCO annotation file (no 'annotations' list)")
    return data


@contextlib.contextmanager
def _no_gc():
    """Pause the cyclic garbage collector: parsing a 240 MB JSON file creates millions of objects and no
    cycles, and the collector's passes over them cost a quarter of the load time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_captions(path: str | Path) -> dict[int, list[str]]:
    """``image_id -> captions`` (stripped, in annotation-id order) from a COCO captions file."""
    data = load_json(path, "captions file")
    by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for a in data["annotations"]:
        caption = a.get("caption") if isinstance(a, dict) else None
        text = caption.strip() if isinstance(caption, str) else ""  # null or a number is no caption, not "None"
        if text and isinstance(a.get("image_id"), int):
            by_image[a["image_id"]].append((a.get("id", 0) if isinstance(a.get("id", 0), int) else 0, text))
    return {k: [t for _, t in sorted(v)] for k, v in by_image.items()}


def to_rles(segmentations: list[Any], height: int, width: int) -> list[dict[str, Any]]:
    """COCO segmentations (polygon lists, uncompressed or compressed RLE) -> compressed RLEs."""
    polygons: list[list[float]] = []
    rles: list[dict[str, Any]] = []
    for seg in segmentations:
        if isinstance(seg, list):
            polygons.extend(p for p in seg if len(p) >= 6)
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rles.append(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict):
            counts = seg["counts"]
            rles.append({"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts})
    if polygons:
        rles.extend(mask_utils.frPyObjects(polygons, height, width))
    return rles


def union_rle(segmentations: list[Any], height: int, width: int) -> dict[str, Any] | None:
    """The union of the segmentations as one compressed RLE (``None`` when there are none)."""
    rles = to_rles(segmentations, height, width)
    if not rles:
        return None
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)


def coverage(segmentations: list[Any], height: int, width: int) -> float:
    """Fraction of the ``height × width`` image inside the union of the segmentations, in [0, 1]."""
    rle = union_rle(segmentations, height, width)
    return 0.0 if rle is None else float(mask_utils.area(rle)) / (height * width)


def union_mask(segmentations: list[Any], height: int, width: int) -> np.ndarray:
    """The union of the segmentations as a boolean ``height × width`` array."""
    rle = union_rle(segmentations, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(rle).astype(bool)


def _area(a: dict[str, Any]) -> float:
    """An annotation's mask area (COCO's ``area``), or its box area when ``area`` is absent."""
    if "area" in a:
        return float(a["area"])
    return float(a["bbox"][2] * a["bbox"][3])


def select(data: dict[str, Any], filters: Filters) -> Selection:
    """Apply the annotation filter to a loaded person_keypoints file; every image is kept or counted once."""
    sel = Selection(candidates=[], seen=len(data["images"]))
    with _no_gc():
        by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in data["annotations"]:
            if isinstance(a, dict) and a.get("category_id", PERSON_CATEGORY) == PERSON_CATEGORY:
                by_image[a.get("image_id")].append(a)
        images = []
        for im in data["images"]:
            if _malformed_image(im):
                sel.dropped[MALFORMED_IMAGE] += 1
                _warn_malformed(sel, f"image entry {str(im)[:120]}: {_malformed_image(im)}")
            else:
                images.append(im)
        for im in sorted(images, key=lambda im: im["id"]):
            anns = by_image.get(im["id"])
            wrong = next((w for a in anns or [] if (w := _malformed_annotation(a, im))), None)
            if wrong:
                sel.dropped[MALFORMED_ANNOTATION] += 1
                _warn_malformed(sel, f"image {im['id']}: {wrong}")
                continue
            _select_one(im, anns, filters, sel)
    return sel


def _warn_malformed(sel: Selection, what: str) -> None:
    """The first few malformed entries, each one line (all of them are counted in the summary)."""
    n = sel.dropped[MALFORMED_IMAGE] + sel.dropped[MALFORMED_ANNOTATION]
    if n <= 5:
        log.warning("skipped, malformed: %s%s", what, " (further ones are only counted)" if n == 5 else "")


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _malformed_image(im: Any) -> str | None:
    """Why a COCO image entry cannot be used, or None."""
    if not isinstance(im, dict):
        return "not a JSON object"
    if not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
        return f"id must be an integer, got {im.get('id')!r}"
    if not (_positive_int(im.get("width")) and _positive_int(im.get("height"))):
        return f"width and height must be positive integers, got {im.get('width')!r} × {im.get('height')!r}"
    if not isinstance(im.get("file_name"), str) or not im["file_name"]:
        return f"file_name must be a non-empty string, got {im.get('file_name')!r}"
    return None


def _malformed_annotation(a: dict[str, Any], im: dict[str, Any]) -> str | None:
    """Why a person annotation cannot be used (its mask, box or keypoints would be wrong), or None."""
    aid = a.get("id", "?")
    box = a.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
        return f"annotation {aid}: bbox must be [x, y, width, height] numbers, got {box!r}"
    if box[2] <= 0 or box[3] <= 0:
        return f"annotation {aid}: bbox has a width or height <= 0: {box}"
    if a.get("iscrowd", 0) not in (0, 1, True, False):
        return f"annotation {aid}: iscrowd must be 0 or 1, got {a.get('iscrowd')!r}"
    seg = a.get("segmentation")
    if not (isinstance(seg, list) and all(isinstance(p, list) and all(map(_number, p)) for p in seg)) and not (
        isinstance(seg, dict) and "counts" in seg and "size" in seg
    ):
        return f"annotation {aid}: segmentation must be polygons or an RLE, got {str(seg)[:60]}"
    if "area" in a and not _number(a["area"]):
        return f"annotation {aid}: area must be a number, got {a['area']!r}"
    kps = a.get("keypoints")
    if kps is not None and not (isinstance(kps, list) and len(kps) in (0, 51) and all(map(_number, kps))):
        n = len(kps) if isinstance(kps, list) else type(kps).__name__
        return f"annotation {aid}: keypoints must be 17 × (x, y, v) = 51 numbers, got {n}"
    return None


def _select_one(im: dict[str, Any], anns: list[dict[str, Any]] | None, filters: Filters, sel: Selection) -> None:
    """Test one image; append it to ``sel.candidates`` or count it under its drop reason."""
    if not anns:
        sel.dropped[NO_PERSON] += 1
        return
    crowd = [a for a in anns if a.get("iscrowd", 0)]
    if crowd and filters.skip_crowd:
        sel.dropped[CROWD] += 1
        return
    people = [a for a in anns if not a.get("iscrowd", 0)]
    if not people:
        sel.dropped[NO_PERSON] += 1
        return
    w, h = im["width"], im["height"]
    min_area = filters.min_person_area * w * h
    counted = [a for a in people if _area(a) >= min_area]
    if not counted:
        sel.dropped[SMALL_PERSONS] += 1
        return
    if len(counted) > filters.max_persons:
        sel.dropped[TOO_MANY_PERSONS] += 1
        return
    # Every mask lies inside its box, so the union covers at most the sum of the box areas.
    if sum(a["bbox"][2] * a["bbox"][3] for a in people) < filters.min_coverage * w * h:
        sel.dropped[LOW_COVERAGE] += 1
        return
    segs = [a["segmentation"] for a in people]
    cov = coverage(segs, h, w) if filters.min_coverage > 0 else None
    if cov is not None and cov < filters.min_coverage:
        sel.dropped[LOW_COVERAGE] += 1
        return
    counted.sort(key=lambda a: a.get("id", 0))
    sel.candidates.append(Candidate(image=im, persons=counted, segmentations=segs, coverage=cov))
