"""The mask-aware objective: one-step x̂0, masked LPIPS on person regions, face features, the mixture."""

from humanfix.losses.x0 import PREDICTION_TYPES, predict_x0

__all__ = ["PREDICTION_TYPES", "predict_x0"]
