"""humanfix train on a set prepared with --buckets: images of several sizes, one size per micro-batch."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import humanfix.train as train_module
from humanfix.config import build_config
from humanfix.data.records import Record, write_records
from humanfix.train import TrainConfig, checkpoint_dirs, train

SIZES = [(64, 64), (80, 48), (64, 64)]  # two buckets (2 + 1 images); the tiny model needs multiples of 16


def write_bucketed_split(split_dir: Path, sizes=SIZES, seed: int = 0) -> Path:
    """A prepared split whose images have the given (width, height) sizes, a person and a face each."""
    rng = np.random.default_rng(seed)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (w, h) in enumerate(sizes):
        cid = 200 + i
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(split_dir / f"images/{cid}.jpg")
        p = [w // 4, h // 8, 3 * w // 4, h]
        mask = np.zeros((h, w), np.uint8)
        mask[p[1] : p[3], p[0] : p[2]] = 255
        Image.fromarray(mask).save(split_dir / f"masks/{cid}.png")
        face = [3 * w // 8, h // 8, 5 * w // 8, h // 8 + w // 4]
        kp = [[float(p[0] + (p[2] - p[0]) * (k % 3) / 2), float(p[1] + (p[3] - p[1]) * k / 17), 2.0] for k in range(17)]
        records.append(
            Record(file_name=f"images/{cid}.jpg", mask_file_name=f"masks/{cid}.png", text=[f"a person {i}"],
                   person_boxes=[p], face_boxes=[face], face_sources=["keypoints"], keypoints=[kp], coverage=0.4,
                   coco_id=cid, width=w, height=h, window=[0.0, 0.0, float(w), float(h)])
        )  # fmt: skip
    write_records(split_dir, records)
    return split_dir


@pytest.fixture
def bucketed_set(tmp_path) -> Path:
    write_bucketed_split(tmp_path / "data" / "val")
    return tmp_path / "data"


def config(data, output, **kw):
    values = dict(model="tiny", data=data, split="val", batch_size=1, seed=0, output=output, checkpoint_every=1,
                  max_steps=3,
                  objective={"lambda_lpips": 0.6, "lambda_face": 0.0, "timestep_threshold": 1000})  # fmt: skip
    values.update(kw)
    return build_config(TrainConfig, None, **values)


@pytest.fixture
def shapes(monkeypatch):
    """The (height, width) of every micro-batch the loop computes a loss on (each batch must be one size)."""
    seen = []
    real = train_module.compute_loss

    def spy(run, batch, g):
        sizes = {tuple(x.shape[-2:]) for x in batch["pixel_values"]}
        assert len(sizes) == 1 and tuple(batch["mask"].shape[-2:]) in sizes
        assert tuple(batch["conditioning"].shape[-2:]) in sizes
        seen.append(sizes.pop())
        return real(run, batch, g)

    monkeypatch.setattr(train_module, "compute_loss", spy)
    return seen


def test_a_two_bucket_set_trains_checkpoints_and_resumes_exactly(
    bucketed_set, tmp_path, shapes, fresh_accelerate_state
):
    # Batch size 2 over 2 + 1 images: 2 micro-batches per epoch (the 80×48 one padded by wrapping round).
    straight = train(config(bucketed_set, tmp_path / "straight", batch_size=2, checkpoint_every=0))
    assert sorted(set(shapes)) == [(48, 80), (64, 64)]  # both buckets, each batch one size
    assert len(shapes) == 3
    fresh_accelerate_state()
    train(config(bucketed_set, tmp_path / "resumed", batch_size=2, max_steps=1))  # stops mid-epoch (batch 1 of 2)
    fresh_accelerate_state()
    resumed = train(config(bucketed_set, tmp_path / "resumed", batch_size=2, checkpoint_every=2, resume="latest"))
    assert shapes[3:] == shapes[:3]  # the resumed pair replays the straight run's batches
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # step 1 (the first run), 2 (every 2) and 3 (the end: a finished run can be extended)
    steps = ["step-00000001", "step-00000002", "step-00000003"]
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == steps


def test_lora_and_validation_at_the_most_common_bucket(bucketed_set, tmp_path, shapes):
    out = tmp_path / "lora"
    kw = dict(adapter="lora", lora_rank=4, learning_rate=1e-3, checkpoint_every=0, validate_every=3)
    lora = train(config(bucketed_set, out, **kw, validation_prompts=("a skier",), validation_steps=2))
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    assert sorted(set(shapes)) == [(48, 80), (64, 64)]
    # validation images at the set's most common size (64×64: 2 images against 1)
    assert Image.open(out / "validation" / "step-00000003" / "00.png").size == (64, 64)


def test_branch_validation_uses_a_conditioning_image_of_the_validation_size(tmp_path):
    data = tmp_path / "data"
    write_bucketed_split(data / "val", sizes=[(80, 48), (64, 64), (80, 48)])  # the first image is not square
    out = tmp_path / "run"
    train(config(data, out, conditioning="pose", max_steps=1, checkpoint_every=0, validate_every=1,
                 validation_prompts=("a skier",), validation_steps=2))  # fmt: skip
    assert Image.open(out / "validation" / "step-00000001" / "00.png").size == (80, 48)


def test_compile_on_two_buckets_changes_nothing(tmp_path, monkeypatch, shapes, fresh_accelerate_state):
    """--compile (TorchDynamo's eager backend: the real tracing, no code generation) on two image sizes: the same
    weights as an uncompiled run."""
    data = tmp_path / "data"
    write_bucketed_split(data / "val", sizes=[(64, 64), (80, 48)])  # one epoch = one batch of each
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    plain = train(config(data, tmp_path / "plain", max_steps=2, checkpoint_every=0))
    fresh_accelerate_state()
    fast = train(config(data, tmp_path / "fast", max_steps=2, checkpoint_every=0, compile=True))
    assert sorted(shapes[2:]) == [(48, 80), (64, 64)]
    a = load_file(plain / "diffusion_pytorch_model.safetensors")
    b = load_file(fast / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


def test_cached_latents_of_two_buckets_give_the_uncached_loss(bucketed_set, tmp_path, fresh_accelerate_state):
    """--cache-latents on a set of two sizes: each batch's cached posterior has its size, and the same draw."""
    from humanfix.train import batches, compute_loss, setup, step_generator

    losses = {}
    for cache in (False, True):
        run = setup(config(bucketed_set, tmp_path / f"probe-{cache}", cache_latents=cache))
        losses[cache] = []
        for k, batch in zip(range(3), batches(run), strict=False):  # one epoch: both sizes
            if cache:
                h, w = batch["pixel_values"].shape[-2:]
                assert batch["latent_params"].shape[-2:] == (h // 8, w // 8)
            with torch.no_grad():
                out = compute_loss(run, batch, step_generator(run.config, k, k, 0, run.accelerator.device))
            losses[cache].append((tuple(batch["pixel_values"].shape[-2:]), out.total, out.lpips))
        fresh_accelerate_state()
    assert {size for size, _, _ in losses[True]} == {(64, 64), (48, 80)}
    for (size_a, total_a, lpips_a), (size_b, total_b, lpips_b) in zip(losses[False], losses[True], strict=True):
        assert size_a == size_b
        torch.testing.assert_close(total_b, total_a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lpips_b, lpips_a, rtol=1e-5, atol=1e-6)
