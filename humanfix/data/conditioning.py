"""Conditioning images for the ControlNet branch: blank, an OpenPose-style skeleton, or the person mask.

All are float tensors 3×H×W in [0, 1] (diffusers' ControlNet convention, no normalisation).
``none`` is the paper's setting: the branch sees a blank (all-zero) image and learns as a
text-conditioned adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

# COCO's 17 keypoints: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (1-based pairs below).
COCO_SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)
# One colour per limb, OpenPose-style hues around the wheel.
LIMB_COLOURS = tuple(
    tuple(
        int(c)
        for c in np.array(
            Image.new("HSV", (1, 1), (int(255 * i / len(COCO_SKELETON)), 255, 255)).convert("RGB")
        ).reshape(3)
    )
    for i in range(len(COCO_SKELETON))
)


def blank(height: int, width: int) -> torch.Tensor:
    """The all-zero conditioning image, 3×H×W."""
    return torch.zeros(3, height, width)


def render_pose(keypoints: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> torch.Tensor:
    """Draw each person's labelled keypoints (v > 0) as a coloured skeleton on black; 3×H×W in [0, 1]."""
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    thickness = max(2, round(min(height, width) / 128))
    for person in keypoints:
        for (a, b), colour in zip(COCO_SKELETON, LIMB_COLOURS, strict=True):
            pa, pb = person[a - 1], person[b - 1]
            if pa[2] > 0 and pb[2] > 0:
                draw.line([(pa[0], pa[1]), (pb[0], pb[1])], fill=colour, width=thickness)
        for x, y, v in person:
            if v > 0:
                r = thickness
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def mask_condition(mask: torch.Tensor) -> torch.Tensor:
    """The person mask (1×H×W in [0, 1]) repeated to 3 channels."""
    return mask.expand(3, -1, -1).clone()
