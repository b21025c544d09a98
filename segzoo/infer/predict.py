"""Predicting masks for image files: labels, per-class probabilities, and the PNGs people look at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.io import overlay, read_image, write_mask
from ..data.transforms import normalize


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Softmax probabilities (C x H x W, float32 on the CPU) for one H x W x 3 uint8 RGB image.

    An image smaller than the backbone takes is padded (bottom/right, with the mean colour) and the
    padding cropped from the result.
    """
    model.eval()
    x = normalize(torch.from_numpy(image).permute(2, 0, 1).float().div(255.0), model.normalization)[None]
    h, w = image.shape[:2]
    low = getattr(getattr(model, "backbone", None), "min_input_size", 1)
    x = F.pad(x, (0, max(low - w, 0), 0, max(low - h, 0)))
    scores = model(x.to(device))[..., :h, :w]
    return scores.float().softmax(1)[0].cpu()


def predict_files(model: torch.nn.Module, images: list[str | os.PathLike[str]], out: str | os.PathLike[str],
                  probs: bool = False, device: torch.device | str = "cpu") -> list[Path]:
    """For each image: ``<stem>.png`` (VOC-palette mask), ``<stem>_overlay.png`` (image | blend), and with
    ``probs`` ``<stem>_probs.npy`` (C x H x W softmax, float32). Returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    written: list[Path] = []
    for path in images:
        image = read_image(path)
        p = predict_image(model, image, device)
        labels = p.argmax(0).numpy().astype(np.uint8)
        stem = Path(path).stem
        written.append(write_mask(labels, out / f"{stem}.png"))
        Image.fromarray(overlay(image, labels)).save(out / f"{stem}_overlay.png")
        written.append(out / f"{stem}_overlay.png")
        if probs:
            np.save(out / f"{stem}_probs.npy", p.numpy().astype(np.float32))
            written.append(out / f"{stem}_probs.npy")
    return written
