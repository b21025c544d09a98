"""One sampler for single-process and distributed runs, reproducible from (seed, epoch) and resumable mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ..core.errors import SegzooError
from ..core.settings import SETTINGS


class _EpochOrder(Sampler):
    """A sampler whose order is ``_indices()`` for ``self.epoch``, tagged with the epoch when ``tag_epoch``."""

    epoch: int
    tag_epoch: bool

    def _indices(self) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        if self.tag_epoch:
            return iter([(self.epoch, i) for i in self._indices()])
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


class ShardedSampler(_EpochOrder):
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


def weak_per_batch(batch_size: int, weak_ratio: float) -> int:
    """Image-labelled samples in each batch of ``batch_size``: ``round(batch_size * weak_ratio)``, kept in
    ``1 .. batch_size - 1`` so every batch has both kinds."""
    if batch_size < 2:
        raise SegzooError(f"mixing pixel- and image-labelled samples needs --batch-size >= 2 (one of each), got "
                         f"{batch_size}")
    SETTINGS["weak_ratio"].check(weak_ratio)
    return min(max(round(batch_size * weak_ratio), 1), batch_size - 1)


class MixedSampler(_EpochOrder):
    """Batches that mix ``batch_size - w`` pixel-labelled samples with ``w`` image-labelled ones (w from
    :func:`weak_per_batch`), as one flat sequence a loader of ``batch_size`` cuts into exactly those batches.

    An epoch is one pass over this rank's pixel-labelled shard (:class:`ShardedSampler`'s order, so the
    pixel-labelled samples come as they would without mixing); the last batch holds what is left of them
    and its share of image-labelled ones. Image-labelled indices are offset by ``n_pixel`` (a
    :class:`~segzoo.data.weak.MixedDataset`'s layout) and drawn from one stream per run: permutations of
    the ``n_weak`` items seeded by ``(seed, round)``, every ``world_size``-th element to this rank, epoch
    ``e`` taking the stream's next slice, so every image-labelled image is seen before any is seen twice.
    Everything is a function of (seed, epoch), and ``set_epoch(e, skip=k)`` resumes after ``k`` samples.
    """

    def __init__(self, n_pixel: int, n_weak: int, batch_size: int, weak_ratio: float, seed: int = 0, rank: int = 0,
                 world_size: int = 1, tag_epoch: bool = False):
        if n_weak < 1:
            raise SegzooError("a mixed sampler needs image-labelled samples; there are none")
        self.pixel = ShardedSampler(n_pixel, True, seed, rank, world_size, pad=True)
        self.n_pixel, self.n_weak, self.seed, self.rank, self.world_size = n_pixel, n_weak, seed, rank, world_size
        self.weak_per_batch = weak_per_batch(batch_size, weak_ratio)
        self.pixel_per_batch = batch_size - self.weak_per_batch
        self.tag_epoch = tag_epoch
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)
        self.pixel.set_epoch(epoch)

    def batches(self) -> int:
        """Batches per epoch (the pixel-labelled shard in chunks of ``pixel_per_batch``)."""
        return math.ceil(len(self.pixel) / self.pixel_per_batch)

    def _weak(self, start: int, count: int) -> list[int]:
        """Elements ``start .. start+count-1`` of this rank's image-labelled stream."""
        out, perms = [], {}
        for j in range(start, start + count):
            g = j * self.world_size + self.rank
            k, pos = divmod(g, self.n_weak)
            if k not in perms:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + 50_021 + k)
                perms[k] = torch.randperm(self.n_weak, generator=gen).tolist()
            out.append(perms[k][pos])
        return out

    def _indices(self) -> list[int]:
        pixel, p, w = self.pixel._indices(), self.pixel_per_batch, self.weak_per_batch
        n = self.batches()
        weak = self._weak(self.epoch * n * w, n * w)
        order: list[int] = []
        for b in range(n):
            order += pixel[b * p:(b + 1) * p] + [self.n_pixel + i for i in weak[b * w:(b + 1) * w]]
        return order[self.skip:]
