"""A segmentation dataset over (image, mask) pairs that checks every sample before it reaches the loss.

A label outside ``0 .. num_classes-1`` (other than 255), a mask whose size differs from its
image's, or an unreadable file is a :class:`DataError` naming the file and the fix; with
``skip_bad=True`` such a sample is dropped instead, and counted (:func:`collate` reports how many).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.errors import DataError
from .formats import PairList, find_pairs
from .io import IGNORE_INDEX, read_image, read_mask
from .label_map import LabelMap
from .transforms import Compose, eval_transform, to_tensors


class SegmentationDataset(Dataset):
    """Samples ``{"image": 3xHxW float, "mask": HxW int64, "index": i}``, augmented reproducibly.

    The random transform of sample ``i`` in epoch ``e`` is drawn from ``default_rng([seed, e, i])``,
    so it does not depend on worker count, sample order or where a run was resumed. ``e`` is the
    epoch of ``set_epoch``, or given with the index as ``dataset[(e, i)]`` (what
    ``ShardedSampler(tag_epoch=True)`` yields), which also reaches persistent loader workers.
    """

    def __init__(self, pairs: PairList, num_classes: int | None = None, transform: Compose | None = None,
                 skip_bad: bool = False, seed: int = 0, label_map: LabelMap | None = None):
        self.pairs, self.label_map = pairs, label_map
        names = pairs.class_names
        if label_map is not None:  # the dataset's class_names.txt names its own ids, not the training ids
            names = list(label_map.names) if label_map.names else None
            num_classes = label_map.num_classes if num_classes is None else num_classes
        if num_classes is None:
            if names is None:
                raise DataError(f"{pairs.root} has no class_names.txt; write one (a class name per line) "
                                "or pass --num-classes N")
            num_classes = len(names)
        if names is not None and len(names) != num_classes:
            where = f"label map {label_map.source} names" if label_map is not None else f"{pairs.root} lists"
            raise DataError(f"{where} {len(names)} classes but {num_classes} were asked for; make "
                            f"{'its names' if label_map is not None else 'class_names.txt'} and --num-classes (or the "
                            "checkpoint's classes) agree" + ("" if label_map is not None else
                                                             ", or pass the --label-map a model was trained with"))
        self.num_classes = int(num_classes)
        self.class_names = list(names) if names else [f"class_{i}" for i in range(self.num_classes)]
        self.transform = transform or eval_transform()
        self.skip_bad, self.seed, self.epoch = skip_bad, int(seed), 0

    def __len__(self) -> int:
        return len(self.pairs.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked raw arrays of one pair (H x W x 3 uint8 image, H x W uint8 mask)."""
        image_path, mask_path = self.pairs.pairs[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        if self.label_map is not None:
            mask = self.label_map(mask)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; a mask must have its image's size: regenerate or resize it "
                "(nearest neighbour), or pass --skip-bad to skip it")
        bad = np.unique(mask[(mask >= self.num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise DataError(
                f"mask {mask_path} has label values {bad[:8].tolist()} but the dataset has {self.num_classes} "
                f"classes (0-{self.num_classes - 1}) and 255 for void; fix the mask, list every class in "
                "class_names.txt (or --num-classes), or pass --skip-bad to skip it")
        return image, mask

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        try:
            image, mask = self.load(index)
        except DataError:
            if self.skip_bad:
                return None
            raise
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        img, target = self.transform(*to_tensors(image, mask), rng)
        return {"image": img, "mask": target, "index": int(index)}


def open_dataset(root: str | os.PathLike[str], split: str = "train", num_classes: int | None = None,
                 transform: Compose | None = None, skip_bad: bool = False, seed: int = 0) -> SegmentationDataset:
    """A dataset for one split of a VOC folder, a folder pair, or a split list file (see formats.py)."""
    return SegmentationDataset(find_pairs(root, split, skip_bad), num_classes, transform, skip_bad, seed)


def collate(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack a batch, padding smaller samples at the bottom/right (image 0, mask 255); drop skipped ones."""
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if not kept:
        return {"image": torch.empty(0), "mask": torch.empty(0, dtype=torch.long), "index": torch.empty(0),
                "skipped": skipped}
    h = max(s["mask"].shape[0] for s in kept)
    w = max(s["mask"].shape[1] for s in kept)
    images, masks = [], []
    for s in kept:
        dh, dw = h - s["mask"].shape[0], w - s["mask"].shape[1]
        images.append(F.pad(s["image"], (0, dw, 0, dh), value=0.0) if dh or dw else s["image"])
        masks.append(F.pad(s["mask"], (0, dw, 0, dh), value=IGNORE_INDEX) if dh or dw else s["mask"])
    return {"image": torch.stack(images), "mask": torch.stack(masks),
            "index": torch.tensor([s["index"] for s in kept]), "skipped": skipped}


def check_dataset(dataset: SegmentationDataset) -> list[str]:
    """Every problem of every pair (not only the first), for ``segzoo data check``."""
    problems = list(dataset.pairs.dropped)
    for i in range(len(dataset)):
        try:
            dataset.load(i)
        except DataError as exc:
            problems.append(str(exc))
    return problems
