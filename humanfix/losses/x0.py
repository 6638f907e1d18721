"""One-step estimate of the clean latent x̂0 from the model output at timestep t."""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _per_sample(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[timesteps]`` shaped N×1×1×1 (broadcasts over ``like``), in ``like``'s dtype and device."""
    out = values.to(device=timesteps.device)[timesteps.long()].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def predict_x0(
    noisy_latents: torch.Tensor,
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """x̂0 from x_t and the model output, differentiable in ``model_output``.

    Args:
        noisy_latents: x_t, N×C×h×w.
        model_output: the UNet's prediction, N×C×h×w (ε̂, v̂ or x̂0 by ``prediction_type``).
        timesteps: N integer timesteps (or a scalar, broadcast to the batch).
        alphas_cumprod: the scheduler's ᾱ, a 1-D tensor over training timesteps.
        prediction_type: ``epsilon``: x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t;
            ``v_prediction``: x̂0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂; ``sample``: x̂0 = the output.

    Equals diffusers' ``DDPMScheduler.step(...).pred_original_sample`` (without clipping).
    """
    if prediction_type == "sample":
        return model_output
    timesteps = torch.as_tensor(timesteps, device=noisy_latents.device)
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(noisy_latents.shape[0])
    alpha = _per_sample(alphas_cumprod, timesteps, noisy_latents)
    sqrt_alpha, sqrt_one_minus = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (noisy_latents - sqrt_one_minus * model_output) / sqrt_alpha
    if prediction_type == "v_prediction":
        return sqrt_alpha * noisy_latents - sqrt_one_minus * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
