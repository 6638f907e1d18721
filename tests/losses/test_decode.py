"""Decoding x̂0 with gradients: checkpointing changes nothing but memory; the box window is exact when wide."""

import pytest
import torch
from diffusers import AutoencoderKL

from humanfix.losses.decode import decode_for_loss, latent_window, vae_decode


@pytest.fixture
def vae(tiny_model):
    model = AutoencoderKL.from_pretrained(tiny_model / "vae")
    model.requires_grad_(False)
    return model


@pytest.mark.parametrize("mode", ["top", "all"])
def test_checkpointing_gives_the_same_images_and_gradients(vae, mode):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref_in = latents.clone().requires_grad_(True)
    ref = vae_decode(vae, ref_in, "none")
    ref.square().mean().backward()
    x = latents.clone().requires_grad_(True)
    out = vae_decode(vae, x, mode)
    out.square().mean().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, ref_in.grad)
    assert all(p.grad is None for p in vae.parameters())
    # vae_decode without checkpointing is diffusers' own decode
    with torch.no_grad():
        torch.testing.assert_close(vae_decode(vae, latents), vae.decode(latents / vae.config.scaling_factor).sample)


def test_latent_window_covers_the_boxes_plus_margin():
    assert latent_window([[16, 24, 40, 48], [8, 30, 20, 36]], 8, (16, 16), 1) == (0, 2, 6, 7)
    assert latent_window([[0, 0, 128, 128]], 8, (16, 16), 4) == (0, 0, 16, 16)


def test_box_window_is_exact_when_it_covers_the_latent_and_zero_outside(vae):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = decode_for_loss(vae, latents, [torch.zeros(0, 4)] * 2, "full")
        wide = decode_for_loss(vae, latents, [torch.tensor([[8.0, 8.0, 56.0, 56.0]])] * 2, "boxes", margin=8)
        torch.testing.assert_close(wide, full)
        narrow = decode_for_loss(
            vae, latents, [torch.tensor([[16.0, 16.0, 32.0, 40.0]]), torch.zeros(0, 4)], "boxes", 0
        )
    assert narrow.shape == full.shape
    assert narrow[0, :, :16].abs().max() == 0 and narrow[0, :, 16:40, 16:32].abs().max() > 0
    assert narrow[1].abs().max() == 0  # a sample without boxes decodes nothing


def test_windows_decode_in_one_batch_as_they_would_alone(vae):
    """Same-size windows at different places: one batched decode equals decoding each window on its own."""
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    boxes = [[(8, 8, 40, 48)], [(72, 16, 104, 56)], [(40, 80, 72, 120)]]
    with torch.no_grad():
        together = decode_for_loss(vae, latents, boxes, "boxes", margin=1)
        alone = decode_for_loss(vae, latents, boxes, "boxes", margin=1, pad_budget=0)  # nothing fits a batch
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert together[1, :, 8:64, 64:112].abs().amax() > 0 and together[1, :, :, :64].abs().max() == 0


def test_window_groups_pad_within_budget_and_grown_windows_hold_their_own():
    from humanfix.losses.decode import _grown_corner, _window_groups

    windows = {0: (0, 0, 10, 10), 1: (3, 2, 12, 12), 2: (0, 0, 2, 3), 3: (5, 5, 15, 15)}
    groups = _window_groups(windows, 1.25)
    assert sorted(map(sorted, groups)) == [[0, 1, 3], [2]]  # the tiny window would triple its group's area
    for window in windows.values():
        for gh, gw in ((10, 10), (12, 14), (16, 16)):
            x, y = _grown_corner(window, gh, gw, 16, 16)
            assert 0 <= x <= window[0] and window[2] <= x + gw <= 16
            assert 0 <= y <= window[1] and window[3] <= y + gh <= 16
