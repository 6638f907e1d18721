"""The latent cache: the encoder's posterior stored once, read back exactly, keyed to the set, VAE and dtype;
built by one process per key (the others wait and read it), published whole or not at all."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from humanfix.data.dataset import PreparedDataset
from humanfix.data.latents import LATENTS_DIR, LatentCache, ensure_latent_cache
from humanfix.data.records import read_records, write_records

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANFIX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def vae(tiny_model):
    return AutoencoderKL.from_pretrained(tiny_model / "vae").requires_grad_(False)


def sizes_of(ds):
    return [(r.height, r.width) for r in ds.records]


def build(split, vae, **kw):
    ds = PreparedDataset(split)
    return ds, ensure_latent_cache(split, ds.image, sizes_of(ds), vae, CPU, batch_size=kw.pop("batch_size", 2), **kw)


def reference(vae, image):
    with torch.no_grad():
        return vae.encode(image[None].to(next(vae.parameters()).dtype)).latent_dist.parameters[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_holds_the_encoders_posterior_and_is_reused(prepared_set, vae, dtype, monkeypatch):
    vae = vae.to(dtype)
    ds, cache = build(prepared_set / "val", vae)
    assert len(cache) == len(ds) == 3 and cache.dtype == dtype
    for i in range(3):
        assert cache[i].dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(cache[i], reference(vae, ds.image(i)), rtol=0, atol=tol)
    monkeypatch.setattr(vae, "encode", lambda *a, **k: pytest.fail("a complete cache is encoded again"))
    again = ensure_latent_cache(prepared_set / "val", ds.image, sizes_of(ds), vae, CPU)
    assert again.folder == cache.folder and torch.equal(again[1], cache[1])


def test_cache_key_follows_the_set_and_the_weights(prepared_set, tmp_path, vae, write_split):
    _, a = build(prepared_set / "val", vae)
    _, other_set = build(write_split(tmp_path / "other" / "val", seed=1), vae)
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # decoder weights are part of the VAE: a new key
    _, other_vae = build(prepared_set / "val", vae)
    assert len({a.folder, other_set.folder, other_vae.folder}) == 3


def test_the_reader_pickles_without_its_memory_maps(prepared_set, vae):
    import pickle

    _, cache = build(prepared_set / "val", vae)
    cache[0]  # opens a memory map
    clone = pickle.loads(pickle.dumps(cache))  # what a DataLoader worker receives: no open memory map
    assert isinstance(clone, LatentCache) and clone._arrays == {}
    assert torch.equal(clone[2], cache[2])


def test_images_of_several_sizes_each_keep_their_shape(prepared_set, vae):
    """Aspect-ratio buckets: records of one split with different sizes, encoded by a DataLoader with workers."""
    split = prepared_set / "val"
    records = read_records(split)
    rng = np.random.default_rng(3)
    for k, (h, w) in [(1, (32, 48)), (2, (48, 32))]:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(split / records[k].file_name)
        records[k] = dataclasses.replace(
            records[k], height=h, width=w, person_boxes=[], face_boxes=[], face_sources=[], keypoints=[],
            hand_boxes=[], hand_sides=[], hand_sources=[],
        )  # fmt: skip
    write_records(split, records)

    def image(i):
        pixels = np.asarray(Image.open(split / records[i].file_name).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0

    sizes = [(r.height, r.width) for r in records]
    cache = ensure_latent_cache(split, image, sizes, vae, CPU, workers=2, batch_size=4)
    assert [cache.shape_of(i) for i in range(3)] == [(8, 8, 8), (8, 4, 6), (8, 6, 4)]
    for i in range(3):
        torch.testing.assert_close(cache[i], reference(vae, image(i)), rtol=0, atol=1e-5)
    assert sorted(p.name for p in cache.folder.iterdir()) == [
        "meta.json",
        "posterior-4x6.bin",
        "posterior-6x4.bin",
        "posterior-8x8.bin",
    ]


def test_two_builders_at_once_encode_once_and_both_read_the_true_latents(prepared_set, vae, own_home):
    """Two runs start on one key together: one encodes, the other waits for it and reads the finished cache.

    (The code before the lock deleted the folder under the first builder, which then wrote into a deleted file
    and marked zeros complete.)"""
    ds = PreparedDataset(prepared_set / "val")
    real_encode = vae.encode
    encoded = []
    inside = threading.Event()

    def slow_encode(x):
        encoded.append(x.shape[0])
        inside.set()
        threading.Event().wait(0.3)  # the other builder arrives while this one encodes
        return real_encode(x)

    vae.encode = slow_encode
    results, errors = {}, []

    def run(name):
        try:
            results[name] = ensure_latent_cache(prepared_set / "val", ds.image, sizes_of(ds), vae, CPU, batch_size=1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(60)
    second.join(60)
    assert not errors, errors
    assert sum(encoded) == 3  # each image encoded once, by one builder
    for cache in results.values():
        for i in range(3):
            torch.testing.assert_close(cache[i], reference(vae, ds.image(i)), rtol=0, atol=1e-5)
    assert [p.name for p in (own_home / LATENTS_DIR).iterdir() if not p.name.endswith(".lock")] == [
        results["first"].folder.name
    ]


KILLED_BUILD = """
import os, signal, sys, torch
from diffusers import AutoencoderKL
from humanfix.data.dataset import PreparedDataset
from humanfix.data.latents import ensure_latent_cache
vae = AutoencoderKL.from_pretrained(sys.argv[2]).requires_grad_(False)
real, calls = vae.encode, []
def encode(x):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed midway: one image written, nothing cleaned up
    return real(x)
vae.encode = encode
ds = PreparedDataset(sys.argv[1])
ensure_latent_cache(sys.argv[1], ds.image, [(r.height, r.width) for r in ds.records], vae, torch.device("cpu"),
                    batch_size=1)
"""


def test_a_killed_build_leaves_nothing_taken_for_complete(prepared_set, vae, tiny_model, own_home):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(prepared_set / "val"), str(tiny_model / "vae")],
        env={**os.environ, "HUMANFIX_HOME": str(own_home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = [p for p in (own_home / LATENTS_DIR).iterdir() if not p.name.endswith(".lock")]
    assert left and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left)  # the builder's own
    ds, cache = build(prepared_set / "val", vae)  # the next run builds it whole and clears the dead one's folder
    for i in range(3):
        torch.testing.assert_close(cache[i], reference(vae, ds.image(i)), rtol=0, atol=1e-5)
    assert [p.name for p in (own_home / LATENTS_DIR).iterdir() if not p.name.endswith(".lock")] == [cache.folder.name]


def test_a_published_cache_is_never_rewritten(prepared_set, vae):
    """A cache another run reads stays as it is: a later build of the key uses it, it never deletes it."""
    _, cache = build(prepared_set / "val", vae)
    files = {p: p.stat().st_ino for p in Path(cache.folder).iterdir()}
    _, again = build(prepared_set / "val", vae)
    assert {p: p.stat().st_ino for p in Path(again.folder).iterdir()} == files
