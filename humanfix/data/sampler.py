"""Micro-batches drawn one aspect-ratio bucket at a time (``prepare-data --buckets`` sets), for every process.

:class:`BucketBatchSampler` yields lists of dataset indices, one micro-batch at a time, for one rank. An epoch:

1. one permutation of all images, seeded by (seed, epoch): the same draw as
   :class:`humanfix.data.dataset.EpochSampler`;
2. each bucket takes its images in that order, padded by wrapping round to a whole number of *global* batches
   (``batch_size × processes`` images: one micro-batch per rank), and cut into global batches;
3. the global batches run in the order of their first image in the permutation (a random merge of the
   buckets, with no further draw), and rank r takes slice r of each.

So every micro-batch holds one bucket, all ranks are in the same bucket at the same step (the objective's
shapes, ``--compile``'s graphs and DDP's collectives line up), every image comes once per epoch (plus the
wrap-round padding of each bucket's last global batch), ranks' shares are disjoint, and the order depends
only on (seed, epoch, rank, world): resuming at micro-batch ``start`` replays it exactly. With one bucket (a
square set) the batches are exactly EpochSampler's: the same order, the same padding, the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import torch


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's micro-batches (lists of indices), epoch after epoch, from micro-batch ``start`` of the run on.

    ``buckets[i]`` is image i's bucket (any hashable, e.g. its ``(width, height)``).
    """

    def __init__(
        self, buckets: Sequence[Hashable], batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0
    ) -> None:
        if not buckets:
            raise ValueError("no images to sample from")
        self.buckets, self.batch_size, self.seed = list(buckets), batch_size, seed
        self.rank, self.world, self.start = rank, world, start

    @staticmethod
    def batches_per_epoch(buckets: Sequence[Hashable], batch_size: int, world: int) -> int:
        """Micro-batches per rank per epoch: each bucket's images in whole global batches."""
        counts: dict[Hashable, int] = {}
        for b in buckets:
            counts[b] = counts.get(b, 0) + 1
        return sum(math.ceil(n / (batch_size * world)) for n in counts.values())

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s global batches (``batch_size × world`` indices each, one bucket each), in order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.buckets), generator=g).tolist()
        members: dict[Hashable, list[int]] = {}
        for i in order:
            members.setdefault(self.buckets[i], []).append(i)
        position = {i: p for p, i in enumerate(order)}
        chunk = self.batch_size * self.world
        keyed = []
        for indices in members.values():
            total = math.ceil(len(indices) / chunk) * chunk
            padded = (indices * (total // len(indices) + 1))[:total]
            keyed += [(position[padded[s]], padded[s : s + chunk]) for s in range(0, total, chunk)]
        return [batch for _, batch in sorted(keyed, key=lambda kb: kb[0])]

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batches_per_epoch(self.buckets, self.batch_size, self.world)
        epoch, skip = divmod(self.start, per_rank)
        while True:
            for batch in self.global_batches(epoch)[skip:]:
                yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            epoch, skip = epoch + 1, 0
