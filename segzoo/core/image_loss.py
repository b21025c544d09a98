"""The image-level loss: what an image known only to "contain a person and a sofa" can teach a segmentation net.

Class scores ``s`` (N x C x H x W logits) are pooled over the image into one score per class (``pool_scores``),
then compared with the classes present by a multi-label binary cross-entropy (FCN-MIL, Pathak et al. 2015, with
BCE per class; background always present). ``suppress`` adds, at every pixel, the cross-entropy of "one of the
present classes" (``-log sum_{c present} softmax(s)_c``), which pushes the absent classes down everywhere.
Formulas and their options: docs/weak-labels.md. Everything here is a pure function of the scores and a
batch-like record (``mask``, ``image_labels``, ``has_mask``), so a plugin's loss can reuse it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .settings import SETTINGS

POOLS = SETTINGS["weak_pool"].choices  # max, lse, topk


def pool_scores(scores: torch.Tensor, pool: str = "max", temperature: float = 5.0, topk: float = 0.1) -> torch.Tensor:
    """N x C x H x W scores -> N x C image scores.

    ``max``: the largest score of each class (FCN-MIL). ``lse``: ``(1/r) log(mean exp(r s))``, a smooth
    maximum between the mean (r -> 0) and the max (r -> inf), r = ``temperature``. ``topk``: the mean of
    the ``ceil(topk * H * W)`` highest scores of each class (``topk`` a fraction of the pixels).
    """
    SETTINGS["weak_pool"].check(pool)  # the choices and ranges: segzoo.core.settings
    flat = scores.float().flatten(2)
    if pool == "max":
        return flat.amax(2)
    if pool == "lse":
        SETTINGS["weak_temperature"].check(temperature)
        return (torch.logsumexp(temperature * flat, 2) - math.log(flat.shape[2])) / temperature
    SETTINGS["weak_topk"].check(topk)
    k = max(1, math.ceil(topk * flat.shape[2]))
    return flat.topk(k, dim=2).values.mean(2)


def present(image_labels: torch.Tensor) -> torch.Tensor:
    """The labels with background (class 0) marked present, as floats."""
    labels = image_labels.float().clone()
    labels[:, 0] = 1.0
    return labels


def image_bce(scores: torch.Tensor, image_labels: torch.Tensor, pool: str = "max", temperature: float = 5.0,
              topk: float = 0.1) -> torch.Tensor:
    """Per sample (N), the mean over classes of the BCE between pooled scores and the classes present."""
    pooled = pool_scores(scores, pool, temperature, topk)
    return F.binary_cross_entropy_with_logits(pooled, present(image_labels), reduction="none").mean(1)


def absent_suppression(scores: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """Per sample (N), the mean over pixels of ``-log sum_{c present} softmax(s)_c``: 0 when the absent classes
    have no probability anywhere."""
    s = scores.float()
    keep = present(image_labels).bool()[:, :, None, None].expand_as(s)
    inside = torch.logsumexp(s.masked_fill(~keep, float("-inf")), 1)
    return (torch.logsumexp(s, 1) - inside).flatten(1).mean(1)


def image_level_count(batch: Any) -> int:
    """How many samples :func:`image_level_loss` averages over: those without a mask, when the batch carries
    image labels. The trainer weighs each micro-batch's image-level loss by its share of this count over the
    accumulation group and the ranks, so the step sees the mean over all of them (docs/weak-labels.md)."""
    if batch.image_labels is None or batch.has_mask is None:
        return 0
    return int((~batch.has_mask.bool()).sum())


def image_level_loss(scores: torch.Tensor, batch: Any, pool: str = "max", temperature: float = 5.0,
                     topk: float = 0.1, suppress: float = 0.0) -> torch.Tensor:
    """The image-level loss over the batch's samples without a mask (mean over them; 0, still a graph, when
    there are none): pooled-score BCE plus ``suppress`` times :func:`absent_suppression`."""
    labels, has_mask = batch.image_labels, batch.has_mask
    if labels is None or has_mask is None:
        return scores.float().sum() * 0.0
    weak = ~has_mask.to(scores.device).bool()
    if not bool(weak.any()):
        return scores.float().sum() * 0.0
    s, y = scores[weak], labels.to(scores.device)[weak]
    per_sample = image_bce(s, y, pool, temperature, topk)
    if suppress:
        per_sample = per_sample + suppress * absent_suppression(s, y)
    return per_sample.mean()
