"""The DataLoader every segzoo loop uses: batches of :func:`collate`, persistent workers, pinned memory on CUDA."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .dataset import collate


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> DataLoader:
    """A loader over ``sampler``'s indices; with ``workers`` > 0 the worker processes live across epochs.

    Persistent workers keep the dataset they started with, so anything that changes per epoch must
    come through the sampler's indices (``ShardedSampler(tag_epoch=True)``), not through attributes
    set on the dataset afterwards. The loader has its own generator: creating an iterator never draws
    from the global RNG that dropout uses, which is what lets a resumed run repeat an uninterrupted one.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))
