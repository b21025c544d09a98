"""Finding (image, mask) pairs in the layouts people have, and the class names that go with them.

* VOC: ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``, ``ImageSets/Segmentation/<split>.txt``.
* Folder pairs: ``images/`` and ``masks/`` matched by file stem, either per split
  (``<split>/images``, ``<split>/masks``) or one pair of folders with ``<split>.txt`` (or
  ``splits/<split>.txt``) listing stems; split ``all`` takes every pair.
* A split given as a file: one stem per line, or ``image_path mask_path`` per line (relative to the
  dataset root), as many segmentation repositories ship them.

Class names come from ``class_names.txt`` (one per line, index = line number) in the root; without
one the dataset counts the classes in the masks (``SegmentationDataset``), unless told how many.

Image-level labels: an ``image_labels.txt`` (or ``.csv``) in the root lists ``stem class [class ...]`` per
line (class names or ids). An image of the split that has no mask but is listed there is image-labelled
(``PairList.weak``) instead of an error; images with a mask take their labels from the mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from ..core.files import read_text_file

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASS_FILES = ("class_names.txt", "labels.txt")
IMAGE_LABEL_FILES = ("image_labels.txt", "image_labels.csv")


@dataclass
class PairList:
    """What a split resolved to: the pairs, the class names, and the pairs dropped (with why)."""

    root: Path
    split: str
    layout: str
    pairs: list[tuple[Path, Path]]
    class_names: list[str] | None
    dropped: list[str] = field(default_factory=list)
    weak: list[Path] = field(default_factory=list)  # images of the split without a mask, listed with image labels
    image_labels: dict[str, list[str]] = field(default_factory=dict)  # stem -> its classes (names or ids), as read
    labels_file: Path | None = None


def find_pairs(root: str | os.PathLike[str], split: str = "train", skip_bad: bool = False) -> PairList:
    """Resolve ``split`` (a name or a list file) in ``root`` to existing (image, mask) pairs."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; pass --data DIR (or run 'segzoo data demo --out DIR')")
    names = read_class_names(root)
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        layout, listing = "voc", _voc(root, split)
    elif (root / "images").is_dir() or (root / split / "images").is_dir() or Path(split).is_file():
        layout, listing = "folders", _folders(root, split)
    else:
        raise DataError(
            f"{root} is neither a VOC folder (JPEGImages/ + SegmentationClass/) nor a folder pair "
            f"(images/ + masks/, or {split}/images + {split}/masks); arrange it as one of these")
    labels_file, image_labels = read_image_labels(root)
    pairs, dropped, weak = _check_pairs(listing, root, split, skip_bad, image_labels)
    if not pairs:
        raise DataError(f"split '{split}' of {root} has no usable (image, mask) pairs"
                        + (f" ({len(dropped)} skipped as bad)" if dropped else "")
                        + (f" ({len(weak)} image-labelled only; training needs some masks)" if weak else "")
                        + "; check the split file and the folder layout")
    return PairList(root, split, layout, pairs, names, dropped, weak, image_labels, labels_file)


def read_image_labels(root: Path) -> tuple[Path | None, dict[str, list[str]]]:
    """``image_labels.txt`` (whitespace-separated) or ``.csv`` (commas) in ``root``: stem -> its class tokens.

    A line is ``stem class [class ...]``; ``#`` starts a comment line; a stem with no class holds only
    background. Tokens stay as written (names or ids): the dataset resolves them against its classes.
    """
    for name in IMAGE_LABEL_FILES:
        path = root / name
        if not path.exists():
            continue
        labels: dict[str, list[str]] = {}
        text = read_text_file(path, "image labels file", DataError)
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.replace(",", " ").split() if path.suffix == ".csv" else line.split()
            stem = Path(fields[0]).stem
            if stem in labels:
                raise DataError(f"{path} line {number}: '{stem}' is listed twice; give each image one line "
                                "with all its classes")
            labels[stem] = fields[1:]
        return path, labels
    return None, {}


def read_class_names(root: Path) -> list[str] | None:
    for name in CLASS_FILES:
        path = root / name
        if path.exists():
            names = [line.strip() for line in read_text_file(path, "class names file", DataError).splitlines()
                     if line.strip()]
            if not names:
                raise DataError(f"{path} lists no classes; write one class name per line (index = line number)")
            return names
    return None


Listing = list[tuple[Path, Path | None, str]]  # image, mask (None: not found), the stem or line it came from


def _voc(root: Path, split: str) -> Listing:
    if _is_split_file(Path(split)):
        return _from_list_file(root, Path(split), root / "JPEGImages", root / "SegmentationClass")
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not _is_split_file(split_file):
        have = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt") if p.is_file())
        raise DataError(f"VOC split file {split_file} does not exist (splits here: {have or 'none'}); "
                        "name one of those as the split, or a file listing image stems")
    return _from_list_file(root, split_file, root / "JPEGImages", root / "SegmentationClass")


def _folders(root: Path, split: str) -> Listing:
    if _is_split_file(Path(split)):
        return _from_list_file(root, Path(split), root / "images", root / "masks")
    if (root / split / "images").is_dir():
        return _match_folder(root / split / "images", root / split / "masks")
    for split_file in (root / f"{split}.txt", root / "splits" / f"{split}.txt"):
        if _is_split_file(split_file):
            return _from_list_file(root, split_file, root / "images", root / "masks")
    if split == "all":
        return _match_folder(root / "images", root / "masks")
    raise DataError(f"no split '{split}' in {root}: expected {root / split}/images, {root}/{split}.txt or "
                    f"{root}/splits/{split}.txt listing stems; or use the split 'all', or a split FILE")


def _is_split_file(path: Path) -> bool:
    """Whether ``path`` is a split list to read; something else by that name (a folder, a pipe) is an error
    saying what it is, never "does not exist" nor a read that blocks."""
    if path.is_file():
        return True
    if path.exists() and path.suffix == ".txt":
        what = "a folder" if path.is_dir() else "not a regular file"
        raise DataError(f"split file {path} is {what}; a split is a text file listing one image stem per line")
    return False


def _match_folder(images: Path, masks: Path) -> Listing:
    if not images.is_dir():
        raise DataError(f"image folder {images} does not exist; put the images there")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return [(p, _mask_for(masks, p.stem), p.name) for p in files]


def _mask_for(masks: Path, stem: str) -> Path | None:
    path = masks / f"{stem}.png"
    return path if path.is_file() else None


def _image_for(images: Path, stem: str) -> Path:
    for ext in IMAGE_EXTS:
        for candidate in (images / f"{stem}{ext}", images / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return images / f"{stem}.jpg"  # does not exist: reported by _check_pairs


def _from_list_file(root: Path, split_file: Path, images: Path, masks: Path) -> Listing:
    lines = [ln.strip() for ln in read_text_file(split_file, "split file", DataError).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"split file {split_file} is empty; list one image stem (or 'image mask' pair) per line")
    out: Listing = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2:
            image, mask = root / parts[0].lstrip("/"), root / parts[1].lstrip("/")
            out.append((image, mask if mask.is_file() else None, line))
        else:
            out.append((_image_for(images, parts[0]), _mask_for(masks, parts[0]), parts[0]))
    return out


def _check_pairs(listing: Listing, root: Path, split: str, skip_bad: bool, image_labels: dict[str, list[str]]
                 ) -> tuple[list[tuple[Path, Path]], list[str], list[Path]]:
    pairs: list[tuple[Path, Path]] = []
    dropped: list[str] = []
    weak: list[Path] = []
    for image, mask, source in listing:
        problem: str | None = None
        if not image.is_file():
            problem = f"image {image} (listed as '{source}' in split '{split}') does not exist"
        elif mask is None and image.stem in image_labels:
            weak.append(image)
            continue
        elif mask is None:
            problem = (f"image {image} has no mask (expected a .png of the same stem in the mask folder, or "
                       "its line in image_labels.txt to train from its image-level labels)")
        if problem is None:
            assert mask is not None  # a missing mask is a problem above
            pairs.append((image, mask))
        elif skip_bad:
            dropped.append(problem)
        else:
            raise DataError(f"{problem}; add it, remove the entry from the split, or pass --skip-bad to skip it")
    return pairs, dropped, weak
