"""Min-SNR weighting of the LDM term."""

import pytest
import torch

from humanfix.losses.objective import MaskAwareObjective, ObjectiveConfig
from humanfix.losses.snr import min_snr_weights


def test_weights_follow_hang_et_al():
    a = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, 1/99
    snr = a / (1 - a)
    eps = min_snr_weights(a, 5.0, "epsilon")
    assert torch.allclose(eps, torch.tensor([5 / 99, 1.0, 1.0]), atol=1e-5)
    assert torch.allclose(min_snr_weights(a, 5.0, "v_prediction"), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    assert torch.allclose(min_snr_weights(a, 5.0, "sample"), torch.minimum(snr, torch.tensor(5.0)))


def test_only_the_ldm_term_is_weighted_and_off_changes_nothing():
    torch.manual_seed(0)
    ac = torch.linspace(0.999, 0.01, 1000)
    pred, target, noisy = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 500, 990])

    def objective(**kw):
        return MaskAwareObjective(ObjectiveConfig(lambda_lpips=0, lambda_face=0, **kw), ac)

    off = objective()(None, pred, target, noisy, t)
    on = objective(snr_gamma=5.0)(None, pred, target, noisy, t)
    ldm = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert off.total.item() == pytest.approx(ldm.mean().item())
    assert on.total.item() == pytest.approx((ldm * min_snr_weights(ac[t], 5.0, "epsilon")).mean().item())
    assert torch.equal(on.per_sample["ldm"], off.per_sample["ldm"])  # logged unweighted


def test_gamma_must_be_positive():
    from humanfix.errors import UserError

    with pytest.raises(UserError, match="snr-gamma"):
        ObjectiveConfig(snr_gamma=0)
