"""The latent cache: the encoder's posterior stored once, read back exactly, keyed to the set, VAE and dtype."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from humanfix.data.dataset import PreparedDataset
from humanfix.data.latents import LatentCache, ensure_latent_cache

CPU = torch.device("cpu")


@pytest.fixture
def vae(tiny_model):
    return AutoencoderKL.from_pretrained(tiny_model / "vae").requires_grad_(False)


def build(split, vae, **kw):
    ds = PreparedDataset(split)
    return ds, ensure_latent_cache(split, ds.image, len(ds), vae, CPU, batch_size=2, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_holds_the_encoders_posterior_and_is_reused(prepared_set, vae, dtype, monkeypatch):
    vae = vae.to(dtype)
    ds, cache = build(prepared_set / "val", vae)
    assert len(cache) == len(ds) == 3 and cache.dtype == dtype
    for i in range(3):
        with torch.no_grad():
            ref = vae.encode(ds.image(i)[None].to(dtype)).latent_dist.parameters[0]
        assert cache[i].dtype == dtype
        torch.testing.assert_close(cache[i], ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-2)
    monkeypatch.setattr(vae, "encode", lambda *a, **k: pytest.fail("a complete cache is encoded again"))
    again = ensure_latent_cache(prepared_set / "val", ds.image, 3, vae, CPU, batch_size=2)
    assert again.folder == cache.folder and torch.equal(again[1], cache[1])


def test_cache_key_follows_the_set_and_the_weights(prepared_set, tmp_path, vae, write_split):
    _, a = build(prepared_set / "val", vae)
    _, other_set = build(write_split(tmp_path / "other" / "val", seed=1), vae)
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # decoder weights are part of the VAE: a new key
    _, other_vae = build(prepared_set / "val", vae)
    assert len({a.folder, other_set.folder, other_vae.folder}) == 3


def test_an_interrupted_cache_is_rebuilt_and_the_reader_pickles(prepared_set, vae):
    import pickle

    _, cache = build(prepared_set / "val", vae)
    (cache.folder / "complete").unlink()  # as if a process died mid-encode
    (cache.folder / "posterior.bin").write_bytes(b"")
    _, rebuilt = build(prepared_set / "val", vae)
    assert (rebuilt.folder / "complete").is_file() and rebuilt[2].shape == cache.shape[1:]
    clone = pickle.loads(pickle.dumps(rebuilt))  # what a DataLoader worker receives: no open memory map
    assert torch.equal(clone[0], rebuilt[0])
    assert isinstance(clone, LatentCache)


def test_two_ranks_write_their_shares(prepared_set, vae):
    """Rank 0 and rank 1 (run one after the other here) each encode their records into the one file."""
    ds = PreparedDataset(prepared_set / "val")
    calls = []
    real_encode = vae.encode

    def counting(x):
        calls.append(x.shape[0])
        return real_encode(x)

    vae.encode = counting
    folders = []
    for rank in (0, 1):  # the barrier is a no-op: rank 1 finds rank 0's file, completes it and marks it
        if rank == 1:
            (folders[0] / "complete").unlink()
        cache = ensure_latent_cache(prepared_set / "val", ds.image, 3, vae, CPU, 8, rank=rank, world=2)
        folders.append(cache.folder)
    assert calls == [2, 1]  # records {0, 2} on rank 0, record {1} on rank 1
    assert folders[0] == folders[1]
    with torch.no_grad():
        for i in range(3):
            ref = real_encode(ds.image(i)[None]).latent_dist.parameters[0]
            torch.testing.assert_close(cache[i], ref, rtol=0, atol=1e-5)
