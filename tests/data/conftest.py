"""A tiny synthetic COCO split: drawn images, polygon persons, keypoints and captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def person(aid: int, image_id: int, box: tuple[int, int, int, int], crowd: bool = False) -> dict:
    """A rectangle-shaped person annotation (polygon) with face keypoints near its top."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    kps = np.zeros((17, 3))
    eye_y = y0 + 0.1 * h
    kps[0] = [cx, eye_y + 0.04 * h, 2]  # nose
    kps[1] = [cx + 0.08 * w, eye_y, 2]  # left eye
    kps[2] = [cx - 0.08 * w, eye_y, 2]  # right eye
    kps[11] = [cx + 0.1 * w, y0 + 0.6 * h, 2]  # a hip, far from the face
    return {
        "id": aid, "image_id": image_id, "category_id": 1, "iscrowd": int(crowd),
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "area": float(w * h),
        "bbox": [x0, y0, w, h], "keypoints": kps.ravel().tolist(), "num_keypoints": 4,
    }  # fmt: skip


@pytest.fixture
def make_coco(tmp_path: Path):
    """``make_coco(specs) -> (keypoints.json, captions.json, images dir)``.

    ``specs`` is a list of ``(width, height, [person boxes x0,y0,x1,y1])``; image ids are 1, 2, ... Each
    person is drawn as a red rectangle on grey so the pixels can be checked.
    """

    def make(specs, captions: bool = True) -> tuple[Path, Path, Path]:
        images_dir = tmp_path / "images"
        images_dir.mkdir(exist_ok=True)
        images, anns, caps = [], [], []
        aid = 1
        for i, (w, h, boxes) in enumerate(specs, 1):
            img = Image.new("RGB", (w, h), (128, 128, 128))
            draw = ImageDraw.Draw(img)
            for b in boxes:
                draw.rectangle((b[0], b[1], b[2] - 1, b[3] - 1), fill=(220, 30, 30))
                anns.append(person(aid, i, b))
                aid += 1
            img.save(images_dir / f"{i:06d}.jpg", quality=95)
            images.append({"id": i, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
            caps += [{"id": 100 * i + 2, "image_id": i, "caption": f"second caption {i}"},
                     {"id": 100 * i + 1, "image_id": i, "caption": f" first caption {i} "}]  # fmt: skip
        kp = tmp_path / "persons.json"
        kp.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
        cp = tmp_path / "captions.json"
        if captions:
            cp.write_text(json.dumps({"images": images, "annotations": caps}))
        return kp, cp, images_dir

    return make
