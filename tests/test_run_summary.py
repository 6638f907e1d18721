"""The objective a training run prints at its start."""

from humanfix.losses.objective import ObjectiveConfig
from humanfix.run_summary import objective_line


def test_the_default_objective_is_spelled_out():
    line = objective_line(ObjectiveConfig(perceptual_weights="pretrained"))
    assert line.startswith("objective: L = 0.2·LPIPS + 0.5·face + 0.3·LDM for t < 100")


def test_plain_ldm_training_says_so_and_min_snr_is_named():
    line = objective_line(ObjectiveConfig(lambda_lpips=0, lambda_face=0, snr_gamma=5))
    assert "L_LDM alone" in line and "the perceptual terms are off" in line and "γ = 5" in line
