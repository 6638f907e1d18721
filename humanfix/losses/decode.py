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
import torch.nn.functional as F
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


def decode_for_loss(
    vae,
    latents: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    region: str = "boxes",
    margin: int = 2,
    checkpointing: str = "none",
) -> torch.Tensor:
    """Decode N latents for the perceptual losses: N×3×H×W float32, exact where ``region='full'``.

    With ``region='boxes'`` each sample's window (see module doc) is decoded on its own and padded
    back to full size with zeros; ``boxes`` holds, per sample, the pixel boxes the losses will read
    (K_i×4: a tensor or a list of ``(x0, y0, x1, y1)``, x1/y1 exclusive).
    """
    if region == "full":
        return vae_decode(vae, latents, checkpointing)
    if region != "boxes":
        raise ValueError(f"region must be one of {DECODE_REGIONS}, got {region!r}")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = latents.shape[-2:]
    out = []
    for latent, sample_boxes in zip(latents, boxes, strict=True):
        box_list = sample_boxes.tolist() if torch.is_tensor(sample_boxes) else list(sample_boxes)
        if not box_list:
            out.append(latent.new_zeros((3, h * factor, w * factor), dtype=torch.float32))
            continue
        x0, y0, x1, y1 = latent_window(box_list, factor, (h, w), margin)
        image = vae_decode(vae, latent[None, :, y0:y1, x0:x1], checkpointing)[0]
        pad = (x0 * factor, (w - x1) * factor, y0 * factor, (h - y1) * factor)
        out.append(F.pad(image, pad))
    return torch.stack(out)
