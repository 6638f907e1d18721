"""The mask-aware objective: L = λ1·L_lpips + λ2·L_face + (1 − λ1 − λ2)·L_LDM for samples with t < T.

Per sample i in a batch (timesteps and gating are per sample):

- L_LDM,i: mean squared error between the UNet(+branch) output and its target (ε, v or x0);
- gated in when t_i < T; a gated sample with at least one usable person box gets λ1·L_lpips,i,
  with at least one usable face box λ2·L_face,i; L_LDM,i gets what is left, 1 − (weights used),
  so a sample's weights always sum to one (a missing term hands its weight to L_LDM);
- samples with t_i ≥ T get L_LDM,i alone, and no decoder work is done for them.

The total is the batch mean of the per-sample mixtures. The perceptual terms compare the decoded
x̂0 with the real training image at training resolution (not its VAE reconstruction), so they
also push towards detail the VAE round trip loses. docs/objective.md has the formulas and choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from humanfix.errors import UserError
from humanfix.losses.decode import CHECKPOINTING, DECODE_REGIONS, decode_for_loss
from humanfix.losses.face import DEFAULT_FACE_LAYER_WEIGHTS, DEFAULT_FACE_LAYERS, FaceFeatureLoss
from humanfix.losses.perceptual import LPIPS_LAYERS, MaskedLPIPS
from humanfix.losses.x0 import PREDICTION_TYPES, predict_x0


@dataclass
class ObjectiveConfig:
    """The objective's settings; every field is a ``humanfix train`` option of the same name."""

    # λ1: weight of the masked LPIPS term on gated samples.
    lambda_lpips: float = 0.0
    # λ2: weight of the face-feature term on gated samples.
    lambda_face: float = 0.0
    # T: samples with timestep t < T get the perceptual terms (100 works best; 400 blurs).
    timestep_threshold: int = 100
    # β_l: weights of the five LPIPS-VGG layers (relu1_2 … relu5_3); all 1 is LPIPS itself.
    lpips_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    # Side of the square each person box is resized to before LPIPS; unset: half the image side,
    # clamped to [64, 224] (224 at 512², VGG's native size; no needless upsampling on small images).
    lpips_crop_size: int | None = None
    # InceptionResnetV1 layers for the face term ("embedding" is the normalised output).
    face_layers: tuple[str, ...] = DEFAULT_FACE_LAYERS
    # α_l: one weight per face layer.
    face_layer_weights: tuple[float, ...] = DEFAULT_FACE_LAYER_WEIGHTS
    # "pretrained" (VGG16 ImageNet, InceptionResnetV1 VGGFace2) or "random" (explicit request only);
    # unset means pretrained, except with the built-in tiny model, where training picks random.
    perceptual_weights: str | None = None
    # "boxes": decode only the latent window around persons and faces; "full": the whole latent.
    decode_region: str = "boxes"
    # Latent pixels added around the boxes' window when decode_region = "boxes" (2 = 16 px: the cost
    # goal of a perceptual step; 8 is closer to a full decode; docs/performance.md has both measured).
    decode_margin: int = 2
    # Decoder activations recomputed in the backward pass: "none" (fastest; at 512² the step's peak is only
    # ~0.1 GB above "top"), "top" (the full-resolution up-block: +12% decode time) or "all" (every block).
    decoder_checkpointing: str = "none"
    # Explicit weight files (default: where weights.py says they belong).
    vgg_weights: Path | None = None
    facenet_weights: Path | None = None

    def __post_init__(self) -> None:
        if self.lambda_lpips < 0 or self.lambda_face < 0:
            raise UserError(f"lambda-lpips and lambda-face must be >= 0 (got {self.lambda_lpips}, {self.lambda_face})")
        if self.lambda_lpips + self.lambda_face > 1 + 1e-9:
            raise UserError(
                f"lambda-lpips + lambda-face must be <= 1 (got {self.lambda_lpips} + {self.lambda_face}); "
                "L_LDM gets the rest"
            )
        if self.timestep_threshold < 0:
            raise UserError(f"timestep-threshold must be >= 0 (got {self.timestep_threshold})")
        if len(self.lpips_layer_weights) != len(LPIPS_LAYERS):
            raise UserError(f"lpips-layer-weights needs {len(LPIPS_LAYERS)} values ({', '.join(LPIPS_LAYERS)})")
        if len(self.face_layers) != len(self.face_layer_weights):
            raise UserError("face-layers and face-layer-weights must have the same length")
        if self.perceptual_weights not in (None, "pretrained", "random"):
            raise UserError(f"perceptual-weights must be 'pretrained' or 'random' (got {self.perceptual_weights!r})")
        if self.decode_region not in DECODE_REGIONS:
            raise UserError(f"decode-region must be one of {DECODE_REGIONS} (got {self.decode_region!r})")
        if self.decoder_checkpointing not in CHECKPOINTING:
            raise UserError(
                f"decoder-checkpointing must be one of {CHECKPOINTING} (got {self.decoder_checkpointing!r})"
            )
        if self.decode_margin < 0 or (self.lpips_crop_size is not None and self.lpips_crop_size < 32):
            raise UserError("decode-margin must be >= 0 and lpips-crop-size >= 32")

    @property
    def perceptual(self) -> bool:
        return self.lambda_lpips > 0 or self.lambda_face > 0


# What ObjectiveOutput.sums() holds, in order: each entry adds up over micro-batches and processes.
SUM_KEYS = ("loss", "loss_ldm", "lpips", "n_lpips", "face", "n_face", "n_gated", "n_samples")


@dataclass
class ObjectiveOutput:
    """The total to backpropagate and every term for logging (terms averaged over the samples that have them)."""

    total: torch.Tensor
    ldm: torch.Tensor
    lpips: torch.Tensor | None
    face: torch.Tensor | None
    n_gated: int
    n_samples: int
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict)

    def sums(self) -> torch.Tensor:
        """The terms as sums over samples, float64 on the device, in ``SUM_KEYS`` order (no device sync).

        An update's terms are these summed over its micro-batches (and processes), then divided by the counts,
        so a logged term is the mean over every sample of the update that has it.
        """
        ps = self.per_sample
        n = self.n_samples
        return torch.stack(
            [
                self.total.detach().double() * n,
                ps["ldm"].detach().double().sum(),
                (ps["lpips"].detach().double() * ps["has_lpips"]).sum(),
                ps["has_lpips"].double().sum(),
                (ps["face"].detach().double() * ps["has_face"]).sum(),
                ps["has_face"].double().sum(),
                ps["gated"].double().sum(),
                torch.tensor(float(n), dtype=torch.float64, device=self.total.device),
            ]
        )


class MaskAwareObjective(nn.Module):
    """The objective. Holds the frozen perceptual networks; the VAE is passed in (it is the model's)."""

    def __init__(
        self,
        config: ObjectiveConfig,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        num_train_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise UserError(f"unsupported prediction type {prediction_type!r}; supported: {PREDICTION_TYPES}")
        if config.timestep_threshold > num_train_timesteps:
            raise UserError(
                f"timestep-threshold must be <= num_train_timesteps ({num_train_timesteps}); "
                f"got {config.timestep_threshold}"
            )
        self.config = config
        self.prediction_type = prediction_type
        # A plain attribute, not a buffer: .to(dtype=fp16) must not round the noise schedule.
        self.alphas_cumprod = alphas_cumprod.detach().float().clone()
        pretrained = config.perceptual_weights != "random"
        self.lpips = (
            MaskedLPIPS(pretrained, config.lpips_layer_weights, config.lpips_crop_size, config.vgg_weights)
            if config.lambda_lpips > 0
            else None
        )
        self.face = (
            FaceFeatureLoss(pretrained, config.face_layers, config.face_layer_weights, config.facenet_weights)
            if config.lambda_face > 0
            else None
        )

    def forward(
        self,
        vae,
        model_pred: torch.Tensor,
        target: torch.Tensor,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        images: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        person_boxes: list[torch.Tensor] | None = None,
        face_boxes: list[torch.Tensor] | None = None,
    ) -> ObjectiveOutput:
        """Compute the objective for one batch.

        Args:
            vae: the frozen VAE (its decoder stays in the graph).
            model_pred, target, noisy_latents: N×4×h×w.
            timesteps: N integer timesteps.
            images: N×3×H×W real images in [-1, 1] (H = 8h); masks: N×1×H×W person masks in [0, 1].
            person_boxes, face_boxes: N tensors of K_i×4 boxes in image pixels.
        """
        cfg = self.config
        n = model_pred.shape[0]
        ldm = ((model_pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, model_pred.ndim)))
        gated = timesteps < cfg.timestep_threshold
        zeros = torch.zeros(n, dtype=torch.bool, device=ldm.device)
        want_lpips = gated & _has_boxes(person_boxes, n, ldm.device) if self.lpips is not None else zeros
        want_face = gated & _has_boxes(face_boxes, n, ldm.device) if self.face is not None else zeros
        lpips_i = ldm.new_zeros(n)
        face_i = ldm.new_zeros(n)
        has_lpips, has_face = zeros.clone(), zeros.clone()
        need = (want_lpips | want_face).nonzero().flatten()
        if need.numel():
            x0 = predict_x0(  # in fp32 whatever the training dtype
                noisy_latents[need].float(),
                model_pred[need].float(),
                timesteps[need],
                self.alphas_cumprod,
                self.prediction_type,
            )
            idx = need.tolist()
            p_boxes = [person_boxes[i] if want_lpips[i] else _empty(ldm) for i in idx]
            f_boxes = [face_boxes[i] if want_face[i] else _empty(ldm) for i in idx]
            # The decoded window covers exactly the pixels each loss reads (faces: the squared, clipped box).
            height, width = images.shape[-2:]
            regions: list[list[tuple[int, int, int, int]]] = [[] for _ in idx]
            for loss, boxes in ((self.lpips, p_boxes), (self.face, f_boxes)):
                if loss is not None:
                    for owner, box in zip(*loss.regions(boxes, height, width), strict=True):
                        regions[owner].append(box)
            decoded = decode_for_loss(vae, x0, regions, cfg.decode_region, cfg.decode_margin, cfg.decoder_checkpointing)
            real = images[need].float()
            if self.lpips is not None and want_lpips.any():
                size = cfg.lpips_crop_size or min(224, max(64, min(decoded.shape[-2:]) // 2))
                value, has = self.lpips(decoded, real, masks[need], p_boxes, crop_size=size)
                lpips_i = lpips_i.index_put((need,), value)
                has_lpips[need] = has
            if self.face is not None and want_face.any():
                value, has = self.face(decoded, real, f_boxes)
                face_i = face_i.index_put((need,), value)
                has_face[need] = has
        w_lpips = cfg.lambda_lpips * has_lpips.float()
        w_face = cfg.lambda_face * has_face.float()
        w_ldm = 1.0 - w_lpips - w_face
        per_sample = w_ldm * ldm + w_lpips * lpips_i + w_face * face_i
        return ObjectiveOutput(
            total=per_sample.mean(),
            ldm=ldm.mean().detach(),
            lpips=lpips_i[has_lpips].mean().detach() if has_lpips.any() else None,
            face=face_i[has_face].mean().detach() if has_face.any() else None,
            n_gated=int(gated.sum()),
            n_samples=n,
            per_sample={
                "ldm": ldm,
                "lpips": lpips_i,
                "face": face_i,
                "w_lpips": w_lpips,
                "w_face": w_face,
                "has_lpips": has_lpips,
                "has_face": has_face,
                "gated": gated,
            },
        )


def _has_boxes(boxes: list[torch.Tensor] | None, n: int, device: torch.device) -> torch.Tensor:
    if boxes is None:
        return torch.zeros(n, dtype=torch.bool, device=device)
    return torch.tensor([b.numel() > 0 for b in boxes], dtype=torch.bool, device=device)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros((0, 4))
