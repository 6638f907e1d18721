"""The lines ``humanfix train`` prints at its start: precision and processes, adapter and learning rate, objective.

A run says what it does: which precision it trains in and why, and which objective (the perceptual terms are on
by default; a run with them off says it is plain LDM training).
"""

from __future__ import annotations

from typing import Any

# (field of ObjectiveConfig, how its term is written); a term whose field is absent is skipped.
TERMS = (("lambda_lpips", "LPIPS"), ("lambda_face", "face"), ("lambda_hand", "hand"))


def objective_line(objective: Any) -> str:
    """``objective: L = 0.2·LPIPS + 0.5·face + 0.3·LDM for t < 100 (L_LDM alone above), …``."""
    weights = [(name, float(getattr(objective, key))) for key, name in TERMS if hasattr(objective, key)]
    on = [(name, w) for name, w in weights if w > 0]
    extra = []
    if getattr(objective, "snr_gamma", None):
        extra.append(f"L_LDM min-SNR weighted (γ = {objective.snr_gamma:g})")
    if not on:
        text = "objective: L_LDM alone (every λ is 0: the perceptual terms are off)"
    else:
        mix = " + ".join(f"{w:g}·{name}" for name, w in on)
        rest = 1.0 - sum(w for _, w in on)
        text = (
            f"objective: L = {mix} + {rest:g}·LDM for t < {objective.timestep_threshold} (L_LDM alone above); "
            f"perceptual weights {objective.perceptual_weights}"
        )
    return "; ".join([text, *extra])


def start_lines(config: Any, launch: Any, total_steps: int) -> list[str]:
    """What a training run prints before its first step."""
    lines = [launch.describe()] if launch is not None else []
    lines.append(f"adapter {config.adapter}, learning rate {config.learning_rate:g}, {total_steps} updates")
    lines.append(objective_line(config.objective))
    return lines
