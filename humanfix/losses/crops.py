"""Boxes to crops, differentiably, without reading a pixel outside the box.

Boxes are ``[x0, y0, x1, y1]`` in image pixels with x1, y1 exclusive (the prepare-data contract).
A crop is an integer slice (x0, y0 rounded down, x1, y1 rounded up, clipped to the image) resized
with bilinear interpolation, which samples only inside the slice: pixels outside every box cannot
change a crop, and gradients flow back into exactly the sliced pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

Boxes = Sequence[torch.Tensor]  # per sample: K×4 float boxes (K may be 0)


def integer_box(
    box: Sequence[float], height: int, width: int, square: bool = False
) -> tuple[int, int, int, int] | None:
    """``box`` as an integer slice inside an H×W image; ``square`` grows the short side around the centre.

    Returns ``None`` for a box with less than 2 pixels on a side after clipping.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if square:
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, x1, y0, y1 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
    ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    ix1, iy1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return None
    return ix0, iy0, ix1, iy1


def crop_boxes(
    images: torch.Tensor, boxes: Boxes, size: int, square: bool = False, extra: Sequence[torch.Tensor] = ()
) -> tuple[list[torch.Tensor], torch.Tensor, list[tuple[int, int, int, int]]]:
    """Crop every box of every sample and resize it to ``size``×``size``.

    Args:
        images: N×C×H×W.
        boxes: N tensors of K_i×4 boxes in pixels.
        size: output side.
        square: make each box square around its centre first (faces).
        extra: more N×C'×H×W tensors (e.g. the ground truth, the mask) cropped at the same boxes.

    Returns:
        ``[crops of images, crops of each extra]`` (each M×C×size×size, M = number of valid boxes),
        the sample index of each crop (M, long), and the integer boxes used.
    """
    height, width = images.shape[-2:]
    tensors = [images, *extra]
    out: list[list[torch.Tensor]] = [[] for _ in tensors]
    owners: list[int] = []
    used: list[tuple[int, int, int, int]] = []
    for i, sample_boxes in enumerate(boxes):
        for box in sample_boxes.tolist() if torch.is_tensor(sample_boxes) else sample_boxes:
            ib = integer_box(box, height, width, square)
            if ib is None:
                continue
            x0, y0, x1, y1 = ib
            for k, t in enumerate(tensors):
                crop = t[i : i + 1, :, y0:y1, x0:x1]
                out[k].append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
            owners.append(i)
            used.append(ib)
    device = images.device
    stacked = [
        torch.cat(c) if c else t.new_zeros((0, t.shape[1], size, size)) for c, t in zip(out, tensors, strict=True)
    ]
    return stacked, torch.tensor(owners, dtype=torch.long, device=device), used


def per_sample_mean(
    values: torch.Tensor, owners: torch.Tensor, n: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Average ``values`` (M) per owning sample (weighted by ``weights`` when given); 0 for samples without any."""
    w = torch.ones_like(values) if weights is None else weights.to(values.dtype)
    num = values.new_zeros(n).index_add(0, owners, values * w)
    den = values.new_zeros(n).index_add(0, owners, w)
    return num / den.clamp_min(torch.finfo(values.dtype).tiny)
