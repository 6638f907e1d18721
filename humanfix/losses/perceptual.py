"""Masked LPIPS-VGG: the perceptual distance between decoded and real person regions.

For each person box the decoded and real images are cropped (see :mod:`humanfix.losses.crops`),
resized to ``crop_size``², and compared with LPIPS-VGG in its spatial form: per VGG layer l,
unit-normalised features, squared difference, the LPIPS linear head w_l, upsampled to the crop.
The layers are summed with per-layer weights β_l (default 1, LPIPS's own sum), and the map is
averaged over the person mask inside the box. A sample's value is the mask-area-weighted mean
over its boxes. The hand term runs the same network on hand crops, with its own crop size and layer
weights. Only pixels inside a box are ever read, so pixels outside every box cannot change it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from humanfix.losses.crops import Boxes, IntBox, crop, owned, per_sample_mean, read_boxes, resize
from humanfix.models import weights

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


@contextlib.contextmanager
def seeded_init(seed: int = 0):
    """Initialise random weights from a fixed seed without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# LPIPS' input normalisation (lpips.ScalingLayer) and the VGG16 feature indices ending each LPIPS layer.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_SLICE_ENDS = (4, 9, 16, 23, 30)


class Fp32Constants(nn.Module):
    """A loss network whose constants (input normalisation, layer weights, linear heads) stay exact float32
    whatever ``.to(device, dtype)`` does to the network: casting them to bf16 would move 0.1 to 0.10009766.

    Subclasses list them in :meth:`fp32_constants`; every move or cast (``_apply``) keeps their float32 values
    and only changes their device.
    """

    def fp32_constants(self) -> list[tuple[nn.Module, str]]:
        """(owner module, attribute name) of each constant tensor (a buffer or a frozen parameter)."""
        return []

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        exact = [(owner, name, getattr(owner, name).detach().clone()) for owner, name in self.fp32_constants()]
        super()._apply(fn, recurse)
        for owner, name, value in exact:
            moved = getattr(owner, name)
            if isinstance(moved, nn.Parameter):
                moved.data = value.to(moved.device)
            else:
                owner._buffers[name] = value.to(moved.device)
        return self


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise features N×C×H×W over channels, in float32 whatever ``x``'s dtype.

    lpips.normalize_tensor computes ``x / (sqrt(Σ x²) + eps)``; here eps sits inside the square root,
    ``x / sqrt(Σ x² + eps)``, which differs by < 1e-5 relative for any feature norm above 1e-3 but keeps the
    gradient finite at an all-zero feature vector (sqrt's derivative at 0 is infinite, so LPIPS' own form
    gives 0 × ∞ = NaN there). Float32 because Σ x² overflows fp16 once the features' RMS exceeds ~11 at
    512 channels, and eps = 1e-10 is 0 in fp16.
    """
    x = x.float()
    return x * torch.rsqrt(torch.sum(x * x, dim=1, keepdim=True) + eps)


class MaskedLPIPS(Fp32Constants):
    """LPIPS-VGG over person boxes, weighted by the person mask. Frozen; gradients flow to the input.

    The same network as ``lpips.LPIPS(net="vgg", spatial=True)``, built from the VGG16 feature layers alone
    (lpips builds the whole classifier too, 138M parameters it never uses); the linear heads are loaded from
    the file that ships inside the lpips package.
    """

    def __init__(
        self,
        pretrained: bool = True,
        layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
        crop_size: int = 224,
        vgg_weights: str | Path | None = None,
    ) -> None:
        """``pretrained=False`` keeps a random VGG trunk (tests, the tiny model); the heads always ship with lpips."""
        from torchvision.models.vgg import cfgs, make_layers

        super().__init__()
        if len(layer_weights) != len(LPIPS_LAYERS):
            raise ValueError(f"LPIPS needs {len(LPIPS_LAYERS)} layer weights, got {len(layer_weights)}")
        with seeded_init():  # a random trunk is the same in every run and on every process
            self.features = make_layers(cfgs["D"])[: _SLICE_ENDS[-1]]
        if pretrained:
            state = torch.load(weights.VGG16.require(vgg_weights), map_location="cpu", weights_only=True)
            self.features.load_state_dict(
                {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            )
        channels = (64, 128, 256, 512, 512)
        with seeded_init():
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        heads = torch.load(weights.lpips_heads_path(), map_location="cpu", weights_only=True)
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(heads[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("layer_weights", torch.tensor(layer_weights, dtype=torch.float32), persistent=False)
        self.crop_size = crop_size
        self.pretrained = pretrained
        self.requires_grad_(False)
        self.eval()

    def fp32_constants(self) -> list[tuple[nn.Module, str]]:
        return [(self, "shift"), (self, "scale"), (self, "layer_weights"), *((lin, "weight") for lin in self.lins)]

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG16 activations relu1_2 … relu5_3 for images N×3×H×W in [-1, 1] (normalised in float32, then VGG
        runs in its own dtype)."""
        h = ((x.float() - self.shift) / self.scale).to(self.features[0].weight.dtype)
        out, start = [], 0
        for end in _SLICE_ENDS:
            for layer in self.features[start:end]:
                h = layer(h)
            out.append(h)
            start = end
        return out

    def distance_map(self, x: torch.Tensor, y: torch.Tensor, layer_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted spatial LPIPS map, N×1×H×W float32, for images N×3×H×W in [-1, 1].

        ``y`` is the reference (the real image): its features are computed without a graph, so the backward
        pass runs through VGG for ``x`` alone. VGG runs in the module's dtype; the normalisation, the
        distances, the heads and the layer weights run in float32 (see :func:`unit_normalize`). ``layer_weights``
        (5, float32) replaces the module's β_l.
        """
        betas = self.layer_weights if layer_weights is None else layer_weights
        n, height, width = x.shape[0], *x.shape[-2:]
        fx = self.layer_features(x)
        with torch.no_grad():
            fy = self.layer_features(y)
        total = torch.zeros((n, 1, height, width), device=x.device)
        for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
            diff = (unit_normalize(a) - unit_normalize(b)) ** 2
            layer = F.conv2d(diff, self.lins[k].weight)
            total = total + betas[k] * resize(layer, height, width)
        return total

    def regions(self, boxes: Boxes, height: int, width: int) -> tuple[list[int], list[IntBox]]:
        """The pixels this loss reads for person ``boxes`` in an H×W image: (owner, integer box) per usable box."""
        return read_boxes(boxes, height, width)

    def forward(
        self,
        decoded: torch.Tensor,
        target: torch.Tensor,
        masks: torch.Tensor,
        boxes: Boxes,
        crop_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample masked LPIPS.

        Args:
            decoded, target: N×3×H×W in [-1, 1] (decoded x̂0 and the real image).
            masks: N×1×H×W person mask in [0, 1].
            boxes: N tensors of K_i×4 person boxes in pixels.
            crop_size: side each box is resized to (default: the one given at construction).

        Returns:
            ``(loss, has)``: loss N (0 where a sample has no usable box) and has N bool.
        """
        owners, used = self.regions(boxes, *decoded.shape[-2:])
        loss = self.compare(decoded, target, masks, owners, used, crop_size)
        return loss, owned(owners, decoded.shape[0], decoded.device)

    def compare(
        self,
        decoded: torch.Tensor,
        target: torch.Tensor,
        masks: torch.Tensor,
        owners: list[int],
        used: list[IntBox],
        crop_size: int | None = None,
        layer_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sample masked LPIPS (N float32, 0 for samples owning no box) over the integer boxes ``used`` of
        samples ``owners`` (from :meth:`regions`). All boxes go through VGG as one batch. ``layer_weights``
        (5, float32, on the device) replaces the module's β_l (the hand term's own)."""
        n = decoded.shape[0]
        if not owners:
            return decoded.new_zeros(n, dtype=torch.float32)
        size = crop_size or self.crop_size
        dec, tgt, msk = (crop(t.float(), owners, used, size) for t in (decoded, target, masks))
        dmap = self.distance_map(dec, tgt, layer_weights)  # float32 crops: normalised in float32, then cast for VGG
        mask_area = msk.sum(dim=(1, 2, 3))
        # A box whose mask is empty is averaged uniformly rather than dropped.
        weight_map = torch.where(mask_area[:, None, None, None] > 0, msk, torch.ones_like(msk))
        per_box = (dmap * weight_map).sum(dim=(1, 2, 3)) / weight_map.sum(dim=(1, 2, 3))
        areas = [float((x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in used]  # host values: copied without waiting
        area = torch.tensor(areas, dtype=torch.float32).to(per_box.device, non_blocking=True)
        box_weight = area * (weight_map.mean(dim=(1, 2, 3)))  # ≈ mask pixels in the original box
        return per_sample_mean(per_box, owners, n, box_weight)
