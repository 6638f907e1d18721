"""The latent cache (``train --cache-latents``): every prepared image's VAE posterior, encoded once.

The frozen VAE encoder gives the same posterior for an image at every step, so its work can be done once:
the cache holds, per record of a split, the posterior's parameters (mean and log-variance, the encoder's
moments, 2C×h×w) in the VAE's dtype. A training step then draws its latent from the cached posterior with
its own generator (diffusers' ``DiagonalGaussianDistribution(params).sample(generator)``, the very call an
uncached step makes), so the draw, the loss and exact resume are those of an uncached run.

Where: ``$HUMANFIX_HOME/latents/<key>/`` with ``posterior.bin`` (raw N×2C×h×w array), ``meta.json`` and a
``complete`` marker written last. The key hashes the split's ``metadata.jsonl``, its image files' names,
sizes and modification times, the VAE's weights and dtype: a changed set, another VAE or another precision
gets its own cache, never a stale one (a copied set whose times changed is encoded again).
Size: N × 2C·h·w × 2 bytes in bf16/fp16 (64 KiB per 512² image: 2.5 GB for 37,470), twice that in fp32.

Several processes (``accelerate launch``) each encode their share (records rank, rank + world, …) into the
one file; rank 0 creates it and marks it complete once all have written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanfix.config import humanfix_home

log = logging.getLogger(__name__)

LATENTS_DIR = "latents"
COMPLETE = "complete"
# Raw storage per torch dtype (numpy has no bfloat16: its bits are kept as int16 and viewed back).
_STORAGE = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


def vae_fingerprint(vae: Any) -> str:
    """SHA-256 over the VAE's weights as they are (names, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(split_dir: Path, vae_hash: str, dtype: torch.dtype) -> str:
    """The split's records and image files (name, size, modification time), the VAE's weights and dtype."""
    from humanfix.data.records import METADATA, read_records

    split_dir = Path(split_dir)
    h = hashlib.sha256((split_dir / METADATA).read_bytes())
    for rec in read_records(split_dir):
        st = (split_dir / rec.file_name).stat()
        h.update(f"{rec.file_name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"{vae_hash}:{dtype}".encode())
    return h.hexdigest()[:24]


class LatentCache:
    """Read access to a complete cache: ``cache[i]`` is record i's posterior parameters, 2C×h×w in its dtype.

    The file is memory-mapped on first use in each process (DataLoader workers included), never pickled.
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.folder = folder
        self.shape = tuple(meta["shape"])
        self.dtype = getattr(torch, meta["dtype"])
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._array is None:
            self._array = np.memmap(self.folder / "posterior.bin", _STORAGE[self.dtype], "r", shape=self.shape)
        return torch.from_numpy(np.array(self._array[index])).view(self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


def ensure_latent_cache(
    split_dir: Path,
    images: Callable[[int], torch.Tensor],
    n: int,
    vae: Any,
    device: torch.device,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> LatentCache:
    """The cache of ``split_dir`` for this VAE (on ``device``, in its dtype), encoding what is missing.

    ``images(i)`` gives record i's pixels (3×H×W in [-1, 1]); ``barrier`` makes the processes wait for each other.
    """
    dtype = next(vae.parameters()).dtype
    folder = humanfix_home() / LATENTS_DIR / cache_key(split_dir, vae_fingerprint(vae), dtype)
    if (folder / COMPLETE).is_file():
        return LatentCache(folder)
    height, width = images(0).shape[-2:]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (n, 2 * vae.config.latent_channels, height // factor, width // factor)  # mean and log-variance
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(
            json.dumps({"shape": shape, "dtype": str(dtype).removeprefix("torch."), "split": str(split_dir)})
        )
        np.memmap(folder / "posterior.bin", _STORAGE[dtype], "w+", shape=shape).flush()
    barrier()
    out = np.memmap(folder / "posterior.bin", _STORAGE[dtype], "r+", shape=shape)
    mine = list(range(rank, n, world))
    if rank == 0:
        log.info("encoding %d images into the latent cache %s", n, folder)
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            idx = mine[start : start + batch_size]
            batch = torch.stack([images(i) for i in idx]).to(device, dtype)
            params = vae.encode(batch).latent_dist.parameters.to(dtype).cpu()
            out[idx] = params.view(_storage_torch(dtype)).numpy()
    out.flush()
    del out
    barrier()
    if rank == 0:
        (folder / COMPLETE).write_text(str(os.getpid()))
    barrier()
    return LatentCache(folder)


def _storage_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.int16 if dtype == torch.bfloat16 else dtype
