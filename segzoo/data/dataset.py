"""A segmentation dataset over (image, mask) pairs that checks every sample before it reaches the loss.

A label outside ``0 .. num_classes-1`` (other than 255), a mask whose size differs from its
image's, or an unreadable file is a :class:`DataError` naming the file and the fix; with
``skip_bad=True`` such a sample is dropped instead, and counted (:func:`collate` reports how many).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.errors import DataError, InputError
from .formats import PairList, find_pairs
from .io import IGNORE_INDEX, VOC_CLASSES, describe_kind, image_kind, read_image, read_mask
from .label_map import LabelMap
from .transforms import Compose, eval_transform, to_tensors
from .weak import labels_vector, mask_classes

# Decoded (image, mask) arrays by file pair while shared_decoding() is active, and the bytes they may take.
_DECODED: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_BUDGET = [0]


@contextlib.contextmanager
def shared_decoding(max_bytes: int) -> Iterator[None]:
    """Within the block every dataset keeps the checked arrays it decodes, up to ``max_bytes`` in all, and
    any dataset over the same files reuses them: the runs of a study decode each image once, not once per
    run and epoch. Loader worker processes keep their own copies (nothing is shared back)."""
    _BUDGET[0] = int(max_bytes)
    try:
        yield
    finally:
        _DECODED.clear()
        _BUDGET[0] = 0


class SegmentationDataset(Dataset):
    """Samples ``{"image": 3xHxW float, "mask": HxW int64, "index": i, "image_labels": C floats, "has_mask": True}``,
    augmented reproducibly; ``image_labels`` are the classes the whole mask shows (background always 1).

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
        if num_classes is None and names is None:
            num_classes = classes_in_masks(pairs)
            print(f"note: {pairs.root} has no class_names.txt: {num_classes} classes (0-{num_classes - 1}) from the "
                  f"mask values of split '{pairs.split}'; write class_names.txt or pass --num-classes N to set them",
                  file=sys.stderr)
        if names is None and pairs.layout == "voc" and num_classes == len(VOC_CLASSES):
            names = list(VOC_CLASSES)  # a VOC folder of VOC's class count: PASCAL VOC's names
        if num_classes is None:
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
        """The checked raw arrays of one pair (H x W x 3 uint8 image, H x W uint8 mask), decoded once within
        :func:`shared_decoding`. The arrays are shared: copy before changing them in place."""
        image_path, mask_path = self.pairs.pairs[index]
        key = (str(image_path), str(mask_path))
        if key in _DECODED:
            image, raw = _DECODED[key]
        else:
            try:
                image, raw = read_image(image_path), read_mask(mask_path)
            except DataError as exc:  # the commands that read a dataset can skip a bad pair: say so there only
                raise DataError(f"{exc} (or pass --skip-bad to skip it)") from exc.__cause__
        # the cache keeps the file's own ids: datasets with other label maps (or none) share it
        mask = self.label_map(raw) if self.label_map is not None else raw
        self._check(image, mask, image_path, mask_path)
        if _BUDGET[0] and key not in _DECODED and image.nbytes + raw.nbytes <= _BUDGET[0]:
            _DECODED[key] = image, raw
            _BUDGET[0] -= image.nbytes + raw.nbytes
        return image, mask

    def _check(self, image: np.ndarray, mask: np.ndarray, image_path: Any, mask_path: Any) -> None:
        self._check_kind(image, image_path)
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

    def _check_kind(self, image: np.ndarray, path: Any) -> None:
        """Every image of a dataset has the first one's channels and bit depth (a mix would be scaled unevenly)."""
        kind = image_kind(image)
        first = getattr(self, "_first_kind", None)
        if first is None:
            self._first_kind = (kind, path)
        elif first[0] != kind:
            raise DataError(f"the dataset's images disagree: {first[1]} is {describe_kind(first[0])}, {path} is "
                            f"{describe_kind(kind)}; convert them to one kind (segzoo data check lists them all)")

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
        try:
            img, target = self.transform(*to_tensors(image, mask), rng)
        except InputError as exc:
            raise DataError(f"image {self.pairs.pairs[index][0]}: {exc}") from None
        labels = labels_vector(mask_classes(mask, self.num_classes), self.num_classes)
        return {"image": img, "mask": target, "index": int(index), "image_labels": labels, "has_mask": True}


# This many ids in a row that no mask has (with most ids absent) is no set of classes: ask for the count.
LARGE_GAP = 8


def classes_in_masks(pairs: PairList) -> int:
    """The class count the masks of ``pairs`` show: their largest label other than 255 (void), plus one.

    Ids are classes only if they look like them: when fewer than half of the ids from 0 to the largest one
    appear in any mask and a run of at least :data:`LARGE_GAP` ids between them appears in none (a stray 50 in
    a 3-class set would make 51 classes), it is a :class:`DataError` naming the ids above the gap and the file
    each first appears in, and asking for class_names.txt or ``--num-classes``. A smaller gap is counted,
    with a note naming the ids no mask has.
    """
    first: dict[int, str] = {}  # id -> the first mask it is in
    for _, mask_path in pairs.pairs:
        values = np.unique(read_mask(mask_path))
        for v in values[values != IGNORE_INDEX].tolist():
            first.setdefault(int(v), str(mask_path))
    if not first:
        raise DataError(f"the masks of split '{pairs.split}' of {pairs.root} are all void (255): no class to learn; "
                        "check the masks, or write class_names.txt and pass --num-classes N")
    top = max(first)
    absent = [i for i in range(top + 1) if i not in first]
    ids = sorted(first)
    widest = max([b - a - 1 for a, b in zip([-1, *ids], ids)])  # absent ids in a row, from 0 up
    if len(absent) > len(first) and widest >= LARGE_GAP:
        above = _above_gap(sorted(first))
        files: dict[str, list[str]] = {}
        for v in above[:3]:
            files.setdefault(first[v], []).append(str(v))
        where = "; ".join(f"{', '.join(v)} first in {f}" for f, v in files.items()) + (" ..." if len(above) > 3 else "")
        voc = " (21 for PASCAL VOC)" if pairs.layout == "voc" else ""
        raise DataError(
            f"the masks of split '{pairs.split}' of {pairs.root} hold ids {_spans(sorted(first))} ({where}): "
            f"counted from the masks that is {top + 1} classes, {len(absent)} of them in no mask. Say how many "
            f"classes there are: class_names.txt (one name per line) or --num-classes N{voc}; an id at or above N "
            "is then reported with its mask, to fix or set to 255 (void)")
    if absent:
        print(f"note: class ids {_spans(absent)} appear in no mask of split '{pairs.split}' of {pairs.root}; they "
              f"count as classes (0-{top}), but nothing teaches them", file=sys.stderr)
    return top + 1


def _above_gap(ids: list[int]) -> list[int]:
    """The ids (sorted) above the widest gap in ``ids``, highest first: the likeliest strays."""
    gaps = [(b - a, b) for a, b in zip(ids, ids[1:])]
    start = max(gaps)[1] if gaps else ids[0]
    return sorted((i for i in ids if i >= start), reverse=True)


def _spans(ids: list[int]) -> str:
    """``[0, 1, 2, 50]`` -> ``0-2, 50``."""
    out, start = [], None
    for i, v in enumerate(ids):
        if start is None:
            start = v
        if i + 1 == len(ids) or ids[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def open_dataset(root: str | os.PathLike[str], split: str = "train", num_classes: int | None = None,
                 transform: Compose | None = None, skip_bad: bool = False, seed: int = 0) -> SegmentationDataset:
    """A dataset for one split of a VOC folder, a folder pair, or a split list file (see formats.py)."""
    return SegmentationDataset(find_pairs(root, split, skip_bad), num_classes, transform, skip_bad, seed)


def collate(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack a batch, padding smaller samples at the bottom/right (image 0, mask 255); drop skipped ones.

    ``image_labels`` (N x C) and ``has_mask`` (N bool) are stacked when every sample carries them.
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if not kept:
        return {"image": torch.empty(0), "mask": torch.empty(0, dtype=torch.long), "index": torch.empty(0),
                "skipped": skipped, "has_mask": torch.empty(0, dtype=torch.bool)}
    h = max(s["mask"].shape[0] for s in kept)
    w = max(s["mask"].shape[1] for s in kept)
    images, masks = [], []
    for s in kept:
        dh, dw = h - s["mask"].shape[0], w - s["mask"].shape[1]
        images.append(F.pad(s["image"], (0, dw, 0, dh), value=0.0) if dh or dw else s["image"])
        masks.append(F.pad(s["mask"], (0, dw, 0, dh), value=IGNORE_INDEX) if dh or dw else s["mask"])
    batch = {"image": torch.stack(images), "mask": torch.stack(masks),
             "index": torch.tensor([s["index"] for s in kept]), "skipped": skipped}
    if all("has_mask" in s for s in kept):
        batch["has_mask"] = torch.tensor([bool(s["has_mask"]) for s in kept])
    if all(s.get("image_labels") is not None for s in kept):
        batch["image_labels"] = torch.stack([s["image_labels"] for s in kept])
    return batch


def check_dataset(dataset: SegmentationDataset) -> list[str]:
    """Every problem of every pair (not only the first), for ``segzoo data check``."""
    problems = list(dataset.pairs.dropped)
    for i in range(len(dataset)):
        try:
            dataset.load(i)
        except DataError as exc:
            problems.append(str(exc))
    return problems
