"""The FCN paper's four metrics from one confusion matrix accumulated over the whole dataset.

With ``n[i, j]`` the number of pixels of true class ``i`` predicted as ``j`` and ``t_i = sum_j n[i, j]``
(pixels of class ``i``), summed over every pixel of every image before any ratio is taken (not
averaged per image), and pixels labelled 255 left out:

* pixel accuracy          ``sum_i n_ii / sum_i t_i``
* mean accuracy           ``mean_i n_ii / t_i``
* mean IU                 ``mean_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU   ``sum_i t_i * IU_i / sum_i t_i``

Classes in the means: a class with no ground-truth pixels has no accuracy (0/0) and is left out of
mean accuracy; its IU is 0 if it was predicted anywhere (those are false positives) and undefined,
hence left out of mean IU, only if it appears in neither the ground truth nor the prediction. Such
undefined values are reported as ``None`` per class.

``never_predicted`` lists the classes that have pixels in the truth but none in the prediction: a class the
model has not learned (yet), which a mean over classes would otherwise hide; the training log names them at
every validation (:func:`summary_line`).

Boundary IoU (Cheng et al., CVPR 2021) weighs only the pixels near a contour, where a finer head should
help and region IU barely notices: :class:`BoundaryIoU` (docs/metrics.md has the formula and an example).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.model import IGNORE_INDEX
from ..core.settings import SETTINGS
from ..core.table import format_table

BOUNDARY_PX = 2  # the default band width of boundary IoU, in pixels


class ConfusionMatrix:
    """``update(pred, target)`` over batches, then ``compute()``; ``matrix`` is int64 and may be summed over ranks."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted labels ``pred`` (any shape) against ``target`` (same shape); 255 pixels are skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        n = self.num_classes
        idx = target[valid].long() * n + pred[valid].long().clamp_(0, n - 1)
        self.matrix += torch.bincount(idx, minlength=n * n).view(n, n).to(self.matrix.device)

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        return metrics_from_confusion(self.matrix, class_names)


class BoundaryIoU:
    """Boundary IoU per class at ``px`` pixels, accumulated over every image before any ratio is taken.

    A pixel is in the boundary band of a label map when a pixel within ``px`` of it (Chebyshev distance,
    as ``px`` erosions by a 3x3 square) has another label. Void pixels (255 in the truth) are taken out of
    both maps first, so neither a void pixel nor a contour drawn through void counts (the truth does not
    say where the edge lies there), and the frame of the image is no contour either. With ``G_c`` the band
    pixels of the truth labelled ``c`` and ``P_c`` those of the prediction predicted ``c``, IoU_c =
    |G_c & P_c| / |G_c | P_c|; ``boundary_iou`` is its mean over the classes with a non-empty union.
    ``counts`` (intersection, true band, predicted band per class) is int64 and may be summed over ranks.
    """

    def __init__(self, num_classes: int, px: int = BOUNDARY_PX, device: torch.device | str = "cpu",
                 ignore_index: int = IGNORE_INDEX):
        SETTINGS["boundary_px"].check(int(px))
        self.num_classes, self.px, self.ignore_index = int(num_classes), int(px), ignore_index
        self.counts = torch.zeros(3, self.num_classes, dtype=torch.int64, device=device)

    def band(self, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Valid pixels of ``labels`` (N x H x W or H x W) within ``px`` of a valid pixel with another label."""
        x = labels.reshape(-1, 1, *labels.shape[-2:]).float()
        ok = valid.reshape(x.shape)
        k, pool = 2 * self.px + 1, torch.nn.functional.max_pool2d
        # invalid pixels never win the max or the min; max_pool pads with -inf, so the frame never does either
        hi = pool(torch.where(ok, x, -1.0), k, stride=1, padding=self.px)
        lo = -pool(torch.where(ok, -x, -float(self.num_classes)), k, stride=1, padding=self.px)
        return ((hi != lo) & ok).reshape(labels.shape)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted labels ``pred`` against ``target`` (same shape, H x W or N x H x W)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        n = self.num_classes
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        pred = pred.long().clamp(0, n - 1)
        gt_band, pred_band = self.band(target, valid), self.band(pred, valid)
        both = gt_band & pred_band & (pred == target)
        for row, (mask, labels) in enumerate(((both, target), (gt_band, target), (pred_band, pred))):
            self.counts[row] += torch.bincount(labels[mask].long(), minlength=n).to(self.counts.device)

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        return boundary_from_counts(self.counts, self.px, class_names)


def boundary_from_counts(counts: torch.Tensor, px: int, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``boundary_iou`` (mean over classes with a boundary in the truth or the prediction), per class, ``px``."""
    inter, gt, pred = (counts[i].double().cpu() for i in range(3))
    union = gt + pred - inter
    n = union.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    iu = [float(inter[i] / union[i]) if union[i] > 0 else float("nan") for i in range(n)]
    return {"boundary_iou": _nanmean(iu), "boundary_px": int(px),
            "per_class_boundary_iou": {names[i]: (None if math.isnan(iu[i]) else iu[i]) for i in range(n)}}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def metrics_from_confusion(matrix: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU, and per-class IU and accuracy."""
    hist = matrix.detach().double().cpu()
    n = hist.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    diag = hist.diag()
    gt, pred = hist.sum(1), hist.sum(0)
    union = gt + pred - diag
    acc = [float(diag[i] / gt[i]) if gt[i] > 0 else float("nan") for i in range(n)]
    iu = [float(diag[i] / union[i]) if union[i] > 0 else float("nan") for i in range(n)]
    total = float(gt.sum())
    fw = sum(float(gt[i]) * iu[i] for i in range(n) if gt[i] > 0) / total if total else float("nan")
    return {
        "pixel_acc": float(diag.sum()) / total if total else float("nan"),
        "mean_acc": _nanmean(acc),
        "mean_iu": _nanmean(iu),
        "fw_iu": fw,
        "per_class_iu": {names[i]: (None if math.isnan(iu[i]) else iu[i]) for i in range(n)},
        "per_class_acc": {names[i]: (None if math.isnan(acc[i]) else acc[i]) for i in range(n)},
        "pixels": int(total),
        # classes the data has but the model predicted nowhere: not learned (yet)
        "never_predicted": [names[i] for i in range(n) if gt[i] > 0 and pred[i] == 0],
    }


def metrics_table_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[class, IU, accuracy(, boundary IoU)]`` for :func:`segzoo.core.table.format_table` (``-`` where
    undefined)."""
    boundary = metrics.get("per_class_boundary_iou")
    return [[name, _fmt(iu), _fmt(metrics["per_class_acc"].get(name))]
            + ([_fmt(boundary.get(name))] if boundary else []) for name, iu in metrics["per_class_iu"].items()]


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def summary_line(metrics: dict[str, Any]) -> str:
    line = (f"pixel acc {100 * metrics['pixel_acc']:.1f}  mean acc {100 * metrics['mean_acc']:.1f}  "
            f"mean IU {100 * metrics['mean_iu']:.1f}  f.w. IU {100 * metrics['fw_iu']:.1f}")
    if "boundary_iou" in metrics:
        line += f"  boundary IoU@{metrics['boundary_px']}px {_fmt(metrics['boundary_iou'])}"
    missed = metrics.get("never_predicted")
    if missed:
        line += f"  never predicted: {', '.join(missed)}"
    return line


def report(metrics: dict[str, Any]) -> str:
    """The four metrics (and boundary IoU) and the per-class table, as ``segzoo train`` and ``eval`` print them."""
    names = {"pixel_acc": "pixel accuracy", "mean_acc": "mean accuracy", "mean_iu": "mean IU", "fw_iu": "f.w. IU"}
    columns = ["class", "IU %", "acc %"]
    if "boundary_iou" in metrics:
        names["boundary_iou"] = f"boundary IoU ({metrics['boundary_px']} px)"
        columns.append("boundary IoU %")
    four = [[label, _fmt(metrics[key])] for key, label in names.items()]
    return format_table(["metric", "%"], four) + "\n\n" + format_table(columns, metrics_table_rows(metrics))
