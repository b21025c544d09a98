"""Label maps: a YAML file that turns a dataset's own label ids into training ids (``--label-map FILE.yaml|NAME``).

The file is a mapping ``dataset_id: training_id``; ids it does not list become 255 (void), as does
any id mapped to 255. An optional ``names:`` list gives the training classes' names (and so their
number); without it the classes are ``0 .. largest training id``. Cityscapes' 34 ids to its 19
training classes and ADE20K's 0-is-void shift ship with segzoo (``segzoo/data/label_maps/``) and are
used by name: ``--label-map cityscapes``, ``--label-map ade20k`` (:func:`shipped_label_maps` lists them)::

    names: [road, sidewalk]
    7: 0      # road
    8: 1      # sidewalk
    0: 255    # unlabeled (unlisted ids are void anyway)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core.errors import DataError
from ..core.files import read_text_file
from .io import IGNORE_INDEX

MAX_ID = 255  # masks are read as 8-bit class indices
SHIPPED = Path(__file__).with_name("label_maps")  # package data: the wheel carries these files


def shipped_label_maps() -> list[str]:
    """The names of the label maps that ship with segzoo (``cityscapes``, ``ade20k``), usable as ``--label-map``."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve_label_map(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped map's name (no ``/``, no ``.yaml``) is its file in the package; anything else is a path as given.

    A file of that name in the working folder wins over a shipped map, so a path never changes meaning.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.exists() or os.sep in text or "/" in text or path.suffix:
        return path
    shipped = SHIPPED / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise DataError(f"no label map {text!r}: name a YAML file, or one that ships with segzoo "
                    f"({', '.join(shipped_label_maps())})")


@dataclass(frozen=True)
class LabelMap:
    """A dataset-id -> training-id table; calling it on a mask remaps every pixel."""

    mapping: dict[int, int]
    num_classes: int
    names: tuple[str, ...] | None = None
    source: str = ""

    @property
    def table(self) -> np.ndarray:
        """A 256-entry lookup table: dataset id -> training id, 255 for every id not listed."""
        lut = np.full(MAX_ID + 1, IGNORE_INDEX, dtype=np.uint8)
        for src, dst in self.mapping.items():
            lut[src] = dst
        return lut

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(mask, dtype=np.uint8)]


def load_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read and check a label-map YAML file, or a shipped one by name (``cityscapes``); every mistake is a
    :class:`DataError` naming the key and the fix."""
    path = resolve_label_map(path)
    try:
        data = yaml.safe_load(read_text_file(path, "label map", DataError))  # regular files only: no FIFO hang
    except (yaml.YAMLError, TypeError, ValueError, RecursionError):  # TypeError: a list as a key
        raise DataError(f"label map {path} is not valid YAML; write one 'dataset_id: training_id' per line") from None
    if not isinstance(data, dict):
        raise DataError(f"label map {path} must be a mapping 'dataset_id: training_id' (plus an optional names: "
                        "list), e.g. '7: 0'")
    names = data.pop("names", None)
    if names is not None and (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)):
        raise DataError(f"label map {path}: names must be a non-empty list of class names, in training-id order")
    mapping: dict[int, int] = {}
    for src, dst in data.items():
        for what, value, top in (("dataset id", src, MAX_ID), ("training id", dst, IGNORE_INDEX)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise DataError(f"label map {path}: {what} {value!r} (in '{src}: {dst}') must be a whole number "
                                f"0-{top}" + (" (255 = void)" if what == "training id" else
                                              " (masks hold 8-bit ids)"))
        mapping[src] = dst
    used = sorted({d for d in mapping.values() if d != IGNORE_INDEX})
    if not used:
        raise DataError(f"label map {path} maps no id to a training class (all void); map at least one, e.g. '1: 0'")
    if names is None:
        num_classes = used[-1] + 1
    else:
        num_classes = len(names)
        if used[-1] >= num_classes:
            raise DataError(f"label map {path} maps to training id {used[-1]} but names lists {num_classes} "
                            f"classes (0-{num_classes - 1}); add the missing names or fix the id")
    return LabelMap(mapping, num_classes, tuple(names) if names else None, str(path))
