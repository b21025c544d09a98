"""Predicting masks for image files: labels, per-class probabilities, and the PNGs people look at.

The model is a torch ``SegmentationModel`` or an exported ``.onnx`` file (:class:`~.runtime.OnnxModel`); images
of any bit depth and channel count are scaled by their type (:func:`~segzoo.data.io.read_image`). Large images
go through :mod:`.tile` (``tile=``) in bounded memory, and :mod:`.tta` averages flips and scales. Files are read
by a DataLoader's workers while the model runs; every output is written to a temporary file and renamed, never
over an input, and (without ``force``) never over a file that exists.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..core.errors import DataError, InputError
from ..core.lock import RunLock
from ..data.io import TIFF_SUFFIXES, overlay_image, read_image, voc_palette
from ..data.loader import worker_init
from ..data.transforms import image_tensor, normalize
from .runtime import describe, runner
from .tile import check_tile, has_window, predict_tiled, predict_whole
from .tta import TTA, tta_average, tta_probs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", *TIFF_SUFFIXES)
def predict_image(model: Any, image: np.ndarray, device: torch.device | str = "cpu", tile: int | None = None,
                  overlap: float = 0.25, tta: TTA = TTA(), dtype: str = "fp32", batch: int = 1) -> torch.Tensor:
    """Softmax probabilities (classes x H x W, float32 on the CPU) for one H x W x C image of any bit depth.

    ``tile`` blends overlapping tiles (:mod:`.tile`); it still builds the whole probability map, so for very
    large images use :func:`predict_labels`, which never holds it.
    """
    h, w = image.shape[:2]
    info = describe(model)
    out = torch.empty(info["num_classes"], h, w)

    def keep(top: int, p: torch.Tensor) -> None:
        out[:, top:top + p.shape[1]] = p

    _predict(model, image, keep, device, tile, overlap, tta, dtype, batch, info)
    return out


def predict_labels(model: Any, image: np.ndarray, device: torch.device | str = "cpu", tile: int | None = None,
                   overlap: float = 0.25, tta: TTA = TTA(), dtype: str = "fp32", batch: int = 1,
                   probs_into: np.ndarray | None = None) -> np.ndarray:
    """The H x W uint8 class map of one image; with ``probs_into`` (a classes x H x W array, e.g. a memory-mapped
    .npy) the probabilities are written there band by band. With ``tile`` memory stays bounded by a band of tiles."""
    h, w = image.shape[:2]
    labels = np.empty((h, w), dtype=np.uint8)

    def keep(top: int, p: torch.Tensor) -> None:
        labels[top:top + p.shape[1]] = p.argmax(0).numpy().astype(np.uint8)
        if probs_into is not None:
            probs_into[:, top:top + p.shape[1]] = p.numpy()

    _predict(model, image, keep, device, tile, overlap, tta, dtype, batch, describe(model))
    return labels


def _predict(model: Any, image: np.ndarray, give: Callable[[int, torch.Tensor], None], device: Any,
             tile: int | None, overlap: float, tta: TTA, dtype: str, batch: int, info: dict[str, Any]) -> None:
    run = runner(model, device, dtype)
    norm = info["normalization"]

    def emit(top: int, p: torch.Tensor) -> None:  # NaN probabilities argmax to class 0: a wrong mask, exit 0
        if not bool(torch.isfinite(p).all()):
            raise InputError("the model gives NaN or Inf probabilities for this image: its weights hold NaN or Inf "
                             "(a diverged run?) or its normalization is broken; nothing was written for it")
        give(top, p)

    def probs_of(x: torch.Tensor) -> torch.Tensor:
        return tta_probs(run, x, tta, info["min_size"])

    def load(top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        return normalize(image_tensor(image[top:bottom, left:right]), norm)[None]

    h, w = image.shape[:2]
    if has_window(model):  # a SegmentationModel, or an OnnxModel whose file records the window
        # valid convolutions: the scores cover a centred window of the input, so the whole image goes through
        # overlap-tile with mirrored borders (one tile covering it without --tile) and comes back full size; each
        # TTA view too, before the views are averaged (a rescaled input's window is another part of the image)
        def whole(x: torch.Tensor) -> torch.Tensor:
            return predict_whole(lambda t: tta_probs(run, t, min_size=info["min_size"]), x, model, tile,
                                 info["num_classes"], info["align"])

        emit(0, tta_average(whole, load(0, h, 0, w), tta)[0])
        return
    if tile is None:
        emit(0, probs_of(load(0, h, 0, w))[0])
        return
    check_tile(tile, overlap, info["align"], info["min_size"])
    predict_tiled(probs_of, load, (h, w), info["num_classes"], tile, overlap, emit, info["align"], batch)


# -- files in, files out -------------------------------------------------------------------------------------------

def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """Each image file with the relative path its outputs mirror: a folder's images (recursively) relative to the
    folder, a glob's matches relative to the glob's fixed leading folder, a file by its name. Two inputs that
    would share outputs are an error naming both."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        text = str(item)
        if glob.has_magic(text):
            base = Path(*_until_magic(Path(text).parts))
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"no file matches {text}; check the pattern (quote it so the shell does not expand it)")
            found += [(p, p.relative_to(base) if p.is_relative_to(base) else Path(p.name)) for p in matches]
        elif Path(text).is_dir():
            files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{text} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += [(p, p.relative_to(text)) for p in files]
        elif Path(text).is_file():
            found.append((Path(text), Path(Path(text).name)))
        else:
            raise DataError(f"{text} does not exist; pass image files, folders or quoted globs")
    seen: dict[Path, Path] = {}
    for path, rel in found:
        key = rel.with_suffix("")
        if key in seen and seen[key].resolve() != path.resolve():
            raise DataError(f"{seen[key]} and {path} would both write {key}.png; predict them into different --out "
                            "folders, or pass their common parent folder so their subfolders keep them apart")
        seen[key] = path
    unique = {p.resolve(): (p, r) for p, r in found}
    return list(unique.values())


def _until_magic(parts: tuple[str, ...]) -> list[str]:
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return fixed or ["."]


class _Images(Dataset):
    """Reads one image per item in a loader worker; a failure travels back as the error, not a crash."""

    def __init__(self, files: list[tuple[Path, Path]]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        try:
            return i, read_image(self.files[i][0])
        except DataError as exc:
            return i, exc


def predict_files(model: Any, images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                  probs: bool = False, device: torch.device | str = "cpu", tile: int | None = None,
                  overlap: float = 0.25, tta: TTA = TTA(), dtype: str = "fp32", workers: int = 0,
                  batch: int = 1, force: bool = False, progress: bool = False, overlays: bool = True) -> list[Path]:
    """For each image (files, folders, globs): ``<rel>.png`` (VOC-palette mask), ``<rel>_overlay.png`` (image |
    blend) and with ``probs`` ``<rel>_probs.npy`` (classes x H x W softmax, float32), where ``<rel>`` mirrors the
    input's path relative to its folder or glob. Returns the files written.

    Nothing is written over an input; an existing output is refused unless ``force``. Images are read by
    ``workers`` loader processes while the model runs; ``progress`` shows a bar with images/s on stderr.
    """
    out = Path(out)
    files = expand_inputs(images)
    plan = [(src, _outputs(out, rel, probs, overlays)) for src, rel in files]
    with RunLock(out):  # the lock train takes: a second predict into this --out stops at once, naming this one
        return _predict_plan(model, plan, probs, device, tile, overlap, tta, dtype, workers, batch, force, progress,
                             overlays)


def _predict_plan(model: Any, plan: list[tuple[Path, list[Path]]], probs: bool, device: Any, tile: int | None,
                  overlap: float, tta: TTA, dtype: str, workers: int, batch: int, force: bool, progress: bool,
                  overlays: bool) -> list[Path]:
    files = [(src, Path()) for src, _ in plan]
    inputs = {src.resolve() for src, _ in plan}
    claimed: dict[Path, Path] = {}
    for src, targets in plan:
        for t in targets:
            other = claimed.setdefault(t.resolve(), src)
            if other != src:  # a.png's overlay is a_overlay.png's mask
                raise DataError(f"{other} and {src} would both write {t}; predict them into different --out folders "
                                "or rename one")
            if t.resolve() in inputs:
                raise DataError(f"predicting {src} would overwrite the input {t}; choose an --out folder apart from "
                                "the images")
            if t.exists() and not force:
                raise DataError(f"{t} exists; choose an empty --out folder or pass --force to replace earlier outputs")
    loader = DataLoader(_Images(files), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
                        worker_init_fn=worker_init() if workers else None)
    written: list[Path] = []
    start, pixels = time.perf_counter(), 0
    bar = _bar(len(files), progress)
    for done, (i, image) in enumerate(loader, 1):
        if isinstance(image, Exception):
            raise image
        src, targets = plan[i]
        mask_path = targets[0]
        try:
            if probs:
                h, w = image.shape[:2]
                with _atomic(targets[-1]) as tmp:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                    shape=(describe(model)["num_classes"], h, w))
                    labels = predict_labels(model, image, device, tile, overlap, tta, dtype, batch, probs_into=arr)
                    arr.flush()
                    del arr
            else:
                labels = predict_labels(model, image, device, tile, overlap, tta, dtype, batch)
        except InputError as exc:
            raise InputError(f"{src}: {exc}") from None
        with _atomic(mask_path) as tmp:
            _save_png(Image.fromarray(labels, mode="P"), tmp, palette=True)
        written.append(mask_path)
        if overlays:
            with _atomic(targets[1]) as tmp:
                _save_png(overlay_image(image, labels), tmp)
            written.append(targets[1])
        if probs:
            written.append(targets[-1])
        pixels += labels.size
        if bar is not None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:.2f} images/s")
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if progress:
        print(f"{len(files)} image(s), {pixels / 1e6:.1f} Mpixels in {seconds:.1f} s: "
              f"{len(files) / max(seconds, 1e-9):.2f} images/s", file=sys.stderr)
    return written


def _as_is(item: Any) -> Any:
    """The loader's collate: the (index, array) pair as read (the default would turn arrays into tensors)."""
    return item


def _outputs(out: Path, rel: Path, probs: bool, overlays: bool) -> list[Path]:
    stem = out / rel.parent / rel.stem
    paths = [stem.with_name(stem.name + ".png")]
    if overlays:
        paths.append(stem.with_name(stem.name + "_overlay.png"))
    if probs:
        paths.append(stem.with_name(stem.name + "_probs.npy"))
    return paths


def _bar(total: int, show: bool) -> Any:
    if not show:
        return None
    return tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)


def _save_png(im: Image.Image, path: str, palette: bool = False) -> None:
    if palette:
        im.putpalette(voc_palette().reshape(-1).tolist())
    im.save(path, format="PNG")


def default_mode() -> int:
    """The permissions a newly created file gets here (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[str]:
    """A temporary name beside ``path`` to write to, renamed onto ``path`` only when the write finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_mode())  # mkstemp makes owner-only files; an output gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
