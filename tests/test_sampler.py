"""segzoo.data.sampler.MixedSampler: batches mixing both kinds in a set ratio, reproducible and resumable."""

from __future__ import annotations

import pytest

from segzoo.core.errors import SegzooError
from segzoo.data.sampler import MixedSampler, ShardedSampler, weak_per_batch


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_every_batch_mixes_the_kinds_in_the_ratio_and_an_epoch_is_the_pixel_set():
    s = MixedSampler(n_pixel=10, n_weak=7, batch_size=4, weak_ratio=0.5, seed=1)
    s.set_epoch(0)
    got = batches(list(s), 4)
    assert len(got) == s.batches() == 5
    for b in got:
        assert sum(i < 10 for i in b) == 2 and sum(i >= 10 for i in b) == 2
    pixel = [i for b in got for i in b if i < 10]
    plain = ShardedSampler(10, True, 1)
    plain.set_epoch(0)
    assert pixel == list(plain)  # the pixel-labelled samples come as they would unmixed
    # the image-labelled stream sees every item before any twice, across epochs too
    weak = [i - 10 for b in got for i in b if i >= 10]
    s.set_epoch(1)
    weak += [i - 10 for i in s if i >= 10]
    assert sorted(weak[:7]) == list(range(7)) and sorted(weak[7:14]) == list(range(7))


def test_the_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    a, b = MixedSampler(9, 5, 3, 0.34, seed=2), MixedSampler(9, 5, 3, 0.34, seed=2)
    a.set_epoch(3)
    b.set_epoch(3)
    full = list(a)
    assert full == list(b)
    b.set_epoch(3, skip=6)
    assert list(b) == full[6:] and len(b) == len(full) - 6
    b.set_epoch(4)
    assert list(b) != full
    tagged = MixedSampler(9, 5, 3, 0.34, seed=2, tag_epoch=True)
    tagged.set_epoch(3)
    assert list(tagged) == [(3, i) for i in full]


def test_ranks_share_the_epochs_batches_and_split_both_sets():
    ranks = [MixedSampler(7, 6, 4, 0.5, seed=0, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(0)
    orders = [list(s) for s in ranks]
    assert len(orders[0]) == len(orders[1])
    weak = [[i for i in o if i >= 7] for o in orders]
    assert len(weak[0]) == len(weak[1]) == 4  # 7 pixel samples padded to 4 a rank: 2 batches of 2 + 2
    assert sorted(weak[0][:3] + weak[1][:3]) == list(range(7, 13))  # the stream's first round, split between ranks


def test_a_ratio_that_leaves_a_kind_out_is_refused():
    assert weak_per_batch(8, 0.1) == 1 and weak_per_batch(8, 0.99) == 7
    with pytest.raises(SegzooError, match="batch-size >= 2"):
        weak_per_batch(1, 0.5)
    with pytest.raises(SegzooError, match="weak-ratio"):
        weak_per_batch(4, 1.0)


@pytest.mark.parametrize("n_pixel, n_weak, batch, ratio", [(8, 5, 2, 0.5), (12, 7, 3, 1 / 3), (6, 20, 4, 0.5)])
def test_ranks_together_train_the_batches_one_process_would_at_their_total_batch_size(n_pixel, n_weak, batch, ratio):
    """Two ranks of batch B: each batch mixes the kinds in the ratio on each rank, each masked sample comes once an
    epoch on one rank, and the two ranks' i-th batches hold together the samples of one process's i-th batch of 2B
    (so a 2-process run can train as a 1-process one, DDP's gradient average and the step's weighting aside)."""
    ranks = [MixedSampler(n_pixel, n_weak, batch, ratio, seed=4, rank=r, world_size=2) for r in range(2)]
    single = MixedSampler(n_pixel, n_weak, 2 * batch, ratio, seed=4)
    w = weak_per_batch(batch, ratio)
    assert single.weak_per_batch == 2 * w
    for epoch in range(3):
        for s in (*ranks, single):
            s.set_epoch(epoch)
        per_rank = [batches(list(s), batch) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == ranks[0].batches() == single.batches()
        for r in per_rank:
            assert [sum(i >= n_pixel for i in b) for b in r] == [w] * len(r)
            assert [sum(i < n_pixel for i in b) for b in r[:-1]] == [batch - w] * (len(r) - 1)  # the last: what is left
        masked = sorted(i for r in per_rank for b in r for i in b if i < n_pixel)
        assert masked == list(range(n_pixel))  # the epoch is the pixel-labelled set, each once over the ranks
        together = [sorted(a + b) for a, b in zip(*per_rank)]
        assert together == [sorted(b) for b in batches(list(single), 2 * batch)]
