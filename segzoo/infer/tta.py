"""Test-time augmentation: the softmax averaged over horizontal flips and input scales.

``--tta flip``, ``--tta scales=0.75,1,1.25`` or both (``--tta flip --tta scales=...``): every scale is run
as it is and, with ``flip``, mirrored; each softmax is mirrored back and resized to the input's size
(bilinear) before the average, so the result is a probability map of the input's own size. A valid-convolution
model's views are each predicted whole before they are averaged (:func:`tta_average`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import SegzooError
from ..core.limits import MAX_TTA_VIEWS


@dataclass(frozen=True)
class TTA:
    """Which views to average: mirrored or not, at which scales (1.0 alone is plain inference)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def parse_tta(specs: Sequence[str] | None) -> TTA:
    """``["flip", "scales=0.75,1,1.25"]`` (also comma-joined: ``"flip,scales=..."`` is not, use two flags)."""
    flip = False
    scales: tuple[float, ...] = (1.0,)
    for spec in specs or ():
        spec = spec.strip()
        if spec == "flip":
            flip = True
        elif spec.startswith("scales="):
            if spec.count(",") >= MAX_TTA_VIEWS:
                raise SegzooError(f"--tta scales=: at most {MAX_TTA_VIEWS} scales (each is a whole forward pass), "
                                  f"got {spec.count(',') + 1}")
            try:
                scales = tuple(float(v) for v in spec[len("scales="):].split(",") if v.strip())
            except ValueError:
                scales = ()
            if not scales or any(not 0.05 <= s <= 8 for s in scales):
                raise SegzooError(f"--tta {spec!r}: scales must be numbers between 0.05 and 8, e.g. "
                                  "--tta scales=0.75,1,1.25")
        else:
            raise SegzooError(f"--tta {spec!r} is not an augmentation: use --tta flip and/or --tta scales=0.75,1,1.25")
    tta = TTA(flip, scales)
    if tta.views > MAX_TTA_VIEWS:
        raise SegzooError(f"--tta: {tta.views} views (scales x flips) is more than {MAX_TTA_VIEWS}; each is a whole "
                          "forward pass: give fewer scales")
    return tta


def tta_probs(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: TTA = TTA(),
              min_size: int = 1) -> torch.Tensor:
    """The softmax (N x classes x H x W, float32) of ``run`` on the normalized batch ``x``, averaged over the views.

    A view smaller than ``min_size`` (the model's smallest input) is padded bottom/right with zeros (the mean,
    once normalized) and the padding cropped from its scores.
    """
    return tta_average(lambda v: _softmax(run, v, min_size), x, tta)


def tta_average(probs_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: TTA = TTA()) -> torch.Tensor:
    """``probs_of`` (a view's probabilities) averaged over ``tta``'s views of ``x``, each mirrored back and resized
    to what ``probs_of(x)`` covers: the input's size, or the centred window of a valid-convolution model.

    A view's probabilities must cover the whole view for the resize to put them in place: a valid model's window
    of a rescaled input is another part of the image, so its views go through full-size (overlap-tile) prediction
    first (:func:`segzoo.infer.predict.predict_labels`, :class:`segzoo.infer.tile.TiledModel`).
    """
    h, w = x.shape[-2:]
    views = []
    for scale in tta.scales:
        if scale == 1.0:
            xs = x
        elif int(h * scale) >= 1 and int(w * scale) >= 1:
            xs = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        else:  # a view of 0 pixels (a 1-px image at 0.5) is 1 pixel instead
            xs = F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="bilinear",
                               align_corners=False)
        for flipped in ((False, True) if tta.flip else (False,)):
            v = xs.flip(-1) if flipped else xs
            p = probs_of(v)
            views.append((scale, p.flip(-1) if flipped else p))
    # the scores' own size at scale 1: the input's, or the centred window of a valid-convolution model
    size = next((tuple(p.shape[-2:]) for scale, p in views if scale == 1.0), tuple(x.shape[-2:]))
    total: torch.Tensor | None = None
    for _, p in views:
        if tuple(p.shape[-2:]) != size:
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        total = p if total is None else total.add_(p)
    assert total is not None  # a TTA has at least one view
    return total.div_(tta.views)


def _softmax(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, min_size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = max(min_size - h, 0), max(min_size - w, 0)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return run(x)[..., :h, :w].float().softmax(1).cpu()
