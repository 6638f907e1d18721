"""One resize-then-centre-crop transform, applied identically to the image, mask, boxes and keypoints.

The short side is resized to ``size`` (the long side to ``round(long * size / short)``), then the
centre ``size × size`` window is cut, its corner at ``((W - size) // 2, (H - size) // 2)``. A point
``(x, y)`` of the original image maps to ``(x * W / w - left, y * H / h - top)``: the exact per-axis
scale PIL's resize uses, so pixel content and coordinates agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ResizeCrop:
    """Maps a ``src_w × src_h`` image to ``size × size``. Build it with :meth:`for_image`."""

    src_w: int
    src_h: int
    resized_w: int  # W: width after the resize, before the crop
    resized_h: int  # H
    left: int  # crop window corner in resized pixels
    top: int
    size: int

    @classmethod
    def for_image(cls, width: int, height: int, size: int) -> ResizeCrop:
        scale = size / min(width, height)
        rw, rh = max(size, round(width * scale)), max(size, round(height * scale))
        return cls(width, height, rw, rh, (rw - size) // 2, (rh - size) // 2, size)

    @property
    def sx(self) -> float:
        return self.resized_w / self.src_w

    @property
    def sy(self) -> float:
        return self.resized_h / self.src_h

    def image(self, img: Image.Image) -> Image.Image:
        """An RGB (or any mode) PIL image of the source size -> ``size × size``, Lanczos resampling."""
        if img.size != (self.src_w, self.src_h):
            raise ValueError(f"image is {img.size}, transform expects {(self.src_w, self.src_h)}")
        out = img.resize((self.resized_w, self.resized_h), Image.Resampling.LANCZOS)
        return out.crop((self.left, self.top, self.left + self.size, self.top + self.size))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A boolean or 0/1 ``src_h × src_w`` mask -> uint8 ``size × size`` of 0/255 (nearest neighbour)."""
        if mask.shape != (self.src_h, self.src_w):
            raise ValueError(f"mask is {mask.shape}, transform expects {(self.src_h, self.src_w)}")
        m = Image.fromarray((mask > 0).astype(np.uint8) * 255)
        m = m.resize((self.resized_w, self.resized_h), Image.Resampling.NEAREST)
        return np.asarray(m.crop((self.left, self.top, self.left + self.size, self.top + self.size)))

    def points(self, xy: np.ndarray) -> np.ndarray:
        """``N × 2`` float source coordinates -> output coordinates (may lie outside ``[0, size)``)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([xy[:, 0] * self.sx - self.left, xy[:, 1] * self.sy - self.top], axis=1)

    def box(self, box: tuple[float, float, float, float], min_inside: float = 0.5) -> list[int] | None:
        """A source ``[x0, y0, x1, y1]`` box -> integer output box clipped to the crop, or ``None``.

        ``None`` when less than ``min_inside`` of the transformed box's area lies inside the crop, or when
        fewer than 2 pixels remain on a side. The clipped box is rounded outwards (x0 down, x1 up).
        """
        (x0, y0), (x1, y1) = self.points(np.array([[box[0], box[1]], [box[2], box[3]]]))
        return clip_box((x0, y0, x1, y1), self.size, min_inside)


def clip_box(box: tuple[float, float, float, float], size: int, min_inside: float = 0.5) -> list[int] | None:
    """A float box in output pixels -> integer box clipped to ``[0, size]``, or ``None`` if mostly outside."""
    x0, y0, x1, y1 = box
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(size), x1), min(float(size), y1)
    inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    if area <= 0 or inside < min_inside * area:
        return None
    ix0, iy0 = max(0, math.floor(cx0 + 1e-6)), max(0, math.floor(cy0 + 1e-6))
    ix1, iy1 = min(size, math.ceil(cx1 - 1e-6)), min(size, math.ceil(cy1 - 1e-6))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return None
    return [ix0, iy0, ix1, iy1]
