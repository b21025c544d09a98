"""Pixel-wise cross-entropy, the FCN loss: every labelled pixel is a classification, 255 is ignored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.model import IGNORE_INDEX


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
    if weight is None:
        denom = valid.sum()
    else:
        denom = weight.to(scores.device)[target[valid]].sum()
    return total / denom.clamp_min(1e-12) if bool(valid.any()) else total * 0.0
