"""Inputs for models whose scores cover only a centred window of their input (U-Net's valid convolutions).

Such a model sees context it does not label: the U-Net paper mirrors the image at its borders (Fig. 2) so that
the window can cover the whole image. Training, evaluation and prediction all need the same two things from the
model's declared ``output_window``: the input size whose window covers an image, and the mirrored image itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .batch import Window
from .errors import InputError, SegzooError

WindowOf = Callable[[int, int], Window]  # (input height, input width) -> where the scores lie


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """``x`` (... x H x W, at least 3-d) extended by mirroring at its borders, by any amount: a pad wider than the
    image mirrors again, as ``numpy.pad(mode="reflect")`` does; a side of one pixel is repeated."""
    squeeze = x.dim() == 3
    x = x[None] if squeeze else x
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        if h == 1 or w == 1:  # nothing to mirror along that side
            x = F.pad(x, (left, right, top, bottom), mode="replicate")
            break
        t, b, le, r = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (le, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - le, right - r
    return x[0] if squeeze else x


def cover_side(window_of: WindowOf, n: int, axis: int, low: int = 1, reach: int = 4096) -> int:
    """The smallest input side (from ``low``) the model takes whose output window spans ``n`` pixels along
    ``axis`` (0: height, 1: width); sizes the model refuses are skipped."""
    for side in range(max(n, low), max(n, low) + reach):
        try:
            win = window_of(side, side)
        except InputError:
            continue
        if (win.height, win.width)[axis] >= n:
            return side
    raise SegzooError(f"no input side from {max(n, low)} to {max(n, low) + reach} gives this model an output of "
                      f"{n} pixels")


def covering_pad(window_of: WindowOf, h: int, w: int, low: int = 1) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the mirror padding that makes an ``h`` x ``w`` image an input the model takes
    whose output window starts at the image's first pixel and covers it."""
    th, tw = cover_side(window_of, h, 0, low), cover_side(window_of, w, 1, low)
    win = window_of(th, tw)
    return win.top, th - win.top - h, win.left, tw - win.left - w


def shifted_window(example: tuple[int, int], window: Window, step: int) -> WindowOf:
    """The window rule of a model whose borders are constant (valid convolutions: U-Net loses the same margin at
    every size), from one example: input ``example`` (height, width) gave ``window``, and the sides it takes are
    ``example + step * k``. What an exported file records, so that its runtime can tile as the model would."""
    low_h, low_w = example

    def window_of(height: int, width: int) -> Window:
        for side, low in ((height, low_h), (width, low_w)):
            if side < low or (side - low) % step:
                below = max(low, low + (side - low) // step * step)
                raise InputError(f"this model takes input sides {low} + {step} x k; {side} is not one of them "
                                 f"(nearest: {below} or {below + step})")
        return Window(window.top, window.left, height - (low_h - window.height), width - (low_w - window.width))

    return window_of


def has_window(model: object, side: int = 512) -> bool:
    """Whether ``model`` declares an output smaller than its input (probed at a side it takes near ``side``)."""
    window_of = getattr(model, "output_window", None)
    if not callable(window_of):
        return False
    low = int(getattr(getattr(model, "backbone", None), "min_input_size", 1))
    n = cover_side(window_of, side, 0, low)
    return not window_of(n, n).is_full(n, n)
