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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.model import IGNORE_INDEX
from ..core.table import format_table


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
    }


def metrics_table_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[class, IU, accuracy]`` for :func:`segzoo.core.table.format_table` (``-`` where undefined)."""
    return [[name, _fmt(iu), _fmt(metrics["per_class_acc"].get(name))] for name, iu in metrics["per_class_iu"].items()]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def summary_line(metrics: dict[str, Any]) -> str:
    return (f"pixel acc {100 * metrics['pixel_acc']:.1f}  mean acc {100 * metrics['mean_acc']:.1f}  "
            f"mean IU {100 * metrics['mean_iu']:.1f}  f.w. IU {100 * metrics['fw_iu']:.1f}")


def report(metrics: dict[str, Any]) -> str:
    """The four metrics and the per-class table, as printed by ``segzoo train`` and ``segzoo eval``."""
    names = {"pixel_acc": "pixel accuracy", "mean_acc": "mean accuracy", "mean_iu": "mean IU", "fw_iu": "f.w. IU"}
    four = [[label, f"{100 * metrics[key]:.1f}"] for key, label in names.items()]
    return (format_table(["metric", "%"], four) + "\n\n"
            + format_table(["class", "IU %", "acc %"], metrics_table_rows(metrics)))
