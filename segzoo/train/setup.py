"""Setting a run up before its first step: seeds, the data (the demo's when none is given), datasets and loaders,
and then (:func:`build_run`) the model, optimiser, loss and step of one run, as one :class:`RunParts` record.

Kept apart from the loop (segzoo.train.trainer) so that what a run trains on can be read, tested and
reused (bench times the same input pipeline and step) without running it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..api import create_model
from ..core.errors import GeometryError, SegzooError
from ..core.model import SegmentationModel
from ..data import SegmentationDataset, ShardedSampler, eval_transform, find_pairs, make_loader, train_transform
from ..data.demo import write_demo_dataset
from ..data.formats import PairList
from ..data.label_map import LabelMap, load_label_map
from ..data.stats import normalization_for
from . import runtime as rtm
from .class_weights import auto_class_weights
from .config import TrainConfig
from .loss import Loss, make_loss
from .optim import make_optimizer, make_scheduler
from .presets import resolve_preset
from .run_folder import LOCK_NAME, run_files
from .state import init_from_checkpoint
from .step import TrainStep


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
    loader = make_loader(train_set, sampler, cfg.batch_size, cfg.workers, pin_memory=rt.device.type == "cuda",
                         seed=cfg.seed)
    val_loader = eval_loader(val_set, rt, cfg.batch_size, cfg.workers, cfg.seed) if val_set else None
    return RunData(train_set, val_set, sampler, loader, val_loader, math.ceil(len(sampler) / cfg.batch_size))


def eval_loader(dataset: SegmentationDataset, rt: rtm.Runtime, batch_size: int = 1, workers: int = 0,
                seed: int = 0) -> DataLoader:
    """The one loader every evaluation reads (validation, ``segzoo eval``, studies): in order, each rank its
    own shard and no sample twice, so the confusion matrices summed over ranks count every image once."""
    return make_loader(dataset, ShardedSampler(len(dataset), False, 0, rt.rank, rt.world_size, pad=False),
                       batch_size, workers, pin_memory=rt.device.type == "cuda", seed=seed)


@dataclass
class RunParts:
    """Everything one run (one rank) trains with, built before its first step; the loop owns the counters."""

    model: SegmentationModel
    net: torch.nn.Module  # what runs forward: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: Loss
    data: RunData
    class_names: list[str]
    step: TrainStep

    @property
    def batches_per_epoch(self) -> int:
        return self.data.steps_per_epoch

    def steps_per_epoch(self, accumulate: int) -> int:
        """Optimiser steps an epoch: with ``accumulate`` N a step takes N batches (fewer at an epoch's end)."""
        return -(-self.batches_per_epoch // accumulate)


def build_run(cfg: TrainConfig, rt: rtm.Runtime, out: Path, resuming: bool = False,
              log: Callable[[str], None] = print) -> RunParts:
    """The model (its classes and normalization from the data), the data, the optimiser, the loss and the step
    of a run described by a resolved, checked ``cfg``; ``resuming``: a checkpoint will put the weights back."""
    seed_everything(cfg.seed)
    data = data_folder(cfg, rt, out)
    splits = find_splits(cfg, data)
    model = build_model(cfg, splits.num_classes)
    model.recipe = model.recipe.replace(class_names=tuple(splits.class_names))
    if cfg.normalization:  # the data's own statistics, kept in the recipe so predict and export use them too
        model.recipe = model.recipe.replace(normalization=normalization_for(cfg.normalization, data, cfg.train_split))
    if cfg.preset and not cfg.init_from and not resuming:
        coarse = resolve_preset(cfg.preset, cfg.model, need_lr=False)["init_from"]
        if coarse:
            log(f"note: preset {cfg.preset} fine-tunes {cfg.model} from a trained {coarse}; to do the same pass "
                f"that run's checkpoint, e.g. --init-from runs/{coarse}/last.pt (init_from= in Python or a study); "
                "training from the backbone's initialisation instead")
    if cfg.init_from and not resuming:
        got = init_from_checkpoint(model, cfg.init_from)
        log(f"initialised {len(got['copied'])} tensors from {cfg.init_from}; "
            f"{len(got['kept'])} keep their initialisation: {', '.join(got['kept'][:6])}")
    for p in splits.pairs.values():
        if p.dropped:
            log(f"skipped {len(p.dropped)} bad entries of split '{p.split}', e.g.: {p.dropped[0]}")
    run_data = make_data(cfg, rt, splits, model.normalization)
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    steps = -(-run_data.steps_per_epoch // cfg.accumulate)
    scheduler = make_scheduler(optimizer, cfg.optimizer, cfg.epochs * steps)
    if cfg.sync_bn:
        convert_sync_bn(model, rt, log)
    weights = class_weights(cfg, rt, run_data.train_set, out, log)
    weight = torch.tensor(weights, dtype=torch.float32, device=rt.device) if weights else None
    criterion = make_loss(cfg.loss, weight, cfg.loss_reduction, cfg.loss_kwargs)
    net = (DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
           if rt.distributed else model)
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    void = (conv.in_channels if conv is not None else 3, cfg.input_size, cfg.input_size)
    step = TrainStep(net, model, criterion, optimizer, rt, scheduler, rt.grad_scaler(), void_input=void)
    return RunParts(model, net, optimizer, scheduler, criterion, run_data, list(splits.class_names), step)


def build_model(cfg: TrainConfig, num_classes: int) -> SegmentationModel:
    """The model, in the geometry the config (or its preset) asks for."""
    try:
        return create_model(cfg.model, num_classes, cfg.backbone_weights, cfg.backbone_kwargs, cfg.head_kwargs,
                            geometry=cfg.geometry)
    except GeometryError as exc:
        if not cfg.preset:
            raise
        raise GeometryError(
            f"preset '{cfg.preset}' trains in geometry '{cfg.geometry}', which {cfg.model} cannot have "
            f"({exc}). To keep the preset's other settings on this model, pass --geometry modern "
            "(geometry='modern')") from exc


def convert_sync_bn(model: torch.nn.Module, rt: rtm.Runtime, log: Callable[[str], None]) -> None:
    """``--sync-bn``: BatchNorm statistics over every process (SyncBatchNorm), which only DDP on GPUs runs."""
    if not rt.distributed:
        log("note: --sync-bn changes nothing in one process (it syncs BatchNorm across torchrun's processes)")
        return
    if rt.device.type == "cpu":
        raise SegzooError("--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on CPU (gloo); leave "
                          "--sync-bn out, or train on GPUs")
    count = rtm.sync_batchnorm(model)
    log(f"--sync-bn: {count} BatchNorm layers synchronised across {rt.world_size} processes")


def class_weights(cfg: TrainConfig, rt: rtm.Runtime, train_set: SegmentationDataset, out: Path,
                  log: Callable[[str], None]) -> list[float] | None:
    """The configured weights, or with ``"auto"`` median-frequency ones counted once (rank 0) and cached."""
    if cfg.class_weights != "auto":
        return cfg.class_weights
    source = {"data": str(Path(cfg.data).resolve()) if cfg.data else "demo", "split": cfg.train_split,
              "label_map": str(Path(cfg.label_map).resolve()) if cfg.label_map else None}
    if rt.is_main:
        weights = auto_class_weights(train_set, out, source, log=log)
    rtm.barrier(rt)
    if not rt.is_main:
        weights = auto_class_weights(train_set, out, source, write=False, log=lambda _: None)
    return weights
