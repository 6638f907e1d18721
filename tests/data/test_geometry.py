from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from humanfix.data.geometry import ResizeCrop, clip_box


@pytest.mark.parametrize("size", [(333, 217), (217, 333), (640, 480)])
def test_image_mask_box_and_keypoints_agree_after_resize_and_crop(size):
    w, h = size
    rect = (0.35 * w, 0.3 * h, 0.6 * w, 0.8 * h)  # x0, y0, x1, y1 (exclusive), in source pixels
    rect = tuple(round(v) for v in rect)
    img = Image.new("RGB", (w, h), (0, 0, 0))
    ImageDraw.Draw(img).rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=(255, 0, 0))
    mask = np.zeros((h, w), bool)
    mask[rect[1] : rect[3], rect[0] : rect[2]] = True

    t = ResizeCrop.for_image(w, h, 128)
    out = np.asarray(t.image(img))
    out_mask = t.mask(mask)
    assert out.shape == (128, 128, 3) and out_mask.shape == (128, 128)
    assert set(np.unique(out_mask)) <= {0, 255}

    red = out[..., 0] > 127
    ys, xs = np.nonzero(red)
    box = t.box(rect)
    assert box is not None
    # The drawn shape, the mask and the box land in the same place (within a pixel of resampling).
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    iou = (red & (out_mask > 0)).sum() / (red | (out_mask > 0)).sum()
    assert iou > 0.95
    # Keypoints: the rectangle's corners map onto the red region's corners.
    corners = t.points(np.array([[rect[0], rect[1]], [rect[2], rect[3]]]))
    assert np.allclose(corners[0], [xs.min(), ys.min()], atol=1.0)
    assert np.allclose(corners[1], [xs.max() + 1, ys.max() + 1], atol=1.0)


def test_short_side_and_centre():
    t = ResizeCrop.for_image(300, 200, 100)
    assert (t.resized_w, t.resized_h, t.left, t.top) == (150, 100, 25, 0)
    assert np.allclose(t.points(np.array([[150, 100]])), [[50, 50]])  # centre stays the centre


def test_box_clipping_and_dropping():
    assert clip_box((-10, 10, 40, 50), 100) == [0, 10, 40, 50]  # 80% inside: kept, clipped
    assert clip_box((-60, 10, 40, 50), 100) is None  # 40% inside: dropped
    assert clip_box((10.2, 10.7, 20.1, 30.0), 100) == [10, 10, 21, 30]  # rounded outwards
    assert clip_box((99, 10, 120, 50), 100) is None


def test_size_checks():
    t = ResizeCrop.for_image(300, 200, 100)
    with pytest.raises(ValueError):
        t.image(Image.new("RGB", (200, 300)))
    with pytest.raises(ValueError):
        t.mask(np.zeros((300, 200), bool))
