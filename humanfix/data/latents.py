"""The latent cache (``train --cache-latents``): every prepared image's VAE posterior, encoded once.

The frozen VAE encoder gives the same posterior for an image at every step, so its work can be done once:
the cache holds, per record of a split, the posterior's parameters (mean and log-variance, the encoder's
moments, 2C×h×w) in the VAE's dtype. A training step then draws its latent from the cached posterior with
its own generator (diffusers' ``DiagonalGaussianDistribution(params).sample(generator)``, the very call an
uncached step makes), so the draw, the loss and exact resume are those of an uncached run.

Where: ``$HUMANFIX_HOME/latents/<key>/`` with one raw array per latent size (``posterior-<h>x<w>.bin``,
count×2C×h×w: a split prepared with aspect-ratio buckets holds images of several sizes) and ``meta.json``
(the dtype, the sizes, and for each record its size and row). The key hashes the split's
``metadata.jsonl``, its image files' names, sizes and modification times, the VAE's weights and dtype and
the cache's format: a changed set, another VAE or another precision gets its own cache, never a stale one
(a copied set whose times changed is encoded again).
Size: N × 2C·h·w × 2 bytes in bf16/fp16 (64 KiB per 512² image: 2.5 GB for 37,470), twice that in fp32.

Building: one process builds a key while every other one (the other ranks of an ``accelerate launch``,
another run on the same set) waits on a lock file beside it (``.<key>.lock``) and then reads the finished
cache. The builder encodes into a private temporary folder (``.<key>.<pid>.tmp``) in large batches fed by
DataLoader workers, and publishes it with one atomic rename: a folder ``<key>/`` exists only complete, a
build killed midway leaves only its temporary folder (removed by the next builder of that key, which holds
the lock, so no live process owns it), and no folder that a reader may be using is ever deleted or rewritten.
Several machines: each builds its own cache when ``HUMANFIX_HOME`` is a local disk (one builder per
machine); on a shared file system one machine builds and the others wait (this needs file locks that work
across machines, as on NFSv4; otherwise give each machine its own ``HUMANFIX_HOME``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanfix.config import humanfix_home

log = logging.getLogger(__name__)

LATENTS_DIR = "latents"
META = "meta.json"
FORMAT = 2  # part of the key: folders of another layout are never read
# Raw storage per torch dtype (numpy has no bfloat16: its bits are kept as int16 and viewed back).
_STORAGE = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}
# Pixels per encoder batch (16 images of 512² on a GPU, 4 on the CPU; more of smaller images).
BATCH_PIXELS = {"cuda": 16 * 512 * 512, "cpu": 4 * 512 * 512}


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
    h.update(f"{vae_hash}:{dtype}:format{FORMAT}".encode())
    return h.hexdigest()[:24]


def _size_file(height: int, width: int) -> str:
    return f"posterior-{height}x{width}.bin"


class LatentCache:
    """Read access to a complete cache: ``cache[i]`` is record i's posterior parameters, 2C×h×w in its dtype.

    Each size's file is memory-mapped on first use in each process (DataLoader workers included), never pickled.
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / META).read_text())
        self.folder = folder
        self.dtype = getattr(torch, meta["dtype"])
        self.channels = int(meta["channels"])
        self.sizes = [tuple(s) for s in meta["sizes"]]  # (h, w, count) per file
        self.where = [tuple(w) for w in meta["where"]]  # (size index, row) per record
        self._arrays: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.where)

    def shape_of(self, index: int) -> tuple[int, int, int]:
        """Record ``index``'s 2C×h×w."""
        h, w, _ = self.sizes[self.where[index][0]]
        return (self.channels, h, w)

    def __getitem__(self, index: int) -> torch.Tensor:
        size, row = self.where[index]
        if size not in self._arrays:
            h, w, count = self.sizes[size]
            self._arrays[size] = np.memmap(
                self.folder / _size_file(h, w), _STORAGE[self.dtype], "r", shape=(count, self.channels, h, w)
            )
        return torch.from_numpy(np.array(self._arrays[size][row])).view(self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}


class _Images(torch.utils.data.Dataset):
    """The images of some records, for the encoder's DataLoader (workers decode them)."""

    def __init__(self, images: Callable[[int], torch.Tensor], indices: Sequence[int]) -> None:
        self.images, self.indices = images, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.images(self.indices[k])


def ensure_latent_cache(
    split_dir: Path,
    images: Callable[[int], torch.Tensor],
    sizes: Sequence[tuple[int, int]],
    vae: Any,
    device: torch.device,
    workers: int = 0,
    batch_size: int | None = None,
) -> LatentCache:
    """The cache of ``split_dir`` for this VAE (on ``device``, in its dtype), built here unless it exists.

    ``images(i)`` gives record i's pixels (3×H×W in [-1, 1]; picklable when ``workers`` > 0) and ``sizes[i]``
    its (H, W). Returns once the cache is complete: built by this process, or by another one it waited for.
    ``batch_size``: images per encoder call (default: ``BATCH_PIXELS`` of the device's type).
    """
    from filelock import FileLock

    dtype = next(vae.parameters()).dtype
    root = humanfix_home() / LATENTS_DIR
    key = cache_key(split_dir, vae_fingerprint(vae), dtype)
    folder = root / key
    if (folder / META).is_file():
        return LatentCache(folder)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / f".{key}.lock")
    try:
        lock.acquire(timeout=0)
    except TimeoutError:  # filelock.Timeout is a TimeoutError
        log.info("another process is building the latent cache %s: waiting for it", folder)
        lock.acquire()
    try:
        if (folder / META).is_file():  # built by the process that held the lock before us
            return LatentCache(folder)
        for stale in root.glob(f".{key}.*.tmp"):  # left by a killed build: we hold the lock, nobody owns it
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{key}.{os.getpid()}.tmp"
        tmp.mkdir()
        try:
            _build(tmp, split_dir, images, sizes, vae, device, dtype, workers, batch_size)
            os.rename(tmp, folder)  # atomic: the folder appears complete or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return LatentCache(folder)


def _build(
    tmp: Path,
    split_dir: Path,
    images: Callable[[int], torch.Tensor],
    sizes: Sequence[tuple[int, int]],
    vae: Any,
    device: torch.device,
    dtype: torch.dtype,
    workers: int,
    batch_size: int | None,
) -> None:
    """Encode every record into ``tmp``: one array per latent size, then meta.json."""
    import time

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    channels = 2 * vae.config.latent_channels  # mean and log-variance
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (height, width) in enumerate(sizes):
        groups.setdefault((height // factor, width // factor), []).append(i)
    where: list[Any] = [None] * len(sizes)
    log.info("encoding %d images into the latent cache (%d sizes)", len(sizes), len(groups))
    start = time.perf_counter()
    for s, ((h, w), indices) in enumerate(groups.items()):
        per_batch = batch_size or max(1, BATCH_PIXELS.get(device.type, BATCH_PIXELS["cuda"]) // (h * w * factor**2))
        out = np.memmap(tmp / _size_file(h, w), _STORAGE[dtype], "w+", shape=(len(indices), channels, h, w))
        loader = torch.utils.data.DataLoader(
            _Images(images, indices),
            batch_size=per_batch,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        row = 0
        with torch.no_grad():
            for batch in loader:
                params = vae.encode(batch.to(device, dtype, non_blocking=True)).latent_dist.parameters
                out[row : row + len(batch)] = params.to(dtype).cpu().view(_storage_torch(dtype)).numpy()
                row += len(batch)
        out.flush()
        del out
        for r, i in enumerate(indices):
            where[i] = (s, r)
    meta = {
        "dtype": str(dtype).removeprefix("torch."),
        "channels": channels,
        "sizes": [(h, w, len(indices)) for (h, w), indices in groups.items()],
        "where": where,
        "split": str(split_dir),
    }
    (tmp / META).write_text(json.dumps(meta))
    elapsed = time.perf_counter() - start
    log.info("latent cache: %d images in %.1f s (%.2f img/s)", len(sizes), elapsed, len(sizes) / max(elapsed, 1e-9))


def _storage_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.int16 if dtype == torch.bfloat16 else dtype
