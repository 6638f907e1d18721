"""Min-SNR loss weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy").

Each sample's L_LDM is weighted by min(SNR(t), γ) / SNR(t) for ε-prediction, min(SNR(t), γ) / (SNR(t) + 1)
for v-prediction and min(SNR(t), γ) for x0-prediction, with SNR(t) = ᾱ_t / (1 − ᾱ_t): the loss of each
prediction type expressed as the same clamped x0 weighting. Low-noise steps (large SNR) weigh less, so they no
longer dominate the gradient. γ = 5 is the paper's value (diffusers' ``--snr_gamma``).
"""

from __future__ import annotations

import torch


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample weights (N, fp32) from ᾱ at each sample's timestep (N, on the device; no host sync)."""
    a = alphas_cumprod_t.float()
    snr = a / (1.0 - a)
    clamped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clamped / snr
    if prediction_type == "v_prediction":
        return clamped / (snr + 1.0)
    return clamped
