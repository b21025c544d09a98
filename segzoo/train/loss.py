"""Pixel-wise cross-entropy, the FCN loss (every labelled pixel is a classification, 255 is ignored), and the
losses plugins register (Dice, focal, Lovász...) through ``segzoo_register_losses``.

Every training loss is called ``loss(scores, batch)``: N x C x h x w scores (the model's output window) and a
:class:`segzoo.core.batch.Batch` whose masks are already cropped to that window, with the image-level labels
and which samples carry a mask. Pixel losses read ``batch.mask``, where samples without a mask are all void.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..api import get_registry
from ..core.batch import Batch
from ..core.errors import PluginError, SegzooError
from ..core.image_loss import image_level_count, image_level_loss, pool_scores
from ..core.model import IGNORE_INDEX
from ..zoo.registry import BUILTIN_LOSS, call_plugin


def cross_entropy(scores: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  reduction: str = "mean", ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of N x C x H x W ``scores`` against N x H x W labels.

    ``reduction="mean"`` divides by the number of valid (non-255) pixels, or by the sum of their class
    weights when ``weight`` is given, which is ``nn.NLLLoss``'s convention; ``"sum"`` is the paper's
    unnormalised loss (Caffe ``normalize: false``). A batch with no valid pixel gives 0, not NaN, so a
    crop that falls entirely on void does not stop the run.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    scores = scores.float()  # softmax in float32 even under autocast
    total = F.cross_entropy(scores, target, weight=weight, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    valid = target != ignore_index
    denom = mean_denominator(target, weight, ignore_index)
    return total / denom.clamp_min(1e-12) if bool(valid.any()) else total * 0.0


def mean_denominator(target: torch.Tensor, weight: torch.Tensor | None = None,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """What :func:`cross_entropy`'s mean divides by: the valid pixels, or the sum of their class weights (0 when
    none is valid). The step weighs each micro-batch by its share of it over the group (:func:`loss_norms`)."""
    valid = target != ignore_index
    if weight is None:
        return valid.sum()
    return weight.to(target.device)[target[valid]].sum()


Loss = Callable[[torch.Tensor, Batch], torch.Tensor]


def loss_terms(criterion: Loss, scores: torch.Tensor, batch: Batch) -> list[torch.Tensor]:
    """The loss as the terms that add up to it: a criterion with a ``terms(scores, batch)`` method gives them
    (the pixel and the image-level term), any other is one term, its own value."""
    terms = getattr(criterion, "terms", None)
    return list(terms(scores, batch)) if callable(terms) else [criterion(scores, batch)]


def loss_norms(criterion: Loss, batch: Batch) -> list[float | None]:
    """For each of :func:`loss_terms`, what it is a mean over in ``batch`` (valid pixels, their class-weight sum,
    image-labelled samples), or None when segzoo cannot know (a plugin's loss, a summed loss).

    A step that spans several micro-batches (``--accumulate``) or ranks (DDP) weighs each term by the batch's
    share of its norm there, so the step's gradient is that of all its samples as one batch; None terms are
    averaged over the micro-batches and ranks instead, as a loss always was before image-level labels."""
    norms = getattr(criterion, "norms", None)
    return list(norms(batch)) if callable(norms) else [None]


class PixelCrossEntropy:
    """The built-in loss: :func:`cross_entropy` over ``batch.mask`` (samples without a mask are all void, so
    they add nothing to the sum and nothing to the count of valid pixels)."""

    def __init__(self, weight: torch.Tensor | None = None, reduction: str = "mean"):
        self.weight, self.reduction = weight, reduction

    def __call__(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        return cross_entropy(scores, batch.mask, weight=self.weight, reduction=self.reduction)

    def norms(self, batch: Batch) -> list[float | None]:
        """The mean's denominator (:func:`mean_denominator`); a summed loss has none."""
        return [float(mean_denominator(batch.mask, self.weight))] if self.reduction == "mean" else [None]


def make_loss(name: str = BUILTIN_LOSS, weight: torch.Tensor | None = None, reduction: str = "mean",
              options: dict[str, Any] | None = None) -> Loss:
    """The training loss ``loss(scores, batch)``: the built-in cross-entropy, or one a plugin registered.

    A plugin's factory is given ``weight``, ``reduction`` and ``ignore_index`` when it takes them; one
    that does not take class weights (or a summed loss) refuses a run that asks for them, in one line,
    rather than silently training without them.
    """
    options = dict(options or {})
    if name == BUILTIN_LOSS:
        if options:
            raise SegzooError(f"the built-in cross-entropy takes no options (got {sorted(options)}); leave "
                              "--loss-opt out, or name a plugin's loss with --loss-fn")
        return PixelCrossEntropy(weight, reduction)
    entry = get_registry().loss(name)
    try:
        params = inspect.signature(entry.obj).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    asked = (("weight", weight, weight is not None, "--class-weights"),
             ("reduction", reduction, reduction != "mean", f"--loss {reduction}"),
             ("ignore_index", IGNORE_INDEX, False, ""))
    for key, value, needed, flag in asked:
        if key in params or takes_any:
            options[key] = value
        elif needed:
            raise SegzooError(f"loss '{name}' from {entry.source} takes no {key}, so it cannot honour {flag}; "
                              f"leave {flag.split()[0]} out, or use a loss that takes it")
    fn = call_plugin(entry, name, entry.obj, **options)
    if not callable(fn):
        raise PluginError(f"loss '{name}' from {entry.source} returned a {type(fn).__name__}, not a callable "
                          "loss(scores, batch)")
    return _PluginLoss(fn, name, entry.source, entry.sees_batch)


class _PluginLoss:
    """A plugin's loss, fed float32 scores (softmax outside autocast) and checked to give one number.

    A loss registered in the deprecated form ``loss(scores, target)`` gets only the samples that carry a mask
    (and a zero that keeps the graph when none does), so it trains as it did before image-level labels existed.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, source: str, sees_batch: bool = True):
        self.fn, self.name, self.source, self.sees_batch = fn, name, source, sees_batch

    def __call__(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.sees_batch:
            loss = self.fn(scores.float(), batch)
        elif bool(batch.has_mask.all()):
            loss = self.fn(scores.float(), batch.mask)
        elif bool(batch.has_mask.any()):
            loss = self.fn(scores.float()[batch.has_mask], batch.mask[batch.has_mask])
        else:
            return scores.float().sum() * 0.0
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise PluginError(f"loss '{self.name}' from {self.source} returned {shape}, not a scalar tensor; "
                              "reduce it to one number")
        return loss


class WithImageLabels:
    """The run's pixel loss plus ``weight`` times the image-level loss (:mod:`segzoo.core.image_loss`) of the
    samples without a mask: ``--weak-weight`` > 0. Both terms are kept apart (``pixel``, ``image``) so each can
    be read, and tested, alone."""

    def __init__(self, pixel: Loss, weight: float, pool: str = "max", temperature: float = 5.0, topk: float = 0.1,
                 suppress: float = 0.0):
        pool_scores(torch.zeros(1, 1, 1, 1), pool, temperature, topk)  # a bad option fails before training
        self.pixel, self.weight = pixel, float(weight)
        self.options = {"pool": pool, "temperature": temperature, "topk": topk, "suppress": suppress}

    def image(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        return image_level_loss(scores, batch, **self.options)

    def __call__(self, scores: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.pixel(scores, batch) + self.weight * self.image(scores, batch)

    def terms(self, scores: torch.Tensor, batch: Batch) -> list[torch.Tensor]:
        """The pixel loss's terms, then ``weight`` times the image-level loss: they add up to the loss."""
        return [*loss_terms(self.pixel, scores, batch), self.weight * self.image(scores, batch)]

    def norms(self, batch: Batch) -> list[float | None]:
        """The pixel loss's norms, then the image-labelled samples the image-level mean is over."""
        return [*loss_norms(self.pixel, batch), float(image_level_count(batch))]


def with_image_labels(cfg: Any, pixel: Loss) -> Loss:
    """The loss a run trains with: its ``pixel`` loss (``cfg.loss``: the built-in cross-entropy or a plugin's),
    with the image-level term added when ``cfg.weak_weight`` > 0 (docs/weak-labels.md)."""
    if not cfg.weak_weight:
        return pixel
    return WithImageLabels(pixel, cfg.weak_weight, cfg.weak_pool, cfg.weak_temperature, cfg.weak_topk,
                           cfg.weak_suppress)
