"""A small COCO-format sample set built from photos that ship with scikit-image (nothing is downloaded).

``python -m humanfix.data.sample OUT`` writes the COCO 2017 layout that ``humanfix prepare-data --coco-root``
reads::

    OUT/val2017/<id>.jpg
    OUT/annotations/person_keypoints_val2017.json   person polygons, boxes, 17 keypoints
    OUT/annotations/captions_val2017.json

The photos are scikit-image's two portraits of real people, ``astronaut()`` (Eileen Collins) and
``camera()`` (the cameraman), each as is, mirrored, and as an off-centre crop: 6 images. The person
outlines and keypoints were traced by hand on the 512×512 originals (coarse polygons: a demo, not a
benchmark); mirrored and cropped copies carry transformed annotations. It feeds ``make demo`` and the
end-to-end test, which must run on a fresh machine without ../shared or a network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# COCO keypoint order; the mirrored copies swap each left/right pair.
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle")  # fmt: skip
MIRROR = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]

# Hand-traced on the 512×512 originals: outline (x, y) points, and labelled keypoints {name: (x, y, v)}.
PEOPLE = {
    "astronaut": {
        "outline": [(155, 60), (180, 20), (260, 15), (300, 60), (300, 120), (290, 170), (310, 230), (350, 290),
                    (365, 330), (360, 420), (300, 511), (20, 511), (20, 300), (60, 270), (120, 230), (150, 180),
                    (160, 130)],
        "keypoints": {"nose": (225, 129, 2), "left_eye": (247, 104, 2), "right_eye": (205, 102, 2),
                      "left_ear": (270, 125, 2), "right_ear": (182, 120, 2), "left_shoulder": (320, 270, 2),
                      "right_shoulder": (80, 280, 2), "left_elbow": (350, 420, 1), "right_elbow": (40, 420, 2)},
        "captions": ["an astronaut in an orange suit smiling for a portrait",
                     "a woman in a space suit holding a helmet in front of a flag"],
    },
    "camera": {
        "outline": [(165, 100), (190, 68), (240, 65), (270, 95), (275, 130), (320, 170), (325, 230), (300, 280),
                    (220, 280), (170, 300), (160, 400), (150, 511), (0, 511), (0, 330), (60, 250), (100, 180),
                    (140, 130)],
        "keypoints": {"nose": (252, 169, 2), "left_eye": (236, 147, 2), "right_eye": (252, 150, 1),
                      "left_ear": (205, 150, 2), "left_shoulder": (180, 215, 2), "right_shoulder": (235, 210, 1),
                      "left_elbow": (200, 270, 2), "left_wrist": (290, 220, 2)},
        "captions": ["a man in a dark coat filming with a camera on a tripod",
                     "a photographer looking through a camera in a field"],
    },
}  # fmt: skip


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def _variants(width: int, height: int):
    """(transform of a point, crop box or None, mirror) for the three copies of a photo: as is, mirrored, cropped."""
    crop = (40, 0, width - 40, height - 60)  # off-centre: 432×452
    yield lambda x, y: (x, y), None, False
    yield lambda x, y: (width - 1 - x, y), None, True
    yield lambda x, y: (x - crop[0], y - crop[1]), crop, False


def write_sample_coco(out: str | Path) -> Path:
    """Write the sample set under ``out`` (see the module doc); returns ``out``."""
    out = Path(out)
    (out / "val2017").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, persons, captions = [], [], []
    image_id = 0
    for name, person in PEOPLE.items():
        photo = _photo(name)
        height, width = photo.shape[:2]
        for move, crop, mirror in _variants(width, height):
            image_id += 1
            im = Image.fromarray(photo)
            if mirror:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if crop:
                im = im.crop(crop)
            file_name = f"{image_id:012d}.jpg"
            im.save(out / "val2017" / file_name, quality=95)
            w, h = im.size
            outline = [move(x, y) for x, y in person["outline"]]
            outline = [(min(max(x, 0), w - 1), min(max(y, 0), h - 1)) for x, y in outline]
            xs, ys = [p[0] for p in outline], [p[1] for p in outline]
            keypoints = [0.0] * 51
            for k, key in enumerate(KEYPOINTS):
                if key in person["keypoints"]:
                    x, y, v = person["keypoints"][key]
                    x, y = move(x, y)
                    slot = MIRROR[k] if mirror else k
                    keypoints[3 * slot : 3 * slot + 3] = [float(x), float(y), float(v)]
            polygon = [float(c) for p in outline for c in p]
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
            persons.append({
                "id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": [polygon], "area": float(_polygon_area(outline)),
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                "keypoints": keypoints, "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
            })  # fmt: skip
            for text in person["captions"]:
                captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": text})
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINTS)}
    meta = {"description": "humanfix sample set from scikit-image photos", "version": "1"}
    keypoints_file = {"info": meta, "images": images, "annotations": persons, "categories": [category]}
    (out / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(keypoints_file))
    captions_file = {"info": meta, "images": images, "annotations": captions}
    (out / "annotations" / "captions_val2017.json").write_text(json.dumps(captions_file))
    return out


def _polygon_area(points: list[tuple[float, float]]) -> float:
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m humanfix.data.sample OUT")
    print(write_sample_coco(sys.argv[1]))
