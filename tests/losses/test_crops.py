import pytest
import torch
import torch.nn.functional as F

from humanfix.losses.crops import crop, crop_boxes, integer_box, per_sample_mean, resize


def test_integer_box_rounds_outwards_and_clips():
    assert integer_box([1.5, 2.2, 10.1, 12.0], 16, 16) == (1, 2, 11, 12)
    assert integer_box([-5, -5, 40, 8], 16, 16) == (0, 0, 16, 8)
    assert integer_box([3, 3, 4, 10], 16, 16) is None  # one pixel wide
    assert integer_box([4, 0, 8, 8], 16, 16, square=True) == (2, 0, 10, 8)


def test_crops_read_only_inside_the_box_and_carry_gradients():
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 28.0]]), torch.zeros(0, 4)]
    (crops,), owners, used = crop_boxes(images, boxes, size=16)
    assert crops.shape == (1, 3, 16, 16) and owners == [0] and used == [(4, 4, 20, 28)]
    crops.sum().backward()
    grad = images.grad[0].abs().sum(0)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:28, 4:20] = True
    assert grad[inside].min() > 0 and grad[~inside].abs().max() == 0
    assert images.grad[1].abs().max() == 0


def test_per_sample_mean_handles_samples_without_crops():
    values = torch.tensor([1.0, 3.0, 5.0])
    owners = [0, 0, 2]
    out = per_sample_mean(values, owners, 3, weights=torch.tensor([1.0, 3.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([2.5, 0.0, 5.0]))


@pytest.mark.parametrize("size", [7, 16, 40])
def test_batched_crops_equal_interpolating_each_slice(size):
    """The matrix crop is F.interpolate(bilinear, align_corners=False) of each box's slice, all boxes at once."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 37, 53, generator=g)
    owners, used = [2, 0, 2], [(3, 4, 40, 30), (0, 0, 53, 37), (10, 1, 12, 36)]
    crops = crop(images, owners, used, size)
    for k, (i, (x0, y0, x1, y1)) in enumerate(zip(owners, used, strict=True)):
        ref = F.interpolate(images[i : i + 1, :, y0:y1, x0:x1], (size, size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(crops[k : k + 1], ref, rtol=0, atol=1e-5)
    ref = F.interpolate(images, (64, 90), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize(images, 64, 90), ref, rtol=0, atol=1e-5)
