"""Joint transforms: the image and its mask move together, so every label stays on its pixel.

Each transform is ``t(image, mask, rng) -> (image, mask)`` on tensors (image 3 x H x W float,
mask H x W int64) with a ``numpy.random.Generator`` passed in, so a sample's augmentation depends
only on the seed it is given (which makes runs and resumed runs repeat exactly). Masks are resized
with nearest-neighbour interpolation and padded with 255 (void), so no pixel gains a made-up label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.model import IMAGENET_NORM
from ..core.window import WindowOf, covering_pad, has_window, mirror_pad
from .io import IGNORE_INDEX, image_scale

Pair = tuple[torch.Tensor, torch.Tensor]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """An H x W x C image of any bit depth (:func:`~segzoo.data.io.read_image`) → C x H x W float32 in [0, 1],
    divided by its type's full scale (255 for 8 bits, 65535 for 16), so no value is clipped."""
    image = image[..., None] if image.ndim == 2 else image
    img = torch.from_numpy(np.ascontiguousarray(image))
    if img.dtype == torch.uint16:
        img = img.to(torch.int32)
    return img.permute(2, 0, 1).float().div_(image_scale(image.dtype))


def to_tensors(image: np.ndarray, mask: np.ndarray) -> Pair:
    """H x W x C image (uint8, uint16 or float) and H x W uint8 mask → C x H x W float in [0, 1] and H x W int64."""
    return image_tensor(image), torch.from_numpy(np.ascontiguousarray(mask)).long()


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """The image with the model's channel count where that loses nothing: grey is repeated into RGB (what an RGB
    conversion did), an opaque alpha channel is dropped; anything else is an :class:`InputError` with the fix."""
    c = image.shape[-3]
    if c == channels:
        return image
    if c == 1:
        return image.expand(*image.shape[:-3], channels, *image.shape[-2:])
    if c == channels + 1 and channels in (1, 3) and bool((image[..., -1:, :, :] == 1).all()):
        return image[..., :channels, :, :]
    kind = {2: "grey + alpha", 4: "RGBA"}.get(c, f"{c}-band")
    alpha = " with a transparent alpha channel" if c == channels + 1 and channels in (1, 3) else ""
    raise InputError(f"a {kind} image{alpha} has {c} channels but the model takes {channels}; build the model "
                     f"with --backbone-opt in_chans={c} (and --normalization stats), or convert the images")

DEFAULT_NORM: dict[str, Any] = IMAGENET_NORM  # typed as the recipes' normalizations are


def normalize(image: torch.Tensor, norm: dict[str, Any] | None = None) -> torch.Tensor:
    """Apply the model's normalization contract (segzoo/model.py): scale, optional BGR, then (x - mean) / std.

    The image first gets the model's channels (as many as ``norm['mean']`` lists) by :func:`match_channels`.
    """
    norm = norm or DEFAULT_NORM
    image = match_channels(image, len(norm["mean"]))
    x = image * float(norm.get("scale", 1.0))
    if norm.get("bgr", False):
        x = x.flip(-3)
    mean = torch.tensor(norm["mean"], dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(norm["std"], dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


class Normalize:
    def __init__(self, norm: dict[str, Any] | None = None):
        self.norm = dict(norm or IMAGENET_NORM)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        return normalize(image, self.norm), mask


class RandomScale:
    """Resize both by one random factor in ``[low, high]``: bilinear for the image, nearest for the mask."""

    def __init__(self, low: float = 0.5, high: float = 2.0):
        self.low, self.high = float(low), float(high)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        factor = rng.uniform(self.low, self.high)
        h, w = mask.shape
        size = (max(1, round(h * factor)), max(1, round(w * factor)))
        if size == (h, w):
            return image, mask
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return image, mask


class RandomCrop:
    """A random ``size`` crop; smaller images are first padded (image with 0, mask with 255 = void).

    Put it after :class:`Normalize`, so the image's padding 0 is the dataset mean, as FCN's Caffe
    data layer padded with the mean colour.
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        ch, cw = self.size
        h, w = mask.shape
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = mask.shape
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[:, top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        if rng.random() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


class MirrorToWindow:
    """Mirror the image at its borders (the U-Net paper's Fig. 2) and pad the mask with void, so that a model whose
    scores cover only a centred window of its input (``window_of``, its ``output_window``) labels every pixel of
    the image: its window, to which the step crops the mask, is then the image itself (plus void at most)."""

    def __init__(self, window_of: WindowOf, min_size: int = 1):
        self.window_of, self.min_size = window_of, min_size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        h, w = mask.shape
        top, bottom, left, right = covering_pad(self.window_of, h, w, self.min_size)
        return (mirror_pad(image, top, bottom, left, right),
                F.pad(mask, (left, right, top, bottom), value=IGNORE_INDEX))


class Compose:
    def __init__(self, transforms: Sequence[Any]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> Pair:
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask


def train_transform(crop_size: int | Sequence[int], norm: dict[str, Any] | None = None,
                    scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                    window: MirrorToWindow | None = None) -> Compose:
    """Normalize, random scale, random crop (void padding), horizontal flip: FCN-era augmentation; for a model whose
    output is a window of its input, the crop is then mirrored out to the input whose window it is (``window``)."""
    steps: list[Any] = [Normalize(norm)]
    if scale and tuple(scale) != (1.0, 1.0):
        steps.append(RandomScale(*scale))
    steps.append(RandomCrop(crop_size))
    if flip:
        steps.append(RandomHorizontalFlip())
    if window is not None:
        steps.append(window)
    return Compose(steps)


def eval_transform(norm: dict[str, Any] | None = None, window: MirrorToWindow | None = None) -> Compose:
    """Whole images, only normalized: evaluation sees every pixel at its own size (mirrored out to the input whose
    output window is the image, for a model with a ``window``)."""
    return Compose([Normalize(norm), *([window] if window is not None else [])])


def window_transform(model: Any) -> MirrorToWindow | None:
    """The :class:`MirrorToWindow` step for a model whose output is smaller than its input, else None (same-size
    models keep their transforms exactly as before)."""
    if not has_window(model):
        return None
    return MirrorToWindow(model.output_window, int(getattr(getattr(model, "backbone", None), "min_input_size", 1)))
