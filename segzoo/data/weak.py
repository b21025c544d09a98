"""Images with only an image-level label ("this image holds a person and a sofa"), trained beside pixel masks.

Three sources give them, each turned into :class:`WeakItem` (an image path and the training ids of the classes
it holds):

* ``image_labels.txt`` (or ``.csv``) beside a VOC or folder-pair dataset: the split's images without a mask that
  it lists (``PairList.weak``, found by :func:`segzoo.data.formats.find_pairs`);
* ``--weak-data DIR`` in ImageFolder layout (``DIR/<class>/<image>``, as classification sets ship), the folder
  name being a class name, or a dataset id that ``--label-map`` maps to a training id;
* masks hidden on purpose (``--pixel-fraction``): the images that lose their masks keep the classes those masks
  showed, the standard protocol for measuring what image labels are worth.

Background (class 0) always counts as present. An image-labelled sample is ``{"image", "mask" (all 255, so no
pixel loss reaches it), "index", "image_labels", "has_mask": False}``; :class:`MixedDataset` puts both kinds
behind one index space for :class:`~segzoo.data.sampler.MixedSampler`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import DataError, InputError
from ..core.settings import SETTINGS
from .formats import IMAGE_EXTS, PairList
from .io import IGNORE_INDEX, read_image, read_mask
from .label_map import LabelMap
from .transforms import Compose, eval_transform, to_tensors


@dataclass(frozen=True)
class WeakItem:
    """One image-labelled image: its file and the training ids of the classes it holds (background implied)."""

    image: Path
    classes: tuple[int, ...]


def labels_vector(classes: tuple[int, ...] | list[int] | np.ndarray, num_classes: int) -> torch.Tensor:
    """``num_classes`` floats, 1 for each class present; background (0) is always 1."""
    out = torch.zeros(num_classes, dtype=torch.float32)
    out[[int(c) for c in classes if 0 <= int(c) < num_classes]] = 1.0
    out[0] = 1.0
    return out


def mask_classes(mask: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """The classes a mask shows (void 255 and out-of-range values left out)."""
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)[:num_classes]
    return tuple(int(c) for c in np.flatnonzero(counts))


def resolve_class(token: str, class_names: list[str], label_map: LabelMap | None = None) -> int | None:
    """A class token (a name, any case, or an id) as a training id; None when it maps to nothing.

    An id is the dataset's own and goes through ``label_map`` when one is given (as mask values do).
    """
    text = token.strip()
    if text.isdigit():
        value = int(text)
        if label_map is not None:
            value = int(label_map.table[value]) if value <= 255 else IGNORE_INDEX
        return value if 0 <= value < len(class_names) else None
    lowered = [n.lower() for n in class_names]
    return lowered.index(text.lower()) if text.lower() in lowered else None


def resolve_tokens(tokens: dict[str, list[str]], class_names: list[str], label_map: LabelMap | None = None
                   ) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """stem -> training ids, and the tokens that map to no class (each once, in order of appearance)."""
    ids: dict[str, tuple[int, ...]] = {}
    unknown: list[str] = []
    for stem, words in tokens.items():
        found = []
        for word in words:
            c = resolve_class(word, class_names, label_map)
            if c is None:
                if word not in unknown:
                    unknown.append(word)
            else:
                found.append(c)
        ids[stem] = tuple(sorted(set(found)))
    return ids, unknown


def listed_items(pairs: PairList, class_names: list[str], label_map: LabelMap | None = None
                 ) -> tuple[list[WeakItem], list[str]]:
    """The image-labelled images of a split (``image_labels.txt``), and the class tokens that map to nothing."""
    ids, unknown = resolve_tokens({p.stem: pairs.image_labels[p.stem] for p in pairs.weak}, class_names, label_map)
    return [WeakItem(p, ids[p.stem]) for p in pairs.weak], unknown


def image_folder(root: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(image, folder name) of every image in an ImageFolder layout ``root/<class>/<image>``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--weak-data {root} is not a folder; give a folder with one sub-folder of images per class "
                        "(ImageFolder layout)")
    found = [(p, d.name) for d in sorted(root.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    if not found:
        raise DataError(f"--weak-data {root} holds no images in class folders; arrange it as {root}/<class>/<image>, "
                        "one folder per class")
    return found


def folder_items(root: str | os.PathLike[str], class_names: list[str], label_map: LabelMap | None = None
                 ) -> tuple[list[WeakItem], list[str]]:
    """The images of an ImageFolder set as image-labelled items, and the folder names that map to no class.

    Images whose folder maps to nothing are left out (and their folder named), never given a made-up label.
    """
    items, unknown = [], []
    for path, folder in image_folder(root):
        c = resolve_class(folder, class_names, label_map)
        if c is None:
            if folder not in unknown:
                unknown.append(folder)
            continue
        items.append(WeakItem(path, (c,)))
    return items, unknown


def unknown_classes_error(unknown: list[str], where: str, class_names: list[str]) -> DataError:
    shown = ", ".join(repr(u) for u in unknown[:6]) + (" ..." if len(unknown) > 6 else "")
    names = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    return DataError(f"{where} names classes that map to no training class: {shown}; use the class names "
                     f"({names}) or ids, or map them with --label-map")


def select_pixel_subset(n: int, fraction: float, seed: int) -> list[int]:
    """The indices (sorted) of the ``round(fraction * n)`` images (at least 1) that keep their masks.

    A function of ``(n, fraction, seed)`` only, so every variant of a study trained with one seed keeps the
    same images; and one seed's smaller fractions keep a subset of its larger ones (one permutation's prefixes).
    """
    SETTINGS["pixel_fraction"].check(fraction)
    keep = max(1, round(fraction * n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 7919 + 17)).tolist()
    return sorted(order[:keep])


def hide_masks(pairs: PairList, fraction: float, seed: int, num_classes: int, label_map: LabelMap | None = None,
               ) -> tuple[PairList, list[WeakItem]]:
    """``pairs`` with only the :func:`select_pixel_subset` images keeping masks; the others as image-labelled
    items whose classes are read from their (now hidden) masks."""
    if fraction >= 1:
        return pairs, []
    kept = set(select_pixel_subset(len(pairs.pairs), fraction, seed))
    hidden = []
    for i, (image, mask_path) in enumerate(pairs.pairs):
        if i in kept:
            continue
        mask = read_mask(mask_path)
        if label_map is not None:
            mask = label_map(mask)
        hidden.append(WeakItem(image, mask_classes(mask, num_classes)))
    return replace(pairs, pairs=[p for i, p in enumerate(pairs.pairs) if i in kept]), hidden


class ImageLabelDataset(Dataset):
    """Image-labelled samples: the image transformed as a pixel-labelled one is, with an all-void mask.

    Augmentation of item ``i`` in epoch ``e`` is drawn from ``default_rng([seed, e, i, 1])`` (the pixel
    dataset's streams have no fourth number), so it is reproducible wherever the run resumes.
    """

    def __init__(self, items: list[WeakItem], num_classes: int, transform: Compose | None = None, seed: int = 0):
        self.items, self.num_classes = list(items), int(num_classes)
        self.transform = transform or eval_transform()
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int, epoch: int = 0) -> dict[str, Any]:
        item = self.items[index]
        image = read_image(item.image)
        void = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        rng = np.random.default_rng([self.seed, int(epoch), int(index), 1])
        try:
            img, mask = self.transform(*to_tensors(image, void), rng)
        except InputError as exc:
            raise DataError(f"image {item.image}: {exc}") from None
        return {"image": img, "mask": mask, "index": int(index), "image_labels": labels_vector(item.classes,
                                                                                                self.num_classes),
                "has_mask": False}

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        return self.sample(i, epoch)


class MixedDataset(Dataset):
    """Pixel-labelled samples at indices ``0 .. P-1`` and image-labelled ones at ``P .. P+W-1`` (index as given,
    so a sample's ``index`` tells its place in the run); ``(epoch, index)`` indices as the pixel dataset takes."""

    def __init__(self, pixel: Dataset, weak: ImageLabelDataset):
        self.pixel, self.weak = pixel, weak

    def __len__(self) -> int:
        return len(self.pixel) + len(self.weak)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch, i = index if isinstance(index, tuple) else (None, index)
        p = len(self.pixel)
        if i < p:
            return self.pixel[(epoch, i) if epoch is not None else i]
        sample = self.weak.sample(i - p, epoch or 0)
        sample["index"] = int(i)
        return sample


def count_kinds(pairs: PairList, class_names: list[str], label_map: LabelMap | None = None,
                weak_data: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """For ``segzoo data check``: images with masks, image-labelled ones (listed, from ``weak_data``), and every
    class name that maps to nothing, with where it was written."""
    listed, unknown_listed = listed_items(pairs, class_names, label_map)
    counts: dict[str, Any] = {"pixel": len(pairs.pairs), "listed": len(listed), "folder": 0, "unknown": {}}
    if unknown_listed:
        counts["unknown"][str(pairs.labels_file)] = unknown_listed
    if weak_data is not None:
        items, unknown = folder_items(weak_data, class_names, label_map)
        counts["folder"] = len(items)
        if unknown:
            counts["unknown"][str(weak_data)] = unknown
    return counts
