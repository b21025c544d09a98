"""One sampler for single-process and distributed runs, reproducible from (seed, epoch) and resumable mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler):
    """Epoch ``e``'s order is ``randperm(n)`` seeded by ``(seed, e)``; rank ``r`` of ``w`` takes every w-th index.

    ``pad=True`` (training) repeats indices so every rank gets as many samples, like
    ``DistributedSampler``; ``pad=False`` (evaluation) gives each sample to exactly one rank, so a
    confusion matrix summed over ranks counts every pixel once. ``set_epoch(e, skip=k)`` starts the
    epoch after the first ``k`` samples of this rank, which is how a run resumes mid-epoch.

    ``tag_epoch=True`` yields ``(epoch, index)`` pairs, which :class:`SegmentationDataset` takes as
    indices: the epoch that seeds a sample's augmentation then travels with the index itself, so it
    reaches DataLoader worker processes that persist across epochs (``dataset.set_epoch`` in the main
    process does not: each persistent worker keeps the copy of the dataset it started with).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True, tag_epoch: bool = False):
        self.n, self.shuffle, self.seed, self.rank, self.world_size, self.pad = n, shuffle, seed, rank, world_size, pad
        self.tag_epoch = tag_epoch
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.world_size > 1:
            total = math.ceil(self.n / self.world_size) * self.world_size
            order = (order * math.ceil(total / max(self.n, 1)))[:total]
        return order[self.rank::self.world_size][self.skip:]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        if self.tag_epoch:
            return iter([(self.epoch, i) for i in self._indices()])
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
