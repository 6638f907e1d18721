import pytest
import torch
from diffusers import DDPMScheduler

from humanfix.losses import predict_x0


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_matches_diffusers(ptype):
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=ptype,
        clip_sample=False,
    )
    g = torch.Generator().manual_seed(0)
    for t in (0, 1, 50, 99, 400, 999):
        x_t, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        ref = sched.step(out, t, x_t).pred_original_sample
        got = predict_x0(x_t, out, torch.tensor([t, t]), sched.alphas_cumprod, ptype)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_predict_x0_per_sample_timesteps_and_gradient():
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    x_t = torch.randn(3, 4, 4, 4)
    out = torch.randn(3, 4, 4, 4, requires_grad=True)
    t = torch.tensor([5, 500, 990])
    got = predict_x0(x_t, out, t, sched.alphas_cumprod)
    for i in range(3):
        ref = sched.step(out[i : i + 1].detach(), int(t[i]), x_t[i : i + 1]).pred_original_sample
        torch.testing.assert_close(got[i : i + 1].detach(), ref, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_predict_x0_rejects_unknown_type():
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.tensor([1]), torch.ones(10), "eps")
