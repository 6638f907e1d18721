"""Boxes to crops, differentiably, without reading a pixel outside the box.

Boxes are ``[x0, y0, x1, y1]`` in image pixels with x1, y1 exclusive (the prepare-data contract).
A crop reads an integer slice (x0, y0 rounded down, x1, y1 rounded up, clipped to the image; faces
squared around the centre first) and resizes it bilinearly (``align_corners=False``, no antialias:
the numbers of ``F.interpolate`` on the slice). The resize is written as two small matrices, one per
axis, that are zero outside the slice: every box of a batch is cropped by one batched product, pixels
outside every box cannot change a crop, gradients flow back into exactly the sliced pixels, and the
backward pass is deterministic on CUDA (bilinear ``F.interpolate`` has no deterministic CUDA backward).

Which slices a loss reads is decided on the host (:func:`read_boxes`), before anything is decoded: the
objective decodes exactly the latent window those slices need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Boxes = Sequence[torch.Tensor]  # per sample: K×4 float boxes (K may be 0), on the host
IntBox = tuple[int, int, int, int]


def integer_box(box: Sequence[float], height: int, width: int, square: bool = False) -> IntBox | None:
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


def read_boxes(boxes: Boxes, height: int, width: int, square: bool = False) -> tuple[list[int], list[IntBox]]:
    """The integer slices a crop of every usable box reads, and the sample each belongs to (host lists)."""
    owners: list[int] = []
    used: list[IntBox] = []
    for i, sample_boxes in enumerate(boxes):
        for box in sample_boxes.tolist() if torch.is_tensor(sample_boxes) else sample_boxes:
            ib = integer_box(box, height, width, square)
            if ib is not None:
                owners.append(i)
                used.append(ib)
    return owners, used


def resize_matrix(starts: torch.Tensor, stops: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """M×size×length bilinear weights taking ``[start, stop)`` of an axis of ``length`` pixels to ``size``.

    Row o holds F.interpolate's two taps (``align_corners=False``) for output pixel o; every weight outside
    ``[start, stop)`` is exactly zero. ``starts``/``stops`` are M integer tensors on the target device.
    """
    n_in = (stops - starts).to(torch.float64)[:, None]
    src = ((torch.arange(size, device=starts.device, dtype=torch.float64) + 0.5) * n_in / size - 0.5).clamp_min(0)
    i0 = src.floor()
    lam = (src - i0).float()
    i1 = torch.minimum(i0 + 1, n_in - 1)
    pos = torch.arange(length, device=starts.device)[None, None, :]
    first = (pos == (starts[:, None] + i0.long())[..., None]).float() * (1 - lam)[..., None]
    second = (pos == (starts[:, None] + i1.long())[..., None]).float() * lam[..., None]
    return first + second


def crop(images: torch.Tensor, owners: Sequence[int], used: Sequence[IntBox], size: int) -> torch.Tensor:
    """Crop ``images`` (N×C×H×W) at integer boxes ``used`` of samples ``owners``: M×C×size×size, in one product."""
    if not used:
        return images.new_zeros((0, images.shape[1], size, size))
    height, width = images.shape[-2:]
    b = torch.tensor(used, dtype=torch.long).to(images.device, non_blocking=True)  # M×4 (x0, y0, x1, y1)
    idx = torch.tensor(owners, dtype=torch.long).to(images.device, non_blocking=True)
    rows = resize_matrix(b[:, 1], b[:, 3], size, height).to(images.dtype)  # M×S×H
    cols = resize_matrix(b[:, 0], b[:, 2], size, width).to(images.dtype)  # M×S×W
    return rows[:, None] @ images.index_select(0, idx) @ cols[:, None].transpose(-1, -2)


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.interpolate(x, (height, width), mode="bilinear", align_corners=False)`` for N×C×h×w, as two products."""
    zero = torch.zeros(1, dtype=torch.long, device=x.device)
    rows = resize_matrix(zero, zero + x.shape[-2], height, x.shape[-2]).to(x.dtype)[0]
    cols = resize_matrix(zero, zero + x.shape[-1], width, x.shape[-1]).to(x.dtype)[0]
    return rows @ x @ cols.T


def crop_boxes(
    images: torch.Tensor, boxes: Boxes, size: int, square: bool = False, extra: Sequence[torch.Tensor] = ()
) -> tuple[list[torch.Tensor], list[int], list[IntBox]]:
    """Crop every usable box of every sample and resize it to ``size``×``size``.

    Args:
        images: N×C×H×W.
        boxes: N tensors of K_i×4 boxes in pixels.
        size: output side.
        square: make each box square around its centre first (faces).
        extra: more N×C'×H×W tensors (e.g. the ground truth, the mask) cropped at the same boxes.

    Returns:
        ``[crops of images, crops of each extra]`` (each M×C×size×size, M = number of usable boxes),
        the sample index of each crop (M ints) and the integer boxes read.
    """
    owners, used = read_boxes(boxes, *images.shape[-2:], square=square)
    return [crop(t, owners, used, size) for t in (images, *extra)], owners, used


def owned(owners: Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    """N bools: which samples own at least one crop (built on the host, copied without a device sync)."""
    flags = torch.zeros(n, dtype=torch.bool)
    flags[list(owners)] = True
    return flags.to(device, non_blocking=True)


def per_sample_mean(
    values: torch.Tensor, owners: Sequence[int], n: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Average ``values`` (M) per owning sample (weighted by ``weights`` when given); 0 for samples without any."""
    idx = torch.as_tensor(owners, dtype=torch.long).to(values.device, non_blocking=True)
    w = torch.ones_like(values) if weights is None else weights.to(values.dtype)
    num = values.new_zeros(n).index_add(0, idx, values * w)
    den = values.new_zeros(n).index_add(0, idx, w)
    return num / den.clamp_min(torch.finfo(values.dtype).tiny)
