"""One resize-then-crop transform, applied identically to the image, mask, boxes and keypoints; and its choice.

The transform (:class:`ResizeCrop`): the source is resized so that it covers the ``width × height`` output
(scale ``max(width / w, height / h)``; each side ``round(side × scale)``, never below the output's), then
the ``width × height`` window with its corner at ``(left, top)`` in resized pixels is cut. A point ``(x, y)``
of the original image maps to ``(x * W / w - left, y * H / h - top)`` (``W × H`` the resized size): the exact
per-axis scale PIL's resize uses, so pixel content and coordinates agree. Boxes of any kind (persons, faces,
hands) are mapped by :meth:`ResizeCrop.box` / :meth:`ResizeCrop.boxes`.

Which window (:func:`plan`):

- the output size: ``resolution²`` (square), or with ``buckets`` the bucket nearest the image's aspect
  ratio (:func:`bucket_sizes`, :func:`nearest_bucket`);
- where along the axis that has room to spare (the other one is covered whole): ``center`` cuts the middle
  (the corner at ``((W - width) // 2, (H - height) // 2)``, the historical behaviour); ``people`` takes the
  window that holds the most labelled keypoints of the counted persons (ties: the one nearest the centre);
  with no keypoint inside any window, the one covering most of the counted persons' boxes; with nobody,
  the centre (:func:`people_offset`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

CROPS = ("people", "center")
BUCKET_STEP = 64  # bucket sides are multiples of this (SD's UNet needs multiples of 8 × 2³ latent downsamplings)
MAX_ASPECT = 2.0  # widest bucket: the one whose ideal (unrounded) aspect w² / resolution² is at most this


@dataclass(frozen=True)
class ResizeCrop:
    """Maps a ``src_w × src_h`` image to ``width × height``. Build it with :meth:`cover` or :meth:`for_image`."""

    src_w: int
    src_h: int
    resized_w: int  # W: width after the resize, before the crop
    resized_h: int  # H
    left: int  # crop window corner in resized pixels
    top: int
    width: int  # output size
    height: int

    @classmethod
    def cover(cls, src_w: int, src_h: int, width: int, height: int) -> ResizeCrop:
        """Resize to cover ``width × height``; the window centred (``(W - width) // 2``, ``(H - height) // 2``)."""
        scale = max(width / src_w, height / src_h)
        rw, rh = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        return cls(src_w, src_h, rw, rh, (rw - width) // 2, (rh - height) // 2, width, height)

    @classmethod
    def for_image(cls, width: int, height: int, size: int) -> ResizeCrop:
        """The centre ``size × size`` crop after resizing the short side to ``size``."""
        return cls.cover(width, height, size, size)

    @property
    def size(self) -> int:
        """The side of a square output."""
        if self.width != self.height:
            raise ValueError(f"output is {self.width}×{self.height}, not square")
        return self.width

    @property
    def sx(self) -> float:
        return self.resized_w / self.src_w

    @property
    def sy(self) -> float:
        return self.resized_h / self.src_h

    @property
    def slack(self) -> tuple[int, int]:
        """Resized pixels left out along x and y (at most one is more than a rounding pixel)."""
        return self.resized_w - self.width, self.resized_h - self.height

    def moved(self, left: int, top: int) -> ResizeCrop:
        """The same resize with the window's corner at ``(left, top)`` (clamped inside the resized image)."""
        sx, sy = self.slack
        return replace(self, left=min(max(0, left), sx), top=min(max(0, top), sy))

    @property
    def window(self) -> list[float]:
        """The output's window in SOURCE pixels ``[x0, y0, x1, y1]``, rounded to 0.01 (recorded per image)."""
        x0, x1 = self.left / self.sx, (self.left + self.width) / self.sx
        y0, y1 = self.top / self.sy, (self.top + self.height) / self.sy
        return [round(v, 2) for v in (x0, y0, x1, y1)]

    def _window_box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)

    def image(self, img: Image.Image) -> Image.Image:
        """An RGB (or any mode) PIL image of the source size -> ``width × height``, Lanczos resampling."""
        if img.size != (self.src_w, self.src_h):
            raise ValueError(f"image is {img.size}, transform expects {(self.src_w, self.src_h)}")
        out = img.resize((self.resized_w, self.resized_h), Image.Resampling.LANCZOS)
        return out.crop(self._window_box())

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """A boolean or 0/1 ``src_h × src_w`` mask -> uint8 ``height × width`` of 0/255 (nearest neighbour)."""
        if mask.shape != (self.src_h, self.src_w):
            raise ValueError(f"mask is {mask.shape}, transform expects {(self.src_h, self.src_w)}")
        m = Image.fromarray((mask > 0).astype(np.uint8) * 255)
        m = m.resize((self.resized_w, self.resized_h), Image.Resampling.NEAREST)
        return np.asarray(m.crop(self._window_box()))

    def points(self, xy: np.ndarray) -> np.ndarray:
        """``N × 2`` float source coordinates -> output coordinates (may lie outside the output)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([xy[:, 0] * self.sx - self.left, xy[:, 1] * self.sy - self.top], axis=1)

    def box(self, box: Sequence[float], min_inside: float = 0.5) -> list[int] | None:
        """A source ``[x0, y0, x1, y1]`` box -> integer output box clipped to the output, or ``None``.

        ``None`` when less than ``min_inside`` of the transformed box's area lies inside the output, or when
        fewer than 2 pixels remain on a side. The clipped box is rounded outwards (x0 down, x1 up).
        """
        (x0, y0), (x1, y1) = self.points(np.array([[box[0], box[1]], [box[2], box[3]]], dtype=np.float64))
        return clip_box((x0, y0, x1, y1), (self.width, self.height), min_inside)

    def boxes(self, boxes: Sequence[Sequence[float]], min_inside: float = 0.5) -> list[list[int] | None]:
        """Every box of a list (persons, faces, hands …) mapped by :meth:`box`, ``None`` where dropped."""
        return [self.box(b, min_inside) for b in boxes]


def clip_box(box: Sequence[float], size: int | tuple[int, int], min_inside: float = 0.5) -> list[int] | None:
    """A float box in output pixels -> integer box clipped to the output, or ``None`` if mostly outside.

    ``size`` is the output's side (square) or its ``(width, height)``.
    """
    width, height = (size, size) if isinstance(size, int) else size
    x0, y0, x1, y1 = box
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    if area <= 0 or inside < min_inside * area:
        return None
    ix0, iy0 = max(0, math.floor(cx0 + 1e-6)), max(0, math.floor(cy0 + 1e-6))
    ix1, iy1 = min(width, math.ceil(cx1 - 1e-6)), min(height, math.ceil(cy1 - 1e-6))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return None
    return [ix0, iy0, ix1, iy1]


# ---------------------------------------------------------------------------------------------------- buckets


def bucket_sizes(resolution: int) -> list[tuple[int, int]]:
    """The aspect-ratio buckets ``(width, height)`` for ``resolution`` (a multiple of 64), squarest first.

    For each width ``w = resolution, resolution + 64, …`` while ``w² / resolution² ≤ 2`` (the ideal height
    ``resolution² / w`` keeps the aspect at most 2:1), the height is the largest multiple of 64 with
    ``w × h ≤ resolution²``; each landscape bucket also gives its portrait twin. At 512: 512×512, 576×448,
    448×576, 640×384, 384×640, 704×320, 320×704 (area 100 %, 98 %, 94 %, 86 % of 512²); at 256: 256×256,
    320×192, 192×320.
    """
    if resolution % BUCKET_STEP:
        raise ValueError(f"resolution {resolution} is not a multiple of {BUCKET_STEP}")
    area = resolution * resolution
    out = [(resolution, resolution)]
    w = resolution + BUCKET_STEP
    while w * w <= MAX_ASPECT * area:
        h = area // w // BUCKET_STEP * BUCKET_STEP
        if h < BUCKET_STEP:
            break
        out += [(w, h), (h, w)]
        w += BUCKET_STEP
    return out


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's (in log ratio; ties: the earlier, squarer one)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


# ---------------------------------------------------------------------------------------------------- the window


def people_offset(length: int, slack: int, points: np.ndarray, boxes: np.ndarray) -> int:
    """Where a window of ``length`` starts on an axis of ``length + slack`` resized pixels (0 … slack).

    ``points``: the labelled keypoints' coordinates on this axis (resized pixels, any count);
    ``boxes``: K×3 ``(start, stop, weight)`` on this axis, weight = the box's extent on the other axis.
    The offset holding the most points wins, ties going to the one nearest the centre (``slack // 2``,
    then the lower one); with no point inside any window, the one covering most box area; with neither,
    the centre.
    """
    centre = slack // 2
    if slack <= 0:
        return 0
    offsets = np.arange(slack + 1, dtype=np.float64)
    score = np.zeros(slack + 1)
    points = np.asarray(points, dtype=np.float64).reshape(-1)
    if points.size:
        score = ((points[None, :] >= offsets[:, None]) & (points[None, :] < offsets[:, None] + length)).sum(1)
    if not score.max() > 0:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
        if not len(boxes):
            return centre
        lo = np.maximum(boxes[None, :, 0], offsets[:, None])
        hi = np.minimum(boxes[None, :, 1], offsets[:, None] + length)
        score = (np.clip(hi - lo, 0, None) * boxes[None, :, 2]).sum(1)
        if not score.max() > 0:
            return centre
    best = np.flatnonzero(score == score.max())
    return int(min(best, key=lambda o: (abs(int(o) - centre), int(o))))


def plan(
    src_w: int,
    src_h: int,
    size: tuple[int, int],
    crop: str = "people",
    keypoints: Sequence[np.ndarray] = (),
    boxes: Sequence[Sequence[float]] = (),
) -> ResizeCrop:
    """The transform of one image to the output ``size = (width, height)``, its window chosen by ``crop``.

    ``keypoints``: per counted person, 17×3 COCO keypoints ``[x, y, v]`` in source pixels (``v > 0``: labelled);
    ``boxes``: their ``[x0, y0, x1, y1]`` boxes in source pixels. Both only matter with ``crop="people"``.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    t = ResizeCrop.cover(src_w, src_h, *size)
    if crop == "center":
        return t
    pts = [np.asarray(k, dtype=np.float64).reshape(-1, 3) for k in keypoints]
    labelled = np.concatenate([p[p[:, 2] > 0, :2] for p in pts]) if pts else np.zeros((0, 2))
    bx = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = t.slack
    left, top = t.left, t.top
    if sx > 0:
        h = np.clip(bx[:, 3], 0, src_h) - np.clip(bx[:, 1], 0, src_h)
        left = people_offset(t.width, sx, labelled[:, 0] * t.sx, np.stack([bx[:, 0] * t.sx, bx[:, 2] * t.sx, h], 1))
    if sy > 0:
        w = np.clip(bx[:, 2], 0, src_w) - np.clip(bx[:, 0], 0, src_w)
        top = people_offset(t.height, sy, labelled[:, 1] * t.sy, np.stack([bx[:, 1] * t.sy, bx[:, 3] * t.sy, w], 1))
    return t.moved(left, top)
