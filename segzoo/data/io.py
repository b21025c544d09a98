"""Reading images and label masks, writing VOC-palette masks: the one place files become arrays.

A mask holds one class index per pixel (0 .. num_classes-1) and 255 for void, as PASCAL VOC's
palette PNGs do; a palette ('P') or greyscale ('L') PNG is read as those indices, never as colours.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DataError
from ..core.model import IGNORE_INDEX

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette() -> np.ndarray:
    """PASCAL VOC's 256 x 3 colour map (the bit-interleaving one of the devkit's ``labelcolormap``)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    palette[IGNORE_INDEX] = (224, 224, 192)  # VOC's void colour
    return palette


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An H x W x 3 uint8 RGB array; an unreadable file is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); the file is missing, corrupt or not an image: "
                        "replace or remove it (or pass --skip-bad to skip it)") from exc


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """An H x W uint8 array of class indices from a palette or greyscale PNG."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(
                    f"mask {path} is a {im.mode} colour image; segzoo needs class indices: save it as a palette "
                    "('P') or greyscale ('L') PNG whose pixel value is the class index (255 = void)")
            mask = np.array(im)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read mask {path} ({exc}); the file is missing, corrupt or not a PNG: "
                        "replace or remove it (or pass --skip-bad to skip it)") from exc
    if mask.dtype != np.uint8:
        if mask.max(initial=0) > 255:
            raise DataError(f"mask {path} has values above 255; class indices must fit 0..254 with 255 for void")
        mask = mask.astype(np.uint8)
    return mask


def write_mask(mask: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save class indices as a VOC-palette PNG (pixel value = class, colours for viewing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(voc_palette().reshape(-1).tolist())
    im.save(path)
    return path


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class indices → H x W x 3 RGB colours of the VOC palette."""
    return voc_palette()[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image, and beside it the image blended with the mask's colours (background left as is)."""
    colours = colorize(mask).astype(np.float32)
    blend = image.astype(np.float32)
    fg = (mask != 0)[..., None]
    blend = np.where(fg, (1 - alpha) * blend + alpha * colours, blend)
    return np.concatenate([image, blend.round().astype(np.uint8)], axis=1)
