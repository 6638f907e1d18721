import torch

from humanfix.losses.crops import crop_boxes, integer_box, per_sample_mean


def test_integer_box_rounds_outwards_and_clips():
    assert integer_box([1.5, 2.2, 10.1, 12.0], 16, 16) == (1, 2, 11, 12)
    assert integer_box([-5, -5, 40, 8], 16, 16) == (0, 0, 16, 8)
    assert integer_box([3, 3, 4, 10], 16, 16) is None  # one pixel wide
    assert integer_box([4, 0, 8, 8], 16, 16, square=True) == (2, 0, 10, 8)


def test_crops_read_only_inside_the_box_and_carry_gradients():
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 28.0]]), torch.zeros(0, 4)]
    (crops,), owners, used = crop_boxes(images, boxes, size=16)
    assert crops.shape == (1, 3, 16, 16) and owners.tolist() == [0] and used == [(4, 4, 20, 28)]
    crops.sum().backward()
    grad = images.grad[0].abs().sum(0)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:28, 4:20] = True
    assert grad[inside].min() > 0 and grad[~inside].abs().max() == 0
    assert images.grad[1].abs().max() == 0


def test_per_sample_mean_handles_samples_without_crops():
    values = torch.tensor([1.0, 3.0, 5.0])
    owners = torch.tensor([0, 0, 2])
    out = per_sample_mean(values, owners, 3, weights=torch.tensor([1.0, 3.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([2.5, 0.0, 5.0]))
