"""What a run reports: one typed record per epoch, and the result of a whole run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class EpochRecord:
    """One epoch of a run: a line of metrics.jsonl, a row of metrics.csv, an entry of the checkpoint's history.

    ``val`` holds the validation metrics (segzoo.train.metrics.summarize's dict) of an epoch that was
    validated, else None. The counts by kind of label are written only for an epoch that had image-labelled
    samples, so a run from masks alone logs as it always has.
    """

    epoch: int
    step: int
    train_loss: float
    lr: float
    images_per_s: float
    time_s: float
    images: int
    skipped: int = 0
    val: dict[str, Any] | None = None
    mask_samples: int = 0  # of ``images``, those with a pixel mask
    image_samples: int = 0  # of ``images``, those with image-level labels only (docs/weak-labels.md)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, without ``val`` when the epoch was not validated (as metrics.jsonl has always read)."""
        d = dataclasses.asdict(self)
        if d["val"] is None:
            del d["val"]
        if not d["image_samples"]:
            del d["mask_samples"], d["image_samples"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochRecord:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# metrics.csv: the record's numbers and the validation metrics people plot
CSV_FIELDS = ("epoch", "step", "train_loss", "lr", "images_per_s", "time_s",
              "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "skipped")


@dataclass
class TrainResult:
    """What a run produced; ``history`` has one record per epoch (the lines of metrics.jsonl)."""

    out_dir: Path
    history: list[EpochRecord]
    final_metrics: dict[str, Any] | None
    best_metrics: dict[str, Any] | None
    best_epoch: int | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    initial_metrics: dict[str, Any] | None = None
    stopped_early: bool = False  # stopped by stop_at_step, to be resumed
    files_written: list[Path] = field(default_factory=list)
    model: torch.nn.Module | None = None
    rank: int = 0  # this process's rank under torchrun; only rank 0 writes (and the CLI prints)
    stop_reason: str | None = None  # why a run ended before its last epoch (early stopping), as logged
