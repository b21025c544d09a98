"""segzoo's built-in losses beyond pixel cross-entropy, registered through the hook any plugin would use.

``image-level``: the loss of images known only by the classes they hold (docs/weak-labels.md), a new-form
loss (``sees_batch=True``) that reads ``batch.image_labels`` and ``batch.has_mask``. ``segzoo train
--weak-weight W`` adds it, times W, to the run's pixel loss; ``--loss-fn image-level`` trains from it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from segzoo import hookimpl
from segzoo.core.image_loss import image_level_loss, pool_scores

IMAGE_LEVEL = "image-level"


def image_level(pool: str = "max", temperature: float = 5.0, topk: float = 0.1, suppress: float = 0.0
                ) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """Pooled class scores against the classes present (BCE), over the samples without a mask."""
    pool_scores(torch.zeros(1, 1, 1, 1), pool, temperature, topk)  # a bad option fails now, not at the first batch

    def loss(scores: torch.Tensor, batch: Any) -> torch.Tensor:
        return image_level_loss(scores, batch, pool, temperature, topk, suppress)

    return loss


@hookimpl
def segzoo_register_losses(registrar):
    registrar.loss(IMAGE_LEVEL, image_level, "image-level labels: pooled class scores vs the classes present (BCE)",
                   sees_batch=True)
