"""Reading images and label masks, writing VOC-palette masks: the one place files become arrays.

A mask holds one class index per pixel (0 .. num_classes-1) and 255 for void, as PASCAL VOC's
palette PNGs do; a palette ('P') or greyscale ('L') PNG is read as those indices, never as colours.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import tifffile
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


TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An H x W x C array in the file's own type, never converted: C is 1 (grey), 2 (grey + alpha), 3 (RGB),
    4 (RGBA) or any number of bands (TIFF); the type is uint8 or uint16 (float32 for a float TIFF).

    :func:`image_scale` says what a type's full scale is, so a 16-bit image is divided by 65535, not clipped to
    255 as an RGB conversion would. Palette images become RGB (RGBA with transparency). An unreadable file, or
    one whose values cannot be read exactly (a 16-bit colour PNG, which Pillow decodes only at 8 bits), is a
    :class:`DataError` naming it.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader forever
            raise DataError(f"image {path} is not a regular file (a folder, pipe or device); pass image files")
        if str(path).lower().endswith(TIFF_SUFFIXES):
            return _read_tiff(path)
        with Image.open(path) as im:
            return _from_pil(im, path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, EOFError...
        raise DataError(f"cannot read image {path} ({type(exc).__name__}: {str(exc)[:120]}); the file is missing, "
                        "corrupt or not an image: replace or remove it") from exc


def _from_pil(im: Image.Image, path: str | os.PathLike[str]) -> np.ndarray:
    if im.format == "PNG" and im.mode in ("RGB", "RGBA") and any(";16" in str(t.args) for t in im.tile):
        raise DataError(f"{path} is a 16-bit colour PNG, which Pillow reads only at 8 bits; save it as a 16-bit "
                        "TIFF (tifffile.imwrite) so no precision is lost, or as an 8-bit PNG")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    a = np.array(im)  # a writable copy: tensors are made from it
    if a.dtype == np.int32 or a.dtype.byteorder == ">":  # mode I (16-bit PNGs in older Pillows), I;16B
        if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
            raise DataError(f"{path} holds 32-bit integers outside 0..65535; segzoo reads 8- and 16-bit images: "
                            "rescale it to 16 bits")
        a = a.astype(np.uint16)
    return _as_hwc(a, path)


def _read_tiff(path: str | os.PathLike[str]) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            a, axes = series.asarray(), series.axes
    except Exception as exc:  # noqa: BLE001 - a damaged TIFF raises struct.error, KeyError, IndexError...
        raise DataError(f"cannot read TIFF {path} ({exc}); the file is corrupt or not a TIFF: replace or remove it"
                        ) from exc
    if a.ndim == 3 and axes[-1] not in "SC" and axes[0] in "SC":  # planar bands: C x H x W -> H x W x C
        a = np.moveaxis(a, 0, -1)
    if a.ndim not in (2, 3):
        raise DataError(f"TIFF {path} has {a.ndim} axes ({axes}); segzoo reads one H x W image with bands: "
                        "save each image of a stack as its own file")
    if a.dtype.kind == "f":
        return _as_hwc(finite_pixels(a.astype(np.float32), path), path)
    if a.dtype not in (np.uint8, np.uint16):
        raise DataError(f"TIFF {path} holds {a.dtype} pixels; segzoo reads uint8, uint16 and float TIFFs: convert it")
    return _as_hwc(a, path)


def finite_pixels(a: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """``a`` if every value is finite; NaN or Inf (a float TIFF's no-data patch) is a :class:`DataError` naming the
    file, the count and the first place: such a pixel would make every probability of its image NaN."""
    bad = ~np.isfinite(a)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(f"image {path} holds {int(bad.sum()):,} NaN or Inf values (the first at row {first[0]}, "
                        f"column {first[1]}); replace them with finite values (e.g. numpy.nan_to_num, or your "
                        "no-data value) and save it again")
    return a


def _as_hwc(a: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    a = a[..., None] if a.ndim == 2 else a
    if a.ndim != 3 or a.dtype not in (np.uint8, np.uint16, np.float32):
        raise DataError(f"image {path} has shape {a.shape} and type {a.dtype}; segzoo reads H x W x C images of "
                        "uint8, uint16 or float32 pixels: convert it")
    return a


def image_scale(dtype: np.dtype) -> float:
    """The value that means full intensity for an image of this type: 255, 65535, or 1.0 for float images."""
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)


def image_kind(image: np.ndarray) -> tuple[int, str]:
    """(channels, type) of an image from :func:`read_image`: what every image of one dataset must share."""
    return int(image.shape[-1]), str(image.dtype)


def describe_kind(kind: tuple[int, str]) -> str:
    bits = {"uint8": "8-bit", "uint16": "16-bit", "float32": "float"}.get(kind[1], kind[1])
    return f"{bits} with {kind[0]} channel{'s' if kind[0] != 1 else ''}"


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
                        "replace or remove it") from exc
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


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 picture of any image :func:`read_image` returns, for looking at (not for the model):
    scaled from its bit depth to 8 bits; grey repeated, alpha dropped, the first three of N bands shown."""
    image = image[..., None] if image.ndim == 2 else image
    c = image.shape[-1]
    rgb = image[..., [0, 0, 0]] if c < 3 else image[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    return np.clip(rgb.astype(np.float32) * (255.0 / image_scale(rgb.dtype)), 0, 255).round().astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, rows: int = 1024) -> np.ndarray:
    """The image, and beside it the image blended with the mask's colours (background left as is).

    Computed ``rows`` rows at a time, so a large image needs little more than the result's own memory.
    """
    image = display_rgb(image)
    h, w = mask.shape
    out = np.empty((h, 2 * w, 3), dtype=np.uint8)
    out[:, :w] = image
    palette = voc_palette().astype(np.float32)
    for top in range(0, h, rows):
        m = np.asarray(mask[top:top + rows], dtype=np.uint8)
        blend = image[top:top + rows].astype(np.float32)
        fg = (m != 0)[..., None]
        blend = np.where(fg, (1 - alpha) * blend + alpha * palette[m], blend)
        out[top:top + rows, w:] = blend.round().astype(np.uint8)
    return out


def overlay_image(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, rows: int = 512) -> Image.Image:
    """:func:`overlay` as a PIL image, filled ``rows`` at a time: a large image's overlay is never also an array."""
    h, w = mask.shape
    out = Image.new("RGB", (2 * w, h))
    for top in range(0, h, rows):
        out.paste(Image.fromarray(overlay(image[top:top + rows], mask[top:top + rows], alpha)), (0, top))
    return out
