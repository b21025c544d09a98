"""Setting a run up before its first step: seeds, the data (the demo's when none is given), datasets and loaders.

Kept apart from the loop (segzoo.train.trainer) so that what a run trains on can be read, tested and
reused (bench times the same input pipeline) without a model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.errors import SegzooError
from ..data import SegmentationDataset, ShardedSampler, eval_transform, find_pairs, make_loader, train_transform
from ..data.demo import write_demo_dataset
from ..data.formats import PairList
from ..data.label_map import LabelMap, load_label_map
from ..data.sampler import MixedSampler
from ..data.weak import (
    ImageLabelDataset,
    MixedDataset,
    WeakItem,
    folder_items,
    hide_masks,
    listed_items,
    unknown_classes_error,
)
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
    weak: list[WeakItem] = field(default_factory=list)  # image-labelled training images (docs/weak-labels.md)
    hidden: int = 0  # training images whose masks --pixel-fraction hid (in ``weak`` with their classes)


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
    names = list(probe.class_names)
    pairs["train"], hidden = hide_masks(pairs["train"], cfg.pixel_fraction, cfg.seed, probe.num_classes, label_map)
    splits = RunSplits(pairs, names, probe.num_classes, label_map, hidden=len(hidden))
    if cfg.trains_image_labels:  # otherwise image-labelled images are not read, nor their class names checked
        splits.weak = image_labelled(cfg, pairs["train"], names, label_map) + hidden
    return splits


def image_labelled(cfg: TrainConfig, pairs: PairList, names: list[str], label_map: LabelMap | None) -> list[WeakItem]:
    """The image-labelled images of the training split (image_labels.txt) and of ``--weak-data``; a class name
    that maps to nothing is an error naming where it was written."""
    weak, unknown = listed_items(pairs, names, label_map)
    if unknown:
        raise unknown_classes_error(unknown, str(pairs.labels_file), names)
    if cfg.weak_data:
        more, unknown = folder_items(cfg.weak_data, names, label_map)
        if unknown:
            raise unknown_classes_error(unknown, f"--weak-data {cfg.weak_data} (its folder names)", names)
        weak += more
    return weak


@dataclass
class RunData:
    """The datasets, the sampler and the loaders one run (one rank) trains and validates with."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset | None
    sampler: ShardedSampler | MixedSampler
    loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int
    weak_set: ImageLabelDataset | None = None  # the image-labelled images the loader mixes in, if any


def make_data(cfg: TrainConfig, rt: rtm.Runtime, splits: RunSplits, normalization: dict[str, Any]) -> RunData:
    """Datasets normalised as the model wants, sharded over ranks; the epoch travels with each sample index,
    so persistent loader workers (which never see a set_epoch on the dataset) still augment per epoch."""
    pairs = splits.pairs
    train_set = SegmentationDataset(pairs["train"], splits.num_classes,
                                    train_transform(cfg.input_size, normalization, tuple(cfg.scale), cfg.flip),
                                    cfg.skip_bad, cfg.seed, label_map=splits.label_map)
    val_set = (SegmentationDataset(pairs["val"], splits.num_classes, eval_transform(normalization), cfg.skip_bad,
                                   label_map=splits.label_map) if "val" in pairs else None)
    sampler: ShardedSampler | MixedSampler
    weak_set, source = None, train_set
    if cfg.trains_image_labels and splits.weak:  # both kinds in every batch; an epoch is one pass over the masks
        weak_set = ImageLabelDataset(splits.weak, splits.num_classes, train_set.transform, cfg.seed)
        source = MixedDataset(train_set, weak_set)
        sampler = MixedSampler(len(train_set), len(weak_set), cfg.batch_size, cfg.weak_ratio, cfg.seed, rt.rank,
                               rt.world_size, tag_epoch=True)
    else:
        sampler = ShardedSampler(len(train_set), True, cfg.seed, rt.rank, rt.world_size, pad=True, tag_epoch=True)

    def loader(dataset: Dataset, s: Sampler) -> DataLoader:
        return make_loader(dataset, s, cfg.batch_size, cfg.workers, pin_memory=rt.device.type == "cuda",
                           seed=cfg.seed)

    val_loader = (loader(val_set, ShardedSampler(len(val_set), False, 0, rt.rank, rt.world_size, pad=False))
                  if val_set else None)
    return RunData(train_set, val_set, sampler, loader(source, sampler), val_loader,
                   math.ceil(len(sampler) / cfg.batch_size), weak_set)
