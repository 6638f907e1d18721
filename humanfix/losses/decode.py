"""Decode x̂0 through the frozen VAE **with gradients**: VAE weights stay frozen, the decoder stays in the graph.

(The method's public code decoded under ``torch.no_grad()``, so its perceptual terms trained nothing.)

Two ways, by ``region``:

- ``full``: decode the whole latent.
- ``boxes``: decode only the latent window covering the pixels the losses read (the objective passes
  each loss's integer crop boxes: person boxes as boxed, face boxes squared then clipped) plus
  ``margin`` latent pixels on each side (the decoder's receptive field), and place it on a blank
  full-size canvas. The losses read only inside those boxes, so the canvas outside the window never
  matters (tests/losses/test_objective.py proves it for a face box far taller than wide). The
  decoder's group norms and mid-block attention see the window rather than the whole image, so the
  result differs slightly from a full decode: the error is measured in
  ``benchmarks/step_cost.py --measure-region-error`` and recorded in docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

DECODE_REGIONS = ("full", "boxes")
CHECKPOINTING = ("none", "top", "all")


def vae_decode(vae, latents: torch.Tensor, checkpointing: str = "none") -> torch.Tensor:
    """Latents N×4×h×w (scaled, as the UNet sees them) -> images N×3×8h×8w in about [-1, 1], float32.

    ``checkpointing`` (with gradients on): ``none`` keeps every decoder activation for the backward pass;
    ``top`` recomputes the last, full-resolution up-block (most of the memory, a quarter of the FLOPs);
    ``all`` recomputes the mid-block and every up-block (diffusers' own decoder checkpointing).
    """
    if checkpointing not in CHECKPOINTING:
        raise ValueError(f"checkpointing must be one of {CHECKPOINTING}, got {checkpointing!r}")
    dtype = next(vae.parameters()).dtype
    scaled = latents.to(dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        scaled = scaled + shift
    dec = getattr(vae, "decoder", None)
    plain = checkpointing == "none" or not torch.is_grad_enabled()
    if plain or not all(hasattr(dec, a) for a in ("conv_in", "mid_block", "up_blocks", "conv_norm_out")):
        return vae.decode(scaled).sample.float()
    # diffusers' Decoder.forward (latent_embeds=None), with a choice of which blocks are checkpointed.
    z = vae.post_quant_conv(scaled) if getattr(vae, "post_quant_conv", None) is not None else scaled
    blocks = [dec.mid_block, *dec.up_blocks]
    recompute = set(range(len(blocks))) if checkpointing == "all" else {len(blocks) - 1}
    x = dec.conv_in(z)
    for k, block in enumerate(blocks):
        x = checkpoint(block, x, None, use_reentrant=False) if k in recompute else block(x, None)
    return dec.conv_out(dec.conv_act(dec.conv_norm_out(x))).float()


def latent_window(
    boxes: Sequence[Sequence[float]], factor: int, latent_hw: tuple[int, int], margin: int
) -> tuple[int, int, int, int]:
    """The latent window ``(x0, y0, x1, y1)`` covering pixel ``boxes`` plus ``margin`` latent pixels, clipped."""
    h, w = latent_hw
    x0 = min(b[0] for b in boxes) / factor
    y0 = min(b[1] for b in boxes) / factor
    x1 = max(b[2] for b in boxes) / factor
    y1 = max(b[3] for b in boxes) / factor
    return (
        max(0, math.floor(x0) - margin),
        max(0, math.floor(y0) - margin),
        min(w, math.ceil(x1) + margin),
        min(h, math.ceil(y1) + margin),
    )


PAD_BUDGET = 1.25  # windows decode together while padding them to one size adds at most 25% of their area


def decode_for_loss(
    vae,
    latents: torch.Tensor,
    boxes: Sequence[Sequence[Sequence[float]]],
    region: str = "boxes",
    margin: int = 2,
    checkpointing: str = "none",
    pad_budget: float = PAD_BUDGET,
) -> torch.Tensor:
    """Decode N latents for the perceptual losses: N×3×H×W float32, exact where ``region='full'``.

    With ``region='boxes'`` each sample's window (see module doc) is decoded and placed on a zero canvas;
    ``boxes`` holds, per sample, the pixel boxes the losses will read (K_i×4: a tensor or a list of
    ``(x0, y0, x1, y1)``, x1/y1 exclusive); a sample without boxes decodes nothing. Windows are decoded in
    batches: a batch pads its windows to one size (each grown around its centre, inside the latent: more
    context, never less) as long as that adds at most ``pad_budget - 1`` of their area; the decoder's group
    norms are per sample, so batching changes nothing but speed.
    """
    if region == "full":
        return vae_decode(vae, latents, checkpointing)
    if region != "boxes":
        raise ValueError(f"region must be one of {DECODE_REGIONS}, got {region!r}")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    n, h, w = latents.shape[0], *latents.shape[-2:]
    out = torch.zeros((n, 3, h * factor, w * factor), device=latents.device)
    windows = {}
    for i, sample_boxes in enumerate(boxes):
        box_list = sample_boxes.tolist() if torch.is_tensor(sample_boxes) else list(sample_boxes)
        if box_list:
            windows[i] = latent_window(box_list, factor, (h, w), margin)
    for group in _window_groups(windows, pad_budget):
        gh = max(windows[i][3] - windows[i][1] for i in group)
        gw = max(windows[i][2] - windows[i][0] for i in group)
        placed = [(i, *_grown_corner(windows[i], gh, gw, h, w)) for i in group]
        images = vae_decode(
            vae, torch.stack([latents[i, :, y : y + gh, x : x + gw] for i, x, y in placed]), checkpointing
        )
        for image, (i, x, y) in zip(images, placed, strict=True):
            out[i, :, y * factor : (y + gh) * factor, x * factor : (x + gw) * factor] = image
    return out


def _window_groups(windows: dict[int, tuple[int, int, int, int]], pad_budget: float) -> list[list[int]]:
    """Samples whose windows decode together: greedily, largest first, while the padded area stays in budget."""

    def area(ws: list[tuple[int, int, int, int]]) -> tuple[int, int]:
        padded = len(ws) * max(y1 - y0 for _, y0, _, y1 in ws) * max(x1 - x0 for x0, _, x1, _ in ws)
        return padded, sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in ws)

    groups: list[list[int]] = []
    for i in sorted(windows, key=lambda i: -area([windows[i]])[1]):
        for group in groups:
            padded, actual = area([windows[j] for j in (*group, i)])
            if padded <= pad_budget * actual:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _grown_corner(window: tuple[int, int, int, int], gh: int, gw: int, h: int, w: int) -> tuple[int, int]:
    """Top-left corner of a gh×gw window that holds ``window``, grown around its centre and kept in the h×w latent."""
    x0, y0, x1, y1 = window
    return (
        max(0, min(x0 - (gw - (x1 - x0)) // 2, w - gw)),
        max(0, min(y0 - (gh - (y1 - y0)) // 2, h - gh)),
    )
