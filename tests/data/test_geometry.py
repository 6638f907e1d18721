from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from humanfix.data.geometry import ResizeCrop, bucket_sizes, clip_box, nearest_bucket, people_offset, plan


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


# ---------------------------------------------------------------------------------------------------- the window


def person_keypoints(x0: float, x1: float, y0: float, y1: float, n: int = 17) -> np.ndarray:
    """17 labelled keypoints spread over a person's box (x from x0 to x1, y from y0 to y1)."""
    t = np.linspace(0, 1, n)
    return np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t[::-1], np.full(n, 2.0)], axis=1)


def test_center_is_the_historical_centre_crop():
    assert plan(300, 200, (100, 100), "center", [person_keypoints(0, 40, 10, 190)], [(0, 10, 40, 190)]) == (
        ResizeCrop.for_image(300, 200, 100)
    )


def test_people_at_one_side_pull_the_window_there():
    # 400×200 -> 200×100, 100 px to spare; a person on the left edge (source x 0..120 -> 0..60).
    kps = person_keypoints(0, 118, 10, 190)
    t = plan(400, 200, (100, 100), "people", [kps], [(0, 5, 120, 195)])
    assert t.left == 0 and t.top == 0
    assert (t.points(kps[:, :2])[:, 0] < 100).all()  # every keypoint inside
    assert ResizeCrop.for_image(400, 200, 100).left == 50  # the centre crop would cut at x = 50: most of it lost
    # On the right, mirrored: the window goes right; in the middle of a window's room it stays at the centre.
    right = plan(400, 200, (100, 100), "people", [person_keypoints(282, 398, 10, 190)], [(280, 5, 400, 195)])
    assert right.left == 100
    middle = plan(400, 200, (100, 100), "people", [person_keypoints(180, 220, 10, 190)], [(170, 5, 230, 195)])
    assert middle.left == 50  # ties (every window holds them all) go to the centre


def test_tall_images_move_the_window_vertically_and_record_it():
    kps = person_keypoints(20, 180, 300, 398)
    t = plan(200, 400, (100, 100), "people", [kps], [(10, 290, 190, 400)])
    assert (t.left, t.top) == (0, 100)
    assert t.window == [0.0, 200.0, 200.0, 400.0]  # source pixels


def test_most_keypoints_win_over_a_centred_window():
    # Two persons who cannot both fit: the one with more labelled keypoints wins.
    big = person_keypoints(0, 90, 10, 190)  # 17 points, left
    small = person_keypoints(330, 390, 10, 190, n=5)  # 5 points, right
    t = plan(400, 200, (100, 100), "people", [big, small], [(0, 5, 90, 195), (330, 5, 390, 195)])
    assert t.left == 0


def test_keypoints_outside_every_window_and_unlabelled_fall_back_to_boxes_then_centre():
    # No labelled keypoint (v = 0): the window covering most of the counted persons' boxes.
    unlabelled = person_keypoints(300, 390, 10, 190)
    unlabelled[:, 2] = 0
    t = plan(400, 200, (100, 100), "people", [unlabelled], [(300, 5, 390, 195)])
    assert t.left == 95  # box x 150..195 in resized pixels: windows 95..100 hold it all; 95 is nearest the centre
    # Labelled keypoints outside the image (COCO has a few): no window holds any, so boxes decide.
    outside = person_keypoints(-50, -10, 10, 190)
    assert plan(400, 200, (100, 100), "people", [outside], [(0, 5, 60, 195)]).left == 0
    # Nobody counted: the centre.
    assert plan(400, 200, (100, 100), "people").left == 50


def test_people_offset_ties_break_towards_the_centre_then_lower():
    # Windows 0 and 20 hold one point each, both 10 from the centre: the lower wins.
    assert people_offset(10, 20, np.array([0.0, 29.0]), np.zeros((0, 3))) == 0
    assert people_offset(10, 4, np.array([]), np.zeros((0, 3))) == 2
    assert people_offset(10, 0, np.array([5.0]), np.zeros((0, 3))) == 0


# ---------------------------------------------------------------------------------------------------- buckets


def test_bucket_sizes_are_multiples_of_64_near_the_area_at_most_2_to_1():
    assert bucket_sizes(512) == [(512, 512), (576, 448), (448, 576), (640, 384), (384, 640), (704, 320), (320, 704)]
    assert bucket_sizes(256) == [(256, 256), (320, 192), (192, 320)]
    for res in (256, 512, 768, 1024):
        for w, h in bucket_sizes(res):
            assert w % 64 == 0 and h % 64 == 0 and w * h <= res * res and w * h >= 0.85 * res * res
    with pytest.raises(ValueError):
        bucket_sizes(500)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [((640, 480), (576, 448)), ((480, 640), (448, 576)), ((512, 500), (512, 512)), ((1000, 560), (640, 384)),
     ((1600, 600), (704, 320)), ((300, 1000), (320, 704))],
)  # fmt: skip
def test_each_image_goes_to_the_nearest_aspect_and_loses_a_thin_strip(size, bucket):
    w, h = size
    assert nearest_bucket(w, h, bucket_sizes(512)) == bucket
    t = plan(w, h, bucket, "center")
    assert (t.width, t.height) == bucket
    lost = 1 - (t.width * t.height) / (t.resized_w * t.resized_h)
    assert lost < (0.14 if w / h <= 2.3 and h / w <= 2.3 else 1.0)


def test_bucket_strip_is_chosen_the_people_way():
    # 640×480 -> 576×448 bucket: resized 597×448 (21 px to spare); a person at the right edge.
    kps = person_keypoints(560, 639, 40, 470)
    t = plan(640, 480, (576, 448), "people", [kps], [(550, 30, 640, 480)])
    assert t.left == t.slack[0] == 21 and (t.width, t.height) == (576, 448)
    pts = t.points(kps[:, :2])
    assert (pts[:, 0] < 576).all() and (pts[:, 0] >= 0).all()
    assert plan(640, 480, (576, 448), "center").left == 10


def test_the_same_transform_maps_any_box_list_and_rectangular_outputs():
    t = plan(640, 480, (576, 448), "center")
    boxes = [(0, 0, 64, 64), (300, 200, 340, 260), (630, 470, 640, 480)]
    out = t.boxes(boxes)
    assert out[0] is None or out[0][0] == 0
    assert out[1] == t.box(boxes[1]) and out[1][2] <= 576 and out[1][3] <= 448
    img = Image.new("RGB", (640, 480))
    assert t.image(img).size == (576, 448) and t.mask(np.zeros((480, 640), bool)).shape == (448, 576)
    assert clip_box((500, 400, 600, 460), (576, 448)) == [500, 400, 576, 448]
