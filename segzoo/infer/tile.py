"""Sliding-window inference for images of any size, in bounded memory.

Tiles of ``tile`` pixels overlap by a fraction of their side; each tile's softmax is weighted by a window
that falls off linearly over the overlap (never to zero) and the weighted sum is divided by the summed
weights. Tiles start at multiples of the model's coarsest stride (``align``), so a tile sees the pixels at
the same phase of every pooling grid as the whole image does: wherever a pixel's receptive field lies inside
every tile that covers it, the blend equals whole-image inference there (tests/test_tile.py).

Memory is bounded by one band of tiles: rows are processed top to bottom and every row that no later tile
touches is handed to ``emit`` and forgotten, so the probabilities of the whole image never exist at once
(an ``emit`` may write them to a memory-mapped file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.batch import Window
from ..core.errors import SegzooError
from ..core.settings import SETTINGS
from ..core.window import cover_side, has_window, mirror_pad
from .tta import TTA, tta_average, tta_probs


def tile_spans(n: int, tile: int, overlap: float, align: int = 1) -> list[tuple[int, int]]:
    """The (start, end) of the tiles along a side of ``n`` pixels: starts are multiples of ``align``, consecutive
    tiles overlap by about ``overlap`` of a tile, the last one ends at ``n`` (and may be up to ``align`` shorter)."""
    if n <= tile:
        return [(0, n)]
    step = max(align, int(tile * (1 - overlap)) // align * align)
    spans, start = [], 0
    while start + tile < n:
        spans.append((start, start + tile))
        start += step
    last = -(-(n - tile) // align) * align
    if not spans or last > spans[-1][0]:
        spans.append((last, n))
    return spans


def window(length: int, ramp: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights: 1 inside, falling linearly over ``ramp`` pixels at an edge that another tile overlaps
    (never to 0, so every pixel keeps a weight); flat at the image's own edges."""
    i = torch.arange(length, dtype=torch.float32)
    w = torch.ones(length)
    if ramp > 0:
        if not at_start:
            w = torch.minimum(w, (i + 1) / (ramp + 1))
        if not at_end:
            w = torch.minimum(w, (length - i) / (ramp + 1))
    return w


def check_tile(tile: int, overlap: float, align: int, min_size: int) -> None:
    """``--tile`` and ``--overlap`` in their ranges (segzoo.core.settings), the tile no smaller than the model's
    coarsest stride allows."""
    SETTINGS["tile"].check(tile)
    SETTINGS["overlap"].check(overlap)
    low = max(2 * align, min_size)
    if tile < low:
        raise SegzooError(f"--tile {tile} is too small for this model: use at least {low} (twice its coarsest "
                          f"stride {align}); 512 is a good size")


def predict_tiled(probs_of: Callable[[torch.Tensor], torch.Tensor],
                  load: Callable[[int, int, int, int], torch.Tensor], size: tuple[int, int], num_classes: int,
                  tile: int, overlap: float, emit: Callable[[int, torch.Tensor], None], align: int = 1,
                  batch: int = 1) -> None:
    """Blend the softmax of overlapping tiles over an image of ``size`` (H, W).

    ``load(top, bottom, left, right)`` gives that region as a normalized 1 x C x h x w tensor, ``probs_of``
    maps an N x C x h x w batch to its N x classes x h x w softmax (TTA included), and ``emit(top, probs)``
    receives finished rows (classes x rows x W) from top to bottom, each row once.
    """
    h, w = size
    rows, cols = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    ramp = int(round(tile * overlap))
    wx = [window(e - s, ramp, s == 0, e == w) for s, e in cols]
    band = max(re - rs for rs, re in rows)  # each row of tiles starts where the finished rows end
    acc = torch.zeros(num_classes, band, w)  # one buffer for the whole image: no growing, no copies of it
    weight = torch.zeros(band, w)
    for r, (rs, re) in enumerate(rows):
        wy = window(re - rs, ramp, rs == 0, re == h)
        for group in _batches(cols, batch):
            x = torch.cat([load(rs, re, cols[c][0], cols[c][1]) for c in group])
            p = probs_of(x)
            for k, c in enumerate(group):
                cs, ce = cols[c]
                wt = wy[:, None] * wx[c][None, :]
                acc[:, :re - rs, cs:ce].addcmul_(p[k], wt)
                weight[:re - rs, cs:ce].add_(wt)
        done = rows[r + 1][0] if r + 1 < len(rows) else h
        n = done - rs
        emit(rs, acc[:, :n].div_(weight[:n]))  # the caller copies what it keeps
        carry = re - done  # rows the next row of tiles adds to: moved to the buffer's top
        if carry > 0:
            acc[:, :carry] = acc[:, n:n + carry].clone()
            weight[:carry] = weight[n:n + carry].clone()
        acc[:, max(carry, 0):].zero_()
        weight[max(carry, 0):].zero_()


def _batches(cols: list[tuple[int, int]], batch: int) -> list[list[int]]:
    """Indices of the tiles of one row, grouped by width (a batch must share its size), ``batch`` at a time."""
    groups: list[list[int]] = []
    for i, (s, e) in enumerate(cols):
        if groups and len(groups[-1]) < batch and cols[groups[-1][0]][1] - cols[groups[-1][0]][0] == e - s:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class TiledModel(torch.nn.Module):
    """A model that scores a normalized batch tile by tile (and with test-time augmentation): what ``eval --tile``
    runs. It returns the blended probabilities, whose argmax is the prediction, in place of the logits."""

    def __init__(self, model: torch.nn.Module, tile: int | None, overlap: float = 0.25, tta: Any = None,
                 batch: int = 1):
        super().__init__()
        self.model, self.tile, self.overlap, self.tta, self.batch = model, tile, overlap, tta or TTA(), batch
        strides = [f.stride for f in getattr(getattr(model, "backbone", None), "feature_info", [])] or [1]
        self.align = int(max(strides))
        self.min_size = int(getattr(getattr(model, "backbone", None), "min_input_size", 1))
        self.num_classes = int(model.num_classes)
        if tile is not None and has_window(model):
            taken_side(model, tile, "--tile")
        elif tile is not None:
            check_tile(tile, overlap, self.align, self.min_size)

    def output_window(self, height: int, width: int) -> Any:
        """Tiled, the image's own size (overlap-tile mirrors what a valid model needs); untiled, the model's window."""
        if self.tile is None and hasattr(self.model, "output_window"):
            return self.model.output_window(height, width)
        return Window.full(height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def probs_of(v: torch.Tensor) -> torch.Tensor:
            return tta_probs(self.model, v, self.tta, self.min_size)

        if has_window(self.model) and (self.tile is not None or self.tta.views > 1):
            # valid convolutions: each view scored whole (overlap-tile, mirrored borders), then averaged; untiled,
            # cut to the window the model itself would score, as output_window says
            p = tta_average(self.whole, x, self.tta)
            if self.tile is None:
                rows, cols = self.model.output_window(*x.shape[-2:]).slices
                p = p[..., rows, cols]
            return p.to(x.device)
        if self.tile is None:
            return probs_of(x).to(x.device)
        out = torch.empty(x.shape[0], self.num_classes, *x.shape[-2:])
        for i in range(x.shape[0]):
            def keep(top: int, p: torch.Tensor, i: int = i) -> None:
                out[i, :, top:top + p.shape[1]] = p

            predict_tiled(probs_of, lambda t, b, left, r, i=i: x[i:i + 1, :, t:b, left:r],  # type: ignore[misc]
                          tuple(x.shape[-2:]),
                          self.num_classes, self.tile, self.overlap, keep, self.align, self.batch)
        return out.to(x.device)

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        return predict_whole(lambda t: tta_probs(self.model, t, min_size=self.min_size), x, self.model, self.tile,
                             self.num_classes, self.align)


# -- overlap-tile for models whose output is a centred window of their input (U-Net's valid convolutions) ---------

def valid_starts(n: int, out: int, step: int) -> list[int]:
    """Where output tiles of ``out`` pixels start along a side of ``n``: at multiples of ``step``, covering it."""
    starts = [0]
    while starts[-1] + out < n:
        starts.append(starts[-1] + step)
    return starts


def predict_windowed(probs_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: tuple[int, int],
                     window_of: Callable[[int, int], Any], num_classes: int, align: int) -> torch.Tensor:
    """Full-size probabilities (N x classes x H x W) from a model whose scores cover only a centred window of its
    input: the image is mirror-padded and scored by input tiles of ``tile`` (a size the model takes), whose output
    windows start at multiples of ``align`` (the coarsest stride) and so see every pooling grid at the same phase
    as one pass over the whole padded image would: the result equals that pass (tests/test_tile.py)."""
    th, tw = tile
    win = window_of(th, tw)
    oh, ow = win.height, win.width
    sh, sw = max(align, oh // align * align), max(align, ow // align * align)
    if sh > oh or sw > ow:
        raise SegzooError(f"--tile {th}x{tw} gives outputs of {oh}x{ow}, smaller than the model's coarsest stride "
                          f"{align}; use a larger tile")
    n, _, h, w = x.shape
    rows, cols = valid_starts(h, oh, sh), valid_starts(w, ow, sw)
    padded = mirror_pad(x, win.top, rows[-1] + th - win.top - h, win.left, cols[-1] + tw - win.left - w)
    out = torch.empty(n, num_classes, h, w)
    for r in rows:
        for c in cols:
            p = probs_of(padded[..., r:r + th, c:c + tw])
            out[..., r:r + oh, c:c + ow] = p[..., :min(oh, h - r), :min(ow, w - c)].to(out.dtype).cpu()
    return out


def predict_whole(probs_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, model: Any, tile: int | None,
                  num_classes: int, align: int) -> torch.Tensor:
    """Full-size probabilities of ``x`` from a valid-convolution ``model``: :func:`predict_windowed` in input tiles
    of ``tile``, or in one whose window covers ``x`` (:func:`windowed_tile`)."""
    return predict_windowed(probs_of, x, windowed_tile(model, tuple(x.shape[-2:]), tile), model.output_window,
                            num_classes, align)


def windowed_tile(model: Any, size: tuple[int, int], tile: int | None) -> tuple[int, int]:
    """The input tile for an image of ``size`` on a windowed model: ``tile`` (refused, naming the nearest sizes, where
    the model's geometry cannot take it), or else one tile whose window covers the image."""
    if tile is not None:
        return taken_side(model, tile, "--tile"), taken_side(model, tile, "--tile")
    low = int(getattr(getattr(model, "backbone", None), "min_input_size", 1))
    return cover_side(model.output_window, size[0], 0, low), cover_side(model.output_window, size[1], 1, low)


def taken_side(model: Any, side: int, what: str) -> int:
    """``side`` if the model takes it, else an error naming the nearest sides it does."""
    try:
        model.output_window(side, side)
    except SegzooError as exc:
        raise SegzooError(f"{what} {side}: {exc}") from None
    return side
