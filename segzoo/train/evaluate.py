"""Running a model over a dataset into one confusion matrix and boundary counts (summed over ranks when distributed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .metrics import BOUNDARY_PX, BoundaryIoU, ConfusionMatrix, boundary_from_counts
from .runtime import Runtime, all_reduce_sum
from .step import to_batch


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, rt: Runtime, num_classes: int,
             class_names: Sequence[str] | None = None, progress: bool = False,
             boundary_px: int = BOUNDARY_PX) -> dict[str, Any]:
    """The four FCN metrics and boundary IoU at ``boundary_px`` over every pixel ``loader`` yields (on every
    rank together), each mask cropped to where the model's scores lie (its output window)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, device=rt.device)
    boundary = BoundaryIoU(num_classes, boundary_px, device=rt.device)
    skipped = torch.zeros((), dtype=torch.int64, device=rt.device)
    batches = loader
    if progress:
        batches = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    for batch in batches:
        skipped += batch["skipped"]
        if batch["image"].numel() == 0:
            continue
        x, targets = to_batch(batch, rt, model)
        with rt.autocast():
            scores = model(x)
        pred = scores.argmax(1)
        cm.update(pred, targets.mask)
        boundary.update(pred, targets.mask)
    all_reduce_sum(cm.matrix, rt)
    all_reduce_sum(boundary.counts, rt)
    all_reduce_sum(skipped, rt)
    model.train(was_training)
    return {**cm.compute(class_names), **boundary_from_counts(boundary.counts, boundary_px, class_names),
            "skipped": int(skipped)}
