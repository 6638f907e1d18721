"""The mask-aware objective: L = λ1·L_lpips + λ2·L_face + λ3·L_hand + (1 − λ1 − λ2 − λ3)·L_LDM for t < T.

Per sample i in a batch (timesteps and gating are per sample):

- L_LDM,i: mean squared error between the UNet(+branch) output and its target (ε, v or x0);
- gated in when t_i < T; a gated sample with at least one usable person box gets λ1·L_lpips,i,
  with at least one usable face box λ2·L_face,i, with at least one usable hand box λ3·L_hand,i (LPIPS-VGG on
  the hand crops, resized to HAND_CROP_SIZE²); L_LDM,i gets what is left, 1 − (weights used),
  so a sample's weights always sum to one (a missing term hands its weight to L_LDM);
- samples with t_i ≥ T get L_LDM,i alone, and no decoder work is done for them.

The total is the batch mean of the per-sample mixtures. The perceptual terms compare the decoded
x̂0 with the real training image at training resolution (not its VAE reconstruction), so they
also push towards detail the VAE round trip loses. docs/objective.md has the formulas and choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from humanfix.errors import UserError
from humanfix.losses.crops import Boxes, IntBox, read_boxes
from humanfix.losses.decode import CHECKPOINTING, DECODE_REGIONS, decode_for_loss
from humanfix.losses.face import DEFAULT_FACE_LAYER_WEIGHTS, DEFAULT_FACE_LAYERS, FaceFeatureLoss
from humanfix.losses.perceptual import LPIPS_LAYERS, Fp32Constants, MaskedLPIPS
from humanfix.losses.snr import min_snr_weights
from humanfix.losses.x0 import PREDICTION_TYPES, predict_x0

# The side hand crops are resized to before LPIPS: LPIPS' linear heads were fitted on 64×64 patches (BAPPS), hands
# are 20–60 px at 512² (so at most ~3× upsampling, never the 4–11× a 224² crop would need), and VGG16's four
# poolings still leave relu5_3 a 4×4 map. See docs/objective.md.
HAND_CROP_SIZE = 64


def person_crop_size(height: int, width: int) -> int:
    """The side person crops are resized to by default: half the side of the square of the image's area (one size
    for every bucket of a set), within 64–224."""
    return min(224, max(64, math.isqrt(height * width) // 2))


@dataclass
class ObjectiveConfig:
    """The objective's settings; every field is a ``humanfix train`` option of the same name."""

    # λ1: weight of the masked LPIPS term on gated samples (0.2: the paper's setting).
    lambda_lpips: float = 0.2
    # λ2: weight of the face-feature term on gated samples (0.5: the paper's setting).
    lambda_face: float = 0.5
    # λ3: weight of the hand term (LPIPS-VGG on hand crops) on gated samples with a hand. Off by default (no run
    # has measured its effect yet, and every λ1 + λ2 = 1 command stays valid); 0.1 is the recommended value with
    # λ1 = 0.2, λ2 = 0.5 (L_LDM keeps 0.2); docs/objective.md says why.
    lambda_hand: float = 0.0
    # T: samples with timestep t < T get the perceptual terms (100 works best; 400 blurs).
    timestep_threshold: int = 100
    # β_l: weights of the five LPIPS-VGG layers (relu1_2 … relu5_3); all 1 is LPIPS itself.
    lpips_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    # β_l of the hand term: the same five layers, weighted for the HAND_CROP_SIZE² hand crops.
    hand_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    # Side of the square each person box is resized to before LPIPS; unset: half the image side (√(H·W)),
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
    # Min-SNR weighting of L_LDM (Hang et al. 2023; losses/snr.py), γ = 5 in the paper; unset: off.
    snr_gamma: float | None = None

    def __post_init__(self) -> None:
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise UserError(f"snr-gamma must be > 0 (got {self.snr_gamma})")
        lambdas = (self.lambda_lpips, self.lambda_face, self.lambda_hand)
        if min(lambdas) < 0:
            raise UserError(f"lambda-lpips, -face and -hand must be >= 0 (got {', '.join(map(str, lambdas))})")
        if sum(lambdas) > 1 + 1e-9:
            raise UserError(
                f"lambda-lpips + lambda-face + lambda-hand must be <= 1 (got {' + '.join(map(str, lambdas))}); "
                "L_LDM gets the rest"
            )
        if self.timestep_threshold < 0:
            raise UserError(f"timestep-threshold must be >= 0 (got {self.timestep_threshold})")
        if len(self.lpips_layer_weights) != len(LPIPS_LAYERS):
            raise UserError(f"lpips-layer-weights needs {len(LPIPS_LAYERS)} values ({', '.join(LPIPS_LAYERS)})")
        if len(self.hand_layer_weights) != len(LPIPS_LAYERS):
            raise UserError(f"hand-layer-weights needs {len(LPIPS_LAYERS)} values ({', '.join(LPIPS_LAYERS)})")
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
        return self.lambda_lpips > 0 or self.lambda_face > 0 or self.lambda_hand > 0


# What ObjectiveOutput.sums() holds, in order: each entry adds up over micro-batches and processes.
SUM_KEYS = ("loss", "loss_ldm", "lpips", "n_lpips", "face", "n_face", "hand", "n_hand", "n_gated", "n_samples")


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
    hand: torch.Tensor | None = None

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
                (ps["hand"].detach().double() * ps["has_hand"]).sum(),
                ps["has_hand"].double().sum(),
                ps["gated"].double().sum(),
                torch.full((), float(n), dtype=torch.float64, device=self.total.device),
            ]
        )


class MaskAwareObjective(Fp32Constants):
    """The objective. Holds the frozen perceptual networks; the VAE is passed in (it is the model's).

    Its own constant (the hand term's layer weights) stays float32 through ``.to(device, dtype)``, as the
    networks' constants do.
    """

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
        # One VGG for the person and the hand terms (each with its own layer weights).
        self.lpips = (
            MaskedLPIPS(pretrained, config.lpips_layer_weights, config.lpips_crop_size, config.vgg_weights)
            if config.lambda_lpips > 0 or config.lambda_hand > 0
            else None
        )
        self.register_buffer(
            "hand_layer_weights", torch.tensor(config.hand_layer_weights, dtype=torch.float32), persistent=False
        )
        self.face = (
            FaceFeatureLoss(pretrained, config.face_layers, config.face_layer_weights, config.facenet_weights)
            if config.lambda_face > 0
            else None
        )

    def fp32_constants(self) -> list[tuple[nn.Module, str]]:
        return [(self, "hand_layer_weights")]

    def forward(
        self,
        vae,
        model_pred: torch.Tensor,
        target: torch.Tensor,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        images: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        person_boxes: Boxes | None = None,
        face_boxes: Boxes | None = None,
        host_timesteps: Sequence[int] | None = None,
        hand_boxes: Boxes | None = None,
    ) -> ObjectiveOutput:
        """Compute the objective for one batch.

        Args:
            vae: the frozen VAE (its decoder stays in the graph).
            model_pred, target, noisy_latents: N×4×h×w.
            timesteps: N integer timesteps (on the model's device).
            images: N×3×H×W real images in [-1, 1] (H = 8h); masks: N×1×H×W person masks in [0, 1].
            person_boxes, face_boxes, hand_boxes: N tensors of K_i×4 boxes in image pixels, on the host.
            host_timesteps: ``timesteps`` as host integers. Which samples are gated, which boxes are read and
                which windows are decoded is decided from these and the boxes alone, so the device is never
                asked (no sync). Unset: read from ``timesteps`` (one sync).
        """
        cfg = self.config
        n, device = model_pred.shape[0], model_pred.device
        ldm = ((model_pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, model_pred.ndim)))
        steps = [int(t) for t in (host_timesteps if host_timesteps is not None else timesteps.tolist())]
        gated = [t < cfg.timestep_threshold for t in steps]
        # Per loss, the integer boxes it reads on gated samples: (owner sample, box) pairs, decided on the host.
        reads: dict[str, tuple[list[int], list[IntBox]]] = {}
        terms_in = (
            ("lpips", cfg.lambda_lpips, person_boxes, False),
            ("face", cfg.lambda_face, face_boxes, True),
            ("hand", cfg.lambda_hand, hand_boxes, True),
        )
        for name, lam, boxes, square in terms_in:  # faces and hands are read squared, persons as boxed
            if lam > 0 and boxes is not None and any(gated):
                read = zip(*read_boxes(boxes, *images.shape[-2:], square), strict=True)
                pairs = [(o, b) for o, b in read if gated[o]]
                if pairs:
                    reads[name] = ([o for o, _ in pairs], [b for _, b in pairs])
        need = sorted({o for owners, _ in reads.values() for o in owners})
        terms = {"lpips": ldm.new_zeros(n), "face": ldm.new_zeros(n), "hand": ldm.new_zeros(n)}
        if need:
            slot = {sample: k for k, sample in enumerate(need)}  # sample -> row among the decoded
            idx = _to_device(need, device)
            x0 = predict_x0(  # in fp32 whatever the training dtype
                noisy_latents.index_select(0, idx).float(),
                model_pred.index_select(0, idx).float(),
                timesteps.index_select(0, idx),
                self._alphas_cumprod(device),
                self.prediction_type,
            )
            # The decoded window covers exactly the pixels each loss reads (faces, hands: the squared, clipped box).
            windows: list[list[IntBox]] = [[] for _ in need]
            for owners, boxes in reads.values():
                for owner, box in zip(owners, boxes, strict=True):
                    windows[slot[owner]].append(box)
            decoded = decode_for_loss(vae, x0, windows, cfg.decode_region, cfg.decode_margin, cfg.decoder_checkpointing)
            real = images.index_select(0, idx).float()
            for name, (owners, boxes) in reads.items():
                rows = [slot[o] for o in owners]
                if name == "lpips":
                    size = cfg.lpips_crop_size or person_crop_size(*decoded.shape[-2:])
                    value = self.lpips.compare(decoded, real, masks.index_select(0, idx), rows, boxes, size)
                elif name == "hand":
                    value = self.lpips.compare(
                        decoded, real, masks.index_select(0, idx), rows, boxes, HAND_CROP_SIZE, self.hand_layer_weights
                    )
                else:
                    value = self.face.compare(decoded, real, rows, boxes)
                terms[name] = terms[name].index_put((idx,), value)
        has = {name: [False] * n for name in terms}
        for name, (owners, _) in reads.items():
            for owner in owners:
                has[name][owner] = True
        w_lpips = cfg.lambda_lpips * _to_device(has["lpips"], device, torch.float32)
        w_face = cfg.lambda_face * _to_device(has["face"], device, torch.float32)
        w_hand = cfg.lambda_hand * _to_device(has["hand"], device, torch.float32)
        weighted_ldm = ldm
        if cfg.snr_gamma is not None:  # the LDM term alone is reweighted; ldm is logged unweighted
            ac = self._alphas_cumprod(device).index_select(0, timesteps.long())
            weighted_ldm = ldm * min_snr_weights(ac, cfg.snr_gamma, self.prediction_type)
        per_sample = (
            (1.0 - w_lpips - w_face - w_hand) * weighted_ldm
            + w_lpips * terms["lpips"]
            + w_face * terms["face"]
            + w_hand * terms["hand"]
        )
        return ObjectiveOutput(
            total=per_sample.mean(),
            ldm=ldm.mean().detach(),
            lpips=_mean_over(terms["lpips"], has["lpips"]),
            face=_mean_over(terms["face"], has["face"]),
            hand=_mean_over(terms["hand"], has["hand"]),
            n_gated=sum(gated),
            n_samples=n,
            per_sample={
                "total": per_sample,
                "ldm": ldm,
                "lpips": terms["lpips"],
                "face": terms["face"],
                "hand": terms["hand"],
                "w_lpips": w_lpips,
                "w_face": w_face,
                "w_hand": w_hand,
                "has_lpips": _to_device(has["lpips"], device),
                "has_face": _to_device(has["face"], device),
                "has_hand": _to_device(has["hand"], device),
                "gated": _to_device(gated, device),
            },
        )

    def _alphas_cumprod(self, device: torch.device) -> torch.Tensor:
        """ᾱ on ``device`` (copied there once, not per step)."""
        if self.alphas_cumprod.device != device:
            self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self.alphas_cumprod


def _to_device(values: Sequence, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host values as a tensor on ``device``, copied without waiting for the device."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _mean_over(values: torch.Tensor, has: list[bool]) -> torch.Tensor | None:
    """The mean of ``values`` over the samples that have the term (None if none has it), without a sync."""
    rows = [i for i, h in enumerate(has) if h]
    return values.index_select(0, _to_device(rows, values.device)).mean().detach() if rows else None
