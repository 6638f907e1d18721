import lpips
import pytest
import torch

from humanfix.losses.perceptual import MaskedLPIPS, unit_normalize


def test_distance_map_equals_the_lpips_package():
    ours = MaskedLPIPS(pretrained=False)
    ref = lpips.LPIPS(net="vgg", spatial=True, pnet_rand=True, verbose=False).eval()
    trunk = {name: p for name, p in ref.net.named_parameters()}  # slice{k}.{index}.{weight|bias}
    for name, p in trunk.items():
        _, index, kind = name.split(".")
        p.data.copy_(dict(ours.features.named_parameters())[f"{index}.{kind}"])
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).unbind(0)
    x, y = x[None], y[None]
    torch.testing.assert_close(ours.distance_map(x, y), ref(x, y), rtol=1e-4, atol=1e-6)


def test_random_trunk_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = MaskedLPIPS(pretrained=False)
    after = torch.rand(1)
    b = MaskedLPIPS(pretrained=False)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_pretrained_trunk_loads_torchvision_vgg16_file(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = vgg16().state_dict()
    path = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    net = MaskedLPIPS(pretrained=True)
    torch.testing.assert_close(net.features[28].weight, state["features.28.weight"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_unit_normalisation_is_finite_at_zero_and_for_large_features(dtype):
    """LPIPS' channel normalisation: an all-zero feature vector gives a finite value in every dtype and a finite
    gradient (LPIPS' own form gives NaN), and features with RMS 20 over 512 channels (their sum of squares
    overflows fp16) stay exact."""
    zero = torch.zeros(1, 512, 2, 2, dtype=dtype)
    assert torch.isfinite(unit_normalize(zero)).all()
    zero32 = torch.zeros(1, 512, 2, 2, requires_grad=True)
    unit_normalize(zero32).sum().backward()
    assert torch.isfinite(zero32.grad).all()
    big = torch.full((1, 512, 2, 2), 20.0, dtype=dtype)
    torch.testing.assert_close(unit_normalize(big).float(), torch.full((1, 512, 2, 2), 512**-0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_distance_map_matches_fp32(dtype):
    net = MaskedLPIPS(pretrained=False)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 1, 3, 64, 64, generator=g) * 2 - 1).unbind(0)
    ref = net.distance_map(x, y)
    half = net.to(dtype).distance_map(x.to(dtype), y.to(dtype))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(half, ref, rtol=0.1, atol=0.02)
