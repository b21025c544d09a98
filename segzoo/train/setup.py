"""Setting a run up before its first step: seeds, the data (the demo's when none is given), datasets and loaders.

Kept apart from the loop (segzoo.train.trainer) so that what a run trains on can be read, tested and
reused (bench times the same input pipeline) without a model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.errors import SegzooError
from ..data import SegmentationDataset, ShardedSampler, eval_transform, find_pairs, make_loader, train_transform
from ..data.demo import write_demo_dataset
from ..data.formats import PairList
from ..data.label_map import LabelMap, load_label_map
from . import runtime as rtm
from .config import TrainConfig
from .run_folder import LOCK_NAME, run_files


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_class_weights(weights: list[float] | str | None, class_names: list[str]) -> None:
    """One finite, non-negative loss weight per class, or a :class:`SegzooError` that says what to give."""
    if weights is None or weights == "auto":
        return
    n = len(class_names)
    names = ", ".join(class_names[:8]) + (", ..." if n > 8 else "")
    if len(weights) != n:
        raise SegzooError(
            f"--class-weights has {len(weights)} values but the dataset has {n} classes ({names}); give one "
            f"weight per class, in class order, e.g. --class-weights {','.join(['1'] * n)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise SegzooError(f"--class-weights {','.join(f'{w:g}' for w in weights)}: each weight must be finite "
                          "and >= 0 (0 leaves a class out of the loss)")


def default_run_folder(model: str, root: str | Path = "runs") -> Path:
    """``runs/<model>``, or ``runs/<model>-2``, ``-3``... : the first that holds no run yet."""
    base = Path(root) / model
    path, n = base, 2
    while run_files(path) or (path / LOCK_NAME).exists():  # any part of a run, or a run starting there
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def data_folder(cfg: TrainConfig, rt: rtm.Runtime, out: Path) -> Path:
    """The run's dataset: ``cfg.data``, or the demo dataset written (by rank 0) beside the run folder."""
    if cfg.data:
        return Path(cfg.data)
    path = out.parent / "demo-data"
    if rt.is_main:
        write_demo_dataset(path, **cfg.demo)
    rtm.barrier(rt)
    return path


@dataclass
class RunSplits:
    """The image/mask pairs of each split and the classes they are labelled with (known before any model)."""

    pairs: dict[str, PairList]
    class_names: list[str]
    num_classes: int
    label_map: LabelMap | None = None  # dataset ids -> training ids (--label-map)


def find_splits(cfg: TrainConfig, data: Path) -> RunSplits:
    """The train (and validation) pairs; the classes from ``cfg.num_classes`` or the dataset, checked on the masks."""
    pairs = {"train": find_pairs(data, cfg.train_split, cfg.skip_bad)}
    if cfg.val_split:
        pairs["val"] = find_pairs(data, cfg.val_split, cfg.skip_bad)
    label_map = load_label_map(cfg.label_map) if cfg.label_map else None
    num_classes = cfg.num_classes or (label_map.num_classes if label_map else None) or (
        len(pairs["train"].class_names) if pairs["train"].class_names else None)
    # checks classes before any model is built
    probe = SegmentationDataset(pairs["train"], num_classes, label_map=label_map)
    check_class_weights(cfg.class_weights, probe.class_names)
    return RunSplits(pairs, list(probe.class_names), probe.num_classes, label_map)


@dataclass
class RunData:
    """The datasets, the sampler and the loaders one run (one rank) trains and validates with."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset | None
    sampler: ShardedSampler
    loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int


def make_data(cfg: TrainConfig, rt: rtm.Runtime, splits: RunSplits, normalization: dict[str, Any]) -> RunData:
    """Datasets normalised as the model wants, sharded over ranks; the epoch travels with each sample index,
    so persistent loader workers (which never see a set_epoch on the dataset) still augment per epoch."""
    pairs = splits.pairs
    train_set = SegmentationDataset(pairs["train"], splits.num_classes,
                                    train_transform(cfg.input_size, normalization, tuple(cfg.scale), cfg.flip),
                                    cfg.skip_bad, cfg.seed, label_map=splits.label_map)
    val_set = (SegmentationDataset(pairs["val"], splits.num_classes, eval_transform(normalization), cfg.skip_bad,
                                   label_map=splits.label_map) if "val" in pairs else None)
    sampler = ShardedSampler(len(train_set), True, cfg.seed, rt.rank, rt.world_size, pad=True, tag_epoch=True)

    def loader(dataset: SegmentationDataset, s: ShardedSampler) -> DataLoader:
        return make_loader(dataset, s, cfg.batch_size, cfg.workers, pin_memory=rt.device.type == "cuda",
                           seed=cfg.seed)

    val_loader = (loader(val_set, ShardedSampler(len(val_set), False, 0, rt.rank, rt.world_size, pad=False))
                  if val_set else None)
    return RunData(train_set, val_set, sampler, loader(train_set, sampler), val_loader,
                   math.ceil(len(sampler) / cfg.batch_size))
