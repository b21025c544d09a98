"""The embedded demo dataset: a deterministic generator of a small VOC-layout folder, so nothing is downloaded.

Five object classes (disc, square, triangle, ring, cross) are drawn with a colour and a texture of
their own, jittered, on a noisy two-tone background with clutter (lines, specks) that is labelled
background; objects may overlap, and a band of 255 (void) runs along every object's outline as in
PASCAL VOC. Image ``i`` of a split depends only on ``(seed, split, i)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..core.errors import DataError
from ..core.files import atomic_write_text, read_text_file
from ..core.settings import SETTINGS
from .io import IGNORE_INDEX, write_mask

GENERATOR_VERSION = 1
MARKER = "segzoo-demo.json"
LABELS_FILE = "image_labels.txt"  # every image's classes by name (image-level labels), see segzoo.data.weak
CLASSES = ("background", "disc", "square", "triangle", "ring", "cross")
# class -> (base RGB colour, texture); textures are functions of pixel coordinates in [-1, 1]
LOOKS = {
    1: ((200, 60, 50), "hstripes"),
    2: ((60, 170, 70), "checker"),
    3: ((60, 90, 200), "flat"),
    4: ((210, 190, 50), "dstripes"),
    5: ((170, 70, 180), "dots"),
}
SPLIT_IDS = {"train": 0, "val": 1}


def _texture(kind: str, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(4.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "hstripes":
        return np.sin(2 * np.pi * yy / period + phase)
    if kind == "dstripes":
        return np.sin(2 * np.pi * (xx + yy) / (1.4 * period) + phase)
    if kind == "checker":
        return np.sign(np.sin(np.pi * xx / period + phase) * np.sin(np.pi * yy / period + phase))
    if kind == "dots":
        return np.where(np.sin(np.pi * xx / period) * np.sin(np.pi * yy / period) > 0.5, 1.0, -0.3)
    return np.zeros_like(xx)


def _shape_mask(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of one object of class ``cls`` at a random place, size and angle."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    r = rng.uniform(0.12, 0.28) * size
    cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size
    angle = rng.uniform(0, 2 * np.pi)

    def polygon(radius: float, n: int, start: float) -> list[tuple[float, float]]:
        return [(cx + radius * np.cos(start + 2 * np.pi * k / n), cy + radius * np.sin(start + 2 * np.pi * k / n))
                for k in range(n)]

    if cls == 1:  # disc
        rx, ry = r, r * rng.uniform(0.8, 1.2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    elif cls == 2:  # square
        draw.polygon(polygon(r * 1.2, 4, angle), fill=1)
    elif cls == 3:  # triangle
        draw.polygon(polygon(r * 1.3, 3, angle), fill=1)
    elif cls == 4:  # ring
        draw.ellipse([cx - r * 1.2, cy - r * 1.2, cx + r * 1.2, cy + r * 1.2], fill=1)
        inner = r * rng.uniform(0.45, 0.65)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:  # cross
        arm, w = r * 1.2, r * 0.4
        for dx, dy in ((arm, w), (w, arm)):
            c, s = np.cos(angle), np.sin(angle)
            corners = [(-dx, -dy), (dx, -dy), (dx, dy), (-dx, dy)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=1)
    return np.asarray(canvas, dtype=bool)


def _background(size: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, b = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    grey = rng.uniform(0.6, 1.0)  # muted: mix towards the colour's mean
    a, b = grey * a.mean() + (1 - grey) * a, grey * b.mean() + (1 - grey) * b
    t = (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy) / size
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = a * (1 - t[..., None]) + b * t[..., None]
    clutter = Image.new("RGB", (size, size), 0)
    cmask = Image.new("L", (size, size), 0)
    d_img, d_mask = ImageDraw.Draw(clutter), ImageDraw.Draw(cmask)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(v) for v in rng.uniform(40, 220, 3))
        x0, y0 = rng.uniform(0, size, 2)
        if rng.random() < 0.6:
            x1, y1 = x0 + rng.uniform(-0.4, 0.4) * size, y0 + rng.uniform(-0.4, 0.4) * size
            width = int(rng.integers(1, 3))
            d_img.line([x0, y0, x1, y1], fill=colour, width=width)
            d_mask.line([x0, y0, x1, y1], fill=255, width=width)
        else:
            rr = rng.uniform(1, 0.05 * size + 1)
            d_img.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=colour)
            d_mask.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=255)
    m = np.asarray(cmask, dtype=bool)[..., None]
    return np.where(m, np.asarray(clutter, dtype=np.float64), img)


def _void_band(label: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a change of label (4-neighbourhood), like VOC's outline bands."""
    edge = np.zeros(label.shape, dtype=bool)
    dv, dh = label[1:, :] != label[:-1, :], label[:, 1:] != label[:, :-1]
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    band = edge.copy()
    for _ in range(width - 1):
        grown = band.copy()
        grown[1:, :] |= band[:-1, :]
        grown[:-1, :] |= band[1:, :]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    return band


def make_sample(seed: int, split: str, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One (H x W x 3 uint8 image, H x W uint8 mask) pair, a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLIT_IDS.get(split, 2), index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = _background(size, rng, yy, xx)
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        shape = _shape_mask(cls, size, rng)
        if shape.sum() < 4:
            continue
        base, kind = LOOKS[cls]
        colour = np.clip(np.array(base) + rng.normal(0, 18, 3), 0, 255)
        tex = _texture(kind, yy, xx, rng)[..., None] * rng.uniform(25, 45)
        img = np.where(shape[..., None], colour + tex, img)
        label[shape] = cls
    img = img + rng.normal(0, 10, img.shape)
    label[_void_band(label, max(1, round(size / 64)))] = IGNORE_INDEX
    return np.clip(img, 0, 255).round().astype(np.uint8), label


def _labels_line(stem: str, mask: np.ndarray) -> str:
    """``stem class ...``: the classes ``mask`` shows, by name (background included)."""
    return " ".join([stem, *(CLASSES[c] for c in np.unique(mask).tolist() if c != IGNORE_INDEX)])


def _write_image_labels(out: Path, train: int, val: int, size: int, seed: int) -> Path:
    """``image_labels.txt`` for a demo written before image labels were: every image's line, regenerated."""
    lines = [_labels_line(f"{split}_{i:05d}", make_sample(seed, split, i, size)[1])
             for split, count in (("train", train), ("val", val)) for i in range(count)]
    return atomic_write_text("\n".join(lines) + "\n", out / LABELS_FILE)


def write_demo_dataset(out: str | os.PathLike[str], train: int = 160, val: int = 40, size: int = 64,
                       seed: int = 0) -> Path:
    """Write the demo as a VOC folder; an existing demo with the same settings is reused as is.

    Nothing segzoo did not write is ever deleted or replaced: a folder holding other files, or a demo
    made with other settings, is a :class:`DataError` saying so. A demo whose writing was interrupted
    (its marker says incomplete, with the same settings) is finished.
    """
    out = Path(out)
    params = {"generator": GENERATOR_VERSION, "train": train, "val": val, "size": size, "seed": seed}
    for key in ("train", "val", "size", "seed"):  # their ranges: segzoo.core.settings
        SETTINGS[key].check(params[key], error=DataError)
    marker = out / MARKER
    if marker.exists():
        try:
            found = json.loads(read_text_file(marker, "demo marker", DataError))
        except ValueError:
            found = None
        if found == params:
            if not (out / LABELS_FILE).exists():  # a demo written before image labels were: add them
                _write_image_labels(out, train, val, size, seed)
            return out
        if not (isinstance(found, dict) and found.get("complete") is False
                and {k: v for k, v in found.items() if k != "complete"} == params):
            made = (", ".join(f"{k} {found.get(k)}" for k in ("train", "val", "size", "seed"))
                    if isinstance(found, dict) else "unknown settings")
            raise DataError(f"{out} holds a demo dataset made with other settings ({made}); segzoo never deletes "
                            "a dataset: write this one to another folder, or delete that one yourself")
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not a segzoo demo dataset; choose an empty or new folder for it")
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**params, "complete": False}, indent=1) + "\n", marker)  # ours from here on
    labels = []
    for split, count in (("train", train), ("val", val)):
        stems = [f"{split}_{i:05d}" for i in range(count)]
        for i, stem in enumerate(stems):
            image, mask = make_sample(seed, split, i, size)
            Image.fromarray(image).save(out / "JPEGImages" / f"{stem}.jpg", quality=92)
            write_mask(mask, out / "SegmentationClass" / f"{stem}.png")
            labels.append(_labels_line(stem, mask))
        atomic_write_text("\n".join(stems) + "\n", out / "ImageSets" / "Segmentation" / f"{split}.txt")
    atomic_write_text("\n".join(labels) + "\n", out / LABELS_FILE)  # image-level labels (segzoo.data.weak)
    atomic_write_text("\n".join(CLASSES) + "\n", out / "class_names.txt")
    atomic_write_text(json.dumps(params, indent=1) + "\n", marker)  # last: its settings say "complete"
    return out
