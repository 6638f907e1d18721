"""Pipelines on shared components: SDPA attention, the samplers, dtype/device choice, blank conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from humanfix.errors import UserError
from humanfix.generation import pipelines as P


def test_pipelines_share_components_and_use_sdpa(tiny_components):
    from diffusers import ControlNetModel

    sched = P.make_scheduler("ddim", tiny_components)
    base = P.build_pipeline(tiny_components, sched)
    branch = P.build_pipeline(tiny_components, sched, ControlNetModel.from_unet(tiny_components.unet))
    assert type(base).__name__ == "StableDiffusionPipeline"
    assert type(branch).__name__ == "StableDiffusionControlNetPipeline"
    assert base.unet is branch.unet is tiny_components.unet and base.safety_checker is None
    procs = list(base.unet.attn_processors.values())
    assert procs and all(type(p).__name__ == "AttnProcessor2_0" for p in procs)


@pytest.mark.parametrize(
    "name, cls",
    [("ddim", "DDIMScheduler"), ("unipc", "UniPCMultistepScheduler"), ("euler", "EulerDiscreteScheduler"),
     ("dpm", "DPMSolverMultistepScheduler")],
)  # fmt: skip
def test_samplers_keep_the_models_schedule(tiny_components, name, cls):
    s = P.make_scheduler(name, tiny_components)
    assert type(s).__name__ == cls
    assert s.config.beta_schedule == "scaled_linear" and s.config.beta_end == 0.012 and s.config.steps_offset == 1


def test_dtype_device_and_blank_condition():
    cpu = torch.device("cpu")
    assert P.resolve_dtype("auto", cpu) == torch.float32
    assert P.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert P.resolve_device("cpu") == cpu
    with pytest.raises(UserError):
        P.resolve_device("nonsense")
    im = P.blank_condition(48, 64)
    assert im.size == (64, 48) and im.mode == "RGB" and not np.asarray(im).any()
    with pytest.raises(UserError, match="not found"):
        P.load_condition("/no/such/pose.png")
