"""Per-channel mean and std of a dataset's images (``segzoo data stats``), for ``train --normalization stats``.

Values are measured after the bit-depth scaling every image gets (:func:`~segzoo.data.io.image_scale`), so they
are in [0, 1] units and fit any band count, 16-bit and float images included. Every image must be of one kind
(channels and bit depth); a mix is an error naming one file of each kind.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError
from ..core.files import atomic_write_text, read_json_file
from .formats import find_pairs
from .io import describe_kind, image_kind, image_scale, read_image

STATS_FILE = "segzoo_stats.json"
FORMAT = "segzoo-stats"


def image_kinds(paths: list[Path]) -> tuple[int, str]:
    """The one (channels, type) of all ``paths`` (headers and pixels read); a :class:`DataError` names a mix."""
    first: tuple[tuple[int, str], Path] | None = None
    for path in paths:
        kind = image_kind(read_image(path))
        if first is None:
            first = (kind, path)
        elif kind != first[0]:
            raise DataError(f"the dataset's images disagree: {first[1]} is {describe_kind(first[0])}, {path} is "
                            f"{describe_kind(kind)}; convert them to one kind")
    if first is None:
        raise DataError("no images to measure")
    return first[0]


def dataset_stats(root: str | os.PathLike[str], split: str = "train") -> dict[str, Any]:
    """Mean and std per channel over every pixel of a split's images, with the kind of image they were read from."""
    pairs = find_pairs(root, split)
    images = [image for image, _ in pairs.pairs]
    if not images:
        raise DataError(f"{root} split '{split}' has no images to measure")
    first: tuple[tuple[int, str], Path] | None = None
    total = squares = None
    count = 0
    for path in images:
        image = read_image(path)
        kind = image_kind(image)
        if first is None:
            first = (kind, Path(path))
            total, squares = np.zeros(kind[0]), np.zeros(kind[0])
        elif kind != first[0]:
            raise DataError(f"the dataset's images disagree: {first[1]} is {describe_kind(first[0])}, {path} is "
                            f"{describe_kind(kind)}; convert them to one kind before measuring or training")
        x = image.reshape(-1, kind[0]).astype(np.float64) / image_scale(image.dtype)
        total += x.sum(0)
        squares += (x * x).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return {"format": FORMAT, "split": split, "images": len(images), "pixels": count, "channels": first[0][0],
            "dtype": first[0][1], "mean": [round(float(v), 6) for v in mean],
            "std": [round(max(float(v), 1e-6), 6) for v in std]}


def write_stats(stats: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save stats as JSON (all-or-nothing); a file there that is not segzoo's stats is never replaced."""
    path = Path(path)
    if path.exists():
        try:
            ours = read_json_file(path, "stats file", DataError).get("format") == FORMAT
        except DataError:
            ours = False
        if not ours:
            raise DataError(f"{path} exists and is not a segzoo stats file; choose another --out")
    return atomic_write_text(json.dumps(stats, indent=2) + "\n", path)


def read_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A stats file, checked: segzoo's format, and ``mean``/``std`` of one finite number per channel with every
    std > 0 (a std of 0 or NaN would turn every image into NaN)."""
    stats = read_json_file(path, "dataset stats", DataError)
    if stats.get("format") != FORMAT:
        raise DataError(f"{path} is not a segzoo stats file; run: segzoo data stats DATA_DIR")
    mean, std = stats.get("mean"), stats.get("std")
    ok = (isinstance(mean, list) and isinstance(std, list) and 1 <= len(mean) == len(std) <= 4096
          and all(type(v) in (int, float) and math.isfinite(v) for v in (*mean, *std)) and min(std) > 0)
    if not ok:
        raise DataError(f"{path}: 'mean' and 'std' must be lists of finite numbers, one per channel, every std > 0 "
                        f"(got mean {str(mean)[:60]}, std {str(std)[:60]}); measure them again with: "
                        "segzoo data stats DATA_DIR")
    return stats


def stats_normalization(stats: dict[str, Any], channels: int | None = None) -> dict[str, Any]:
    """The model normalization (segzoo.core.model) that standardises images with these stats.

    ``channels``: what the model takes. Grey statistics (one channel) for a model of more channels are
    repeated, as the grey image is (:func:`segzoo.data.transforms.match_channels`): without that the image
    would stay grey and the model refuse it. Any other mismatch is a :class:`DataError` with the fix.
    """
    mean, std = list(stats["mean"]), list(stats["std"])
    if channels is not None and len(mean) != channels:
        if len(mean) != 1:
            raise DataError(f"the dataset's statistics have {len(mean)} channels but the model takes {channels}; "
                            f"build the model with --backbone-opt in_chans={len(mean)}, or convert the images")
        mean, std = mean * channels, std * channels
    return {"mean": mean, "std": std, "scale": 1.0, "bgr": False}


def normalization_for(spec: str, data: str | os.PathLike[str] | None, split: str = "train",
                      channels: int | None = None) -> dict[str, Any]:
    """``train --normalization``: ``stats`` (DATA/segzoo_stats.json, measured and written first if absent) or
    the path of a stats file, for a model of ``channels`` input channels."""
    if spec != "stats":
        return stats_normalization(read_stats(spec), channels)
    if data is None:
        raise DataError("--normalization stats needs --data DIR (the statistics are the dataset's)")
    path = Path(data) / STATS_FILE
    if not path.exists():
        write_stats(dataset_stats(data, split), path)
    return stats_normalization(read_stats(path), channels)
