"""Masked LPIPS-VGG: the perceptual distance between decoded and real person regions.

For each person box the decoded and real images are cropped (see :mod:`humanfix.losses.crops`),
resized to ``crop_size``², and compared with LPIPS-VGG in its spatial form: per VGG layer l,
unit-normalised features, squared difference, the LPIPS linear head w_l, upsampled to the crop.
The layers are summed with per-layer weights β_l (default 1, LPIPS's own sum), and the map is
averaged over the person mask inside the box. A sample's value is the mask-area-weighted mean
over its boxes. Only pixels inside a box are ever read, so pixels outside every box cannot change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from humanfix.losses.crops import Boxes, crop_boxes, per_sample_mean
from humanfix.models import weights

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def load_vgg16_trunk(trunk: nn.Module, path: Path) -> None:
    """Load torchvision's ``vgg16-397923af.pth`` into lpips' sliced VGG trunk (slices keep feature indices)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = {}
    for name, _ in trunk.named_parameters():
        _slice, index, kind = name.split(".")
        mapped[name] = state[f"features.{index}.{kind}"]
    trunk.load_state_dict(mapped)


class MaskedLPIPS(nn.Module):
    """LPIPS-VGG over person boxes, weighted by the person mask. Frozen; gradients flow to the input."""

    def __init__(
        self,
        pretrained: bool = True,
        layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
        crop_size: int = 224,
        vgg_weights: str | Path | None = None,
    ) -> None:
        """``pretrained=False`` keeps a random VGG trunk (tests, the tiny model); the heads always ship with lpips."""
        import lpips

        super().__init__()
        if len(layer_weights) != len(LPIPS_LAYERS):
            raise ValueError(f"LPIPS needs {len(LPIPS_LAYERS)} layer weights, got {len(layer_weights)}")
        base = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        if pretrained:
            load_vgg16_trunk(base.net, weights.VGG16.require(vgg_weights))
        self.scaling_layer, self.net, self.lins = base.scaling_layer, base.net, base.lins
        self.register_buffer("layer_weights", torch.tensor(layer_weights, dtype=torch.float32), persistent=False)
        self.crop_size = crop_size
        self.pretrained = pretrained
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> MaskedLPIPS:
        return super().train(False)  # dropout in the heads must stay off

    def distance_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The weighted spatial LPIPS map, N×1×H×W, for images N×3×H×W in [-1, 1]."""
        import lpips

        fx = self.net(self.scaling_layer(x))
        fy = self.net(self.scaling_layer(y))
        total = x.new_zeros((x.shape[0], 1, *x.shape[-2:]))
        for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
            diff = (lpips.normalize_tensor(a) - lpips.normalize_tensor(b)) ** 2
            layer = self.lins[k](diff)
            total = total + self.layer_weights[k] * F.interpolate(
                layer, size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        return total

    def forward(
        self, decoded: torch.Tensor, target: torch.Tensor, masks: torch.Tensor, boxes: Boxes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample masked LPIPS.

        Args:
            decoded, target: N×3×H×W in [-1, 1] (decoded x̂0 and the real image).
            masks: N×1×H×W person mask in [0, 1].
            boxes: N tensors of K_i×4 person boxes in pixels.

        Returns:
            ``(loss, has)``: loss N (0 where a sample has no usable box) and has N bool.
        """
        n = decoded.shape[0]
        (dec, tgt, msk), owners, used = crop_boxes(
            decoded.float(), boxes, self.crop_size, extra=(target.float(), masks.float())
        )
        has = torch.zeros(n, dtype=torch.bool, device=decoded.device)
        if owners.numel() == 0:
            return decoded.new_zeros(n, dtype=torch.float32), has
        has[owners] = True
        dtype = next(self.net.parameters()).dtype
        dmap = self.distance_map(dec.to(dtype), tgt.to(dtype)).float()
        mask_area = msk.sum(dim=(1, 2, 3))
        # A box whose mask is empty is averaged uniformly rather than dropped.
        weight_map = torch.where(mask_area[:, None, None, None] > 0, msk, torch.ones_like(msk))
        per_box = (dmap * weight_map).sum(dim=(1, 2, 3)) / weight_map.sum(dim=(1, 2, 3))
        area = torch.tensor([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in used], device=per_box.device)
        box_weight = area * (weight_map.mean(dim=(1, 2, 3)))  # ≈ mask pixels in the original box
        return per_sample_mean(per_box, owners, n, box_weight), has
