"""A torch Dataset over a prepared split (see :mod:`humanfix.data.records`) for training."""

from __future__ import annotations

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

    - ``pixel_values``: 3×H×W float in [-1, 1], the real image at training resolution;
    - ``mask``: 1×H×W float in {0, 1}, the union person mask;
    - ``person_boxes``, ``face_boxes``: K×4 float boxes in pixels (x1, y1 exclusive);
    - ``conditioning``: 3×H×W float in [0, 1] (blank, pose skeleton or mask, by ``conditioning``);
    - ``captions``: every caption (the training loop draws one); ``coco_id``.
    """

    def __init__(self, split_dir: str | Path, conditioning: str = "none") -> None:
        self.root = Path(split_dir)
        if not self.root.is_dir():
            raise UserError(f"no prepared split at {self.root} (run `humanfix prepare-data`, or check --data/--split)")
        self.records: list[Record] = read_records(self.root)
        if not self.records:
            raise UserError(f"the prepared split {self.root} is empty: no images passed prepare-data's filters")
        sizes = {(r.width, r.height) for r in self.records}
        if len(sizes) != 1:
            raise UserError(f"{self.root}: images of several sizes {sorted(sizes)}; prepare the set at one resolution")
        (self.width, self.height) = sizes.pop()
        if self.width % 8 or self.height % 8:
            raise UserError(f"{self.root}: image size {self.width}×{self.height} is not a multiple of 8")
        self.conditioning = conditioning

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image = np.asarray(Image.open(self.root / rec.file_name).convert("RGB"), dtype=np.float32)
        mask = np.asarray(Image.open(self.root / rec.mask_file_name).convert("L"), dtype=np.float32)
        pixel_values = torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1.0
        mask_t = torch.from_numpy((mask > 127).astype(np.float32))[None]
        if self.conditioning == "pose":
            cond = render_pose(rec.keypoints, rec.height, rec.width)
        elif self.conditioning == "mask":
            cond = mask_condition(mask_t)
        else:
            cond = blank(rec.height, rec.width)
        return {
            "pixel_values": pixel_values,
            "mask": mask_t,
            "person_boxes": torch.tensor(rec.person_boxes, dtype=torch.float32).reshape(-1, 4),
            "face_boxes": torch.tensor(rec.face_boxes, dtype=torch.float32).reshape(-1, 4),
            "conditioning": cond,
            "captions": list(rec.text),
            "coco_id": rec.coco_id,
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the image tensors; boxes and captions stay per-sample lists."""
    return {
        "pixel_values": torch.stack([i["pixel_values"] for i in items]),
        "mask": torch.stack([i["mask"] for i in items]),
        "conditioning": torch.stack([i["conditioning"] for i in items]),
        "person_boxes": [i["person_boxes"] for i in items],
        "face_boxes": [i["face_boxes"] for i in items],
        "captions": [i["captions"] for i in items],
        "coco_id": [i["coco_id"] for i in items],
    }


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch for one rank: a permutation seeded by (seed, epoch), padded by wrapping so every
    rank gets the same number of full batches, dealt out batch by batch, starting after ``skip_batches``.

    Data order depends only on (seed, epoch, rank, world size), so resuming at any step replays it exactly.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, skip_batches: int = 0
    ) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.skip = rank, world, skip_batches

    @staticmethod
    def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
        return -(-n // (batch_size * world))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.batches_per_epoch(self.n, self.batch_size, self.world)
        total = per_rank * self.batch_size * self.world
        order = (order * (total // self.n + 1))[:total]
        for b in range(self.skip, per_rank):
            start = (b * self.world + self.rank) * self.batch_size
            yield from order[start : start + self.batch_size]

    def __len__(self) -> int:
        return (self.batches_per_epoch(self.n, self.batch_size, self.world) - self.skip) * self.batch_size
