"""The bucket batch sampler: one bucket per batch, every image once per epoch, exact resume, disjoint ranks."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from humanfix.data.dataset import EpochSampler
from humanfix.data.sampler import BucketBatchSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize(("n", "batch", "world"), [(7, 1, 1), (7, 2, 1), (10, 3, 2), (5, 4, 3), (12, 2, 2)])
def test_a_square_set_gets_exactly_the_epoch_sampler_batches(n, batch, world):
    per_rank = EpochSampler.batches_per_epoch(n, batch, world)
    assert BucketBatchSampler.batches_per_epoch([(64, 64)] * n, batch, world) == per_rank
    for rank in range(world):
        for start in (0, 1, per_rank + 1):
            old = list(itertools.islice(iter(EpochSampler(n, batch, 3, rank, world, start)), 3 * per_rank * batch))
            new = take(BucketBatchSampler([(64, 64)] * n, batch, 3, rank, world, start), 3 * per_rank)
            assert [i for b in new for i in b] == old


SIZES = [(64, 64)] * 5 + [(80, 48)] * 4 + [(48, 80)] * 2


def test_one_bucket_per_batch_and_every_image_once_per_epoch():
    s = BucketBatchSampler(SIZES, 2, seed=1)
    per_epoch = s.batches_per_epoch(SIZES, 2, 1)
    assert per_epoch == 3 + 2 + 1
    for epoch in range(3):
        batches = take(BucketBatchSampler(SIZES, 2, 1, start=epoch * per_epoch), per_epoch)
        assert all(len(b) == 2 and len({SIZES[i] for i in b}) == 1 for b in batches)
        seen = Counter(i for b in batches for i in b)
        assert set(seen) == set(range(len(SIZES)))  # every image; the 5-image bucket wraps one round
        assert sorted(seen.values()) == [1] * 10 + [2]
    # the buckets come mixed, not one after the other, and the order changes with the epoch and the seed
    orders = [[SIZES[b[0]] for b in take(BucketBatchSampler(SIZES, 2, seed), per_epoch)] for seed in range(6)]
    assert len({tuple(o) for o in orders}) > 1
    e0, e1 = take(s, per_epoch), take(BucketBatchSampler(SIZES, 2, 1, start=per_epoch), per_epoch)
    assert e0 != e1


def test_deterministic_and_resumes_exactly_mid_epoch():
    full = take(BucketBatchSampler(SIZES, 2, seed=7), 20)
    assert full == take(BucketBatchSampler(SIZES, 2, seed=7), 20)
    for start in (1, 4, 6, 9):
        assert take(BucketBatchSampler(SIZES, 2, seed=7, start=start), 20 - start) == full[start:]


def test_two_processes_get_disjoint_shares_of_the_same_bucket_at_each_step():
    per_epoch = BucketBatchSampler.batches_per_epoch(SIZES, 1, 2)
    ranks = [take(BucketBatchSampler(SIZES, 1, 5, rank, 2), per_epoch) for rank in (0, 1)]
    for a, b in zip(*ranks, strict=True):
        assert SIZES[a[0]] == SIZES[b[0]]  # both ranks in one bucket at each step (same shapes)
    shares = [{i for batch in r for i in batch} for r in ranks]
    padded = {5: 1, 4: 0, 2: 0}  # each bucket padded to whole global batches of 2: only the 5-image one wraps
    assert len(shares[0] & shares[1]) <= sum(padded.values())
    assert shares[0] | shares[1] == set(range(len(SIZES)))
