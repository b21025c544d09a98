"""``class_weights="auto"``: median-frequency balancing (Eigen & Fergus, 2015) from the training split's pixels.

The weight of class c is ``median(freq) / freq(c)``, where ``freq(c)`` is c's pixels over the labelled
pixels of the images c appears in: rare classes weigh more, a class that fills the images it is in
weighs less. A class absent from the split gets 0 (it is never a target, so its weight cannot matter).
Counting reads every mask once, so the result is cached beside the run (``class_weights.json``) and
read back by a resumed run, as long as it was counted from the same data, split and label map.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError, SegzooError
from ..core.files import atomic_write_text, read_json_file
from ..data import IGNORE_INDEX, SegmentationDataset

CACHE = "class_weights.json"
METHOD = "median-frequency"


def pixel_counts(dataset: SegmentationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per class: its labelled pixels, and the labelled pixels of the images it appears in (void left out).

    Masks are read as training sees them (label map applied, checked); with ``skip_bad`` a bad pair is left out.
    """
    n = dataset.num_classes
    pixels, seen_in = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for i in range(len(dataset)):
        try:
            _, mask = dataset.load(i)
        except DataError:
            if dataset.skip_bad:
                continue
            raise
        counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=n)[:n].astype(np.int64)
        pixels += counts
        seen_in[counts > 0] += int(counts.sum())
    return pixels, seen_in


def median_frequency(pixels: np.ndarray, seen_in: np.ndarray) -> list[float]:
    """``median(freq) / freq(c)`` over the classes present; 0 for a class that never appears."""
    present = pixels > 0
    if not present.any():
        raise DataError("class_weights='auto': the training split has no labelled pixel (every mask is void); "
                        "check the masks, or give weights by hand")
    freq = np.zeros(len(pixels), dtype=np.float64)
    freq[present] = pixels[present] / seen_in[present]
    median = float(np.median(freq[present]))
    return [float(median / f) if f > 0 else 0.0 for f in freq]


def auto_class_weights(dataset: SegmentationDataset, out_dir: Path, source: dict[str, Any], write: bool = True,
                       log: Callable[[str], None] = print) -> list[float]:
    """The weights for ``dataset``: read from ``out_dir/class_weights.json`` when it was counted from ``source``
    (data, split, label map, classes), else counted now and (``write``: rank 0) cached there. Logged either way."""
    path = Path(out_dir) / CACHE
    key = {"method": METHOD, **source, "num_classes": dataset.num_classes, "images": len(dataset)}
    cached = _read(path)
    if cached is not None and cached.get("key") == key and len(cached.get("weights", ())) == dataset.num_classes:
        weights, where = [float(w) for w in cached["weights"]], f"read from {path}"
    else:
        pixels, seen_in = pixel_counts(dataset)
        weights = median_frequency(pixels, seen_in)
        where = f"counted over {len(dataset)} training images"
        if write:
            atomic_write_text(json.dumps({"key": key, "class_names": dataset.class_names, "pixels": pixels.tolist(),
                                          "pixels_of_images_with_class": seen_in.tolist(), "weights": weights},
                                         indent=1) + "\n", path)
            where += f", cached in {path}"
    shown = ", ".join(f"{name} {w:.3g}" for name, w in zip(dataset.class_names, weights))
    log(f"class weights (median frequency, {where}): {shown}")
    return weights


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json_file(path, "class-weights cache")
    except SegzooError:
        return None
    return data if isinstance(data, dict) else None
