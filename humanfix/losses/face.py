"""The face-embedding feature loss: Σ_l α_l ‖FE_l(ĉ) − FE_l(c)‖ on face crops.

FE is InceptionResnetV1 trained on VGGFace2 (facenet-pytorch). Each face box is squared around its
centre, cropped from the decoded and the real image, resized to 160² and passed through the
network; at each chosen layer l the distance is the L2 norm of the feature difference divided by
√D_l (D_l = that layer's feature size), so layers of different sizes weigh alike before α_l.
A sample's value is the mean over its faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from humanfix.losses.crops import Boxes, IntBox, crop, owned, per_sample_mean, read_boxes
from humanfix.losses.perceptual import Fp32Constants, seeded_init, unit_normalize
from humanfix.models import weights

FACE_CROP = 160
# Layers from the stem to the identity embedding ("embedding" is the L2-normalised 512-d output).
DEFAULT_FACE_LAYERS = ("conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "embedding")
DEFAULT_FACE_LAYER_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)


class FaceFeatureLoss(Fp32Constants):
    """Multi-layer InceptionResnetV1 feature distance over face crops. Frozen; gradients flow to the input."""

    def __init__(
        self,
        pretrained: bool = True,
        layers: Sequence[str] = DEFAULT_FACE_LAYERS,
        layer_weights: Sequence[float] = DEFAULT_FACE_LAYER_WEIGHTS,
        facenet_weights: str | Path | None = None,
    ) -> None:
        """``pretrained=False`` keeps random weights (tests, the tiny model), only on explicit request."""
        from facenet_pytorch import InceptionResnetV1

        super().__init__()
        if len(layers) != len(layer_weights):
            raise ValueError(f"{len(layers)} face layers but {len(layer_weights)} weights")
        with seeded_init():  # random weights are the same in every run and on every process
            self.net = InceptionResnetV1(pretrained=None, classify=False)
        known = {name for name, _ in self.net.named_children()} | {"embedding"}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(f"unknown InceptionResnetV1 layer(s) {unknown}; choose from {sorted(known)}")
        if pretrained:
            path = weights.FACENET_VGGFACE2.require(facenet_weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
        # The same global average as its AdaptiveAvgPool2d(1), whose CUDA backward has no deterministic kernel.
        self.net.avgpool_1a = _GlobalMean()
        self.layers = tuple(layers)
        self.register_buffer("layer_weights", torch.tensor(layer_weights, dtype=torch.float32), persistent=False)
        self.pretrained = pretrained
        self.requires_grad_(False)
        self.eval()

    def fp32_constants(self) -> list[tuple[nn.Module, str]]:
        return [(self, "layer_weights")]  # float32 whatever the network's dtype

    def train(self, mode: bool = True) -> FaceFeatureLoss:
        return super().train(False)  # batch norm statistics must stay fixed

    def features(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """Features at ``self.layers`` for faces M×3×160×160 in [-1, 1].

        The network runs in its own dtype; "embedding" is its last batch-norm output L2-normalised in float32
        (the network's own ``F.normalize`` would run in fp16 under fp16 training, see ``unit_normalize``).
        """
        captured: dict[str, torch.Tensor] = {}
        names = [name if name != "embedding" else "last_bn" for name in self.layers]
        hooks = [
            getattr(self.net, name).register_forward_hook(
                lambda _m, _i, out, name=name: captured.__setitem__(name, out)
            )
            for name in set(names)
        ]
        try:
            # facenet's fixed_image_standardization maps [0, 255] to (p − 127.5)/128; ours are (p − 127.5)/127.5.
            self.net(faces * (127.5 / 128.0))
        finally:
            for h in hooks:
                h.remove()
        if "last_bn" in captured:
            captured["embedding"] = unit_normalize(captured["last_bn"][:, :, None, None], eps=1e-12)[:, :, 0, 0]
        return [captured[name] for name in self.layers]

    def regions(self, boxes: Boxes, height: int, width: int) -> tuple[list[int], list[IntBox]]:
        """The pixels this loss reads for face ``boxes`` in an H×W image: each box squared, then clipped."""
        return read_boxes(boxes, height, width, square=True)

    def forward(self, decoded: torch.Tensor, target: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample face loss for decoded/real images N×3×H×W in [-1, 1] and N tensors of K_i×4 face boxes.

        Returns ``(loss, has)``: loss N (0 where a sample has no usable face) and has N bool.
        """
        owners, used = self.regions(boxes, *decoded.shape[-2:])
        return self.compare(decoded, target, owners, used), owned(owners, decoded.shape[0], decoded.device)

    def compare(
        self, decoded: torch.Tensor, target: torch.Tensor, owners: list[int], used: list[IntBox]
    ) -> torch.Tensor:
        """Per-sample face loss (N float32, 0 for samples owning no face) over the integer (squared) boxes ``used``
        of samples ``owners`` (from :meth:`regions`). All faces go through the network as one batch."""
        n = decoded.shape[0]
        if not owners:
            return decoded.new_zeros(n, dtype=torch.float32)
        dec, tgt = (crop(t.float(), owners, used, FACE_CROP) for t in (decoded, target))
        dtype = next(self.net.parameters()).dtype
        decoded_feats = self.features(dec.to(dtype))
        with torch.no_grad():  # the real faces are the reference: no graph, no backward through them
            real_feats = self.features(tgt.to(dtype))
        per_face = dec.new_zeros(dec.shape[0])
        for alpha, a, b in zip(self.layer_weights, decoded_feats, real_feats, strict=True):
            diff = (a.float() - b.float()).flatten(1)
            per_face = per_face + alpha * torch.linalg.vector_norm(diff, dim=1) / diff.shape[1] ** 0.5
        return per_sample_mean(per_face, owners, n)


class _GlobalMean(nn.Module):
    """N×C×H×W -> N×C×1×1 mean over space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)
