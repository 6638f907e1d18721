"""A torch Dataset over a prepared split (see :mod:`humanfix.data.records`) for training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from humanfix.data.conditioning import blank, mask_condition, render_pose
from humanfix.data.records import Record, read_records
from humanfix.errors import UserError


class PreparedDataset(torch.utils.data.Dataset):
    """Items of a prepared split, each a dict:

    - ``pixel_values``: 3×H×W float in [-1, 1], the real image at its prepared size (one size for a square set;
      a set prepared with ``--buckets`` has several, and :attr:`sizes` gives each item's);
    - ``mask``: 1×H×W float in {0, 1}, the union person mask;
    - ``person_boxes``, ``face_boxes``, ``hand_boxes``: K×4 float boxes in pixels (x1, y1 exclusive);
    - ``conditioning``: 3×H×W float in [0, 1] (blank, pose skeleton or mask, by ``conditioning``);
    - ``captions``: every caption (the training loop draws one); ``coco_id``;
    - ``latent_params``: 2C×h×w, the image's cached VAE posterior, when a :class:`LatentCache` is attached
      (``self.latents``, see :mod:`humanfix.data.latents`).
    """

    def __init__(self, split_dir: str | Path, conditioning: str = "none") -> None:
        self.root = Path(split_dir)
        if not self.root.is_dir():
            raise UserError(f"no prepared split at {self.root} (run `humanfix prepare-data`, or check --data/--split)")
        self.records: list[Record] = read_records(self.root)
        if not self.records:
            raise UserError(f"the prepared split {self.root} is empty: no images passed prepare-data's filters")
        # Each record's (width, height): its bucket. Batches are drawn one bucket at a time (data/sampler.py).
        self.sizes: list[tuple[int, int]] = [(r.width, r.height) for r in self.records]
        counts = Counter(self.sizes)
        for w, h in sorted(counts):
            if w % 8 or h % 8:
                raise UserError(f"{self.root}: image size {w}×{h} is not a multiple of 8")
        # The most common size (ties: the squarest, then the larger): validation images are drawn at it.
        (self.width, self.height) = max(counts, key=lambda s: (counts[s], -abs(s[0] - s[1]), s[0] * s[1], s[0]))
        missing = next((p for r in self.records for p in (r.file_name, r.mask_file_name)
                        if not (self.root / p).is_file()), None)  # fmt: skip
        if missing is not None:
            raise UserError(f"{self.root / 'metadata.jsonl'} names {missing}, which is not in {self.root}")
        self.conditioning = conditioning
        self.latents: Any = None  # a LatentCache over these records, once train builds one

    def __len__(self) -> int:
        return len(self.records)

    @property
    def validation_index(self) -> int:
        """The first record of the most common size (whose conditioning image validation uses)."""
        return self.sizes.index((self.width, self.height))

    def image(self, index: int) -> torch.Tensor:
        """Record ``index``'s image: 3×H×W float in [-1, 1]."""
        image = np.asarray(_open(self.root / self.records[index].file_name, "RGB"), dtype=np.float32)
        return torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1.0

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        mask = np.asarray(_open(self.root / rec.mask_file_name, "L"), dtype=np.float32)
        pixel_values = self.image(index)
        mask_t = torch.from_numpy((mask > 127).astype(np.float32))[None]
        if self.conditioning == "pose":
            cond = render_pose(rec.keypoints, rec.height, rec.width)
        elif self.conditioning == "mask":
            cond = mask_condition(mask_t)
        else:
            cond = blank(rec.height, rec.width)
        item = {
            "pixel_values": pixel_values,
            "mask": mask_t,
            "person_boxes": torch.tensor(rec.person_boxes, dtype=torch.float32).reshape(-1, 4),
            "face_boxes": torch.tensor(rec.face_boxes, dtype=torch.float32).reshape(-1, 4),
            "hand_boxes": torch.tensor(rec.hand_boxes, dtype=torch.float32).reshape(-1, 4),
            "conditioning": cond,
            "captions": list(rec.text),
            "coco_id": rec.coco_id,
        }
        if self.latents is not None:
            item["latent_params"] = self.latents[index]
        return item


def _open(path: Path, mode: str) -> Image.Image:
    """An image of the prepared set in ``mode``; one that is not an image (truncated, text) is a UserError."""
    try:
        with Image.open(path) as f:
            return f.convert(mode)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path} is not a readable image ({e}): prepare the set again") from None


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the image tensors; boxes and captions stay per-sample lists."""
    batch = {
        "pixel_values": torch.stack([i["pixel_values"] for i in items]),
        "mask": torch.stack([i["mask"] for i in items]),
        "conditioning": torch.stack([i["conditioning"] for i in items]),
        "person_boxes": [i["person_boxes"] for i in items],
        "face_boxes": [i["face_boxes"] for i in items],
        "hand_boxes": [i["hand_boxes"] for i in items],
        "captions": [i["captions"] for i in items],
        "coco_id": [i["coco_id"] for i in items],
    }
    if "latent_params" in items[0]:
        batch["latent_params"] = torch.stack([i["latent_params"] for i in items])
    return batch


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices for one rank, epoch after epoch, from micro-batch ``start`` of the run on.

    Each epoch is a permutation seeded by (seed, epoch), padded by wrapping so every rank gets the same
    number of full batches, dealt out batch by batch. Data order depends only on (seed, epoch, rank, world
    size), so resuming at any step replays it exactly; one sampler (and one DataLoader, whose workers then
    live for the whole run) serves every epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start = rank, world, start

    @staticmethod
    def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
        return -(-n // (batch_size * world))

    def __iter__(self):
        per_rank = self.batches_per_epoch(self.n, self.batch_size, self.world)
        epoch, skip = divmod(self.start, per_rank)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
            total = per_rank * self.batch_size * self.world
            order = (order * (total // self.n + 1))[:total]
            for b in range(skip, per_rank):
                start = (b * self.world + self.rank) * self.batch_size
                yield from order[start : start + self.batch_size]
            epoch, skip = epoch + 1, 0
