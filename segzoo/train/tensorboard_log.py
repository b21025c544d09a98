"""TensorBoard logs (``--tensorboard``): scalars per epoch and validation predictions as images.

Optional: ``pip install 'segzoo[tb]'`` (the ``tensorboard`` package); nothing of it is imported until a run asks
for it, and a run that asks without it stops at once with the line that installs it. Event files are
TensorBoard's own append-only logs, in ``<run>/tensorboard`` (``tensorboard --logdir runs`` shows every run). They
are written every epoch, to watch a run live; a resumed run opens them with TensorBoard's ``purge_step`` at the
first epoch it trains, so the events of epochs its checkpoint did not hold (trained again now) are hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import SegzooError
from ..data.io import colorize
from .records import EpochRecord

SCALARS = {"train/loss": "train_loss", "train/lr": "lr", "train/images_per_s": "images_per_s"}
VAL_SCALARS = ("mean_iu", "pixel_acc", "mean_acc", "fw_iu")


def make_writer(folder: Path, purge_step: int | None = None) -> Any:
    """torch's TensorBoard ``SummaryWriter`` on ``folder``, or a SegzooError saying what to install; events at
    ``purge_step`` and later, of an earlier writer, are hidden."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SegzooError("--tensorboard needs the tensorboard package: pip install 'segzoo[tb]' (or pip install "
                          "tensorboard), or leave --tensorboard out; metrics.jsonl and metrics.csv are written "
                          "either way") from None
    return SummaryWriter(str(folder), purge_step=purge_step)


class TensorBoardLog:
    """One run's TensorBoard writer: :meth:`epoch` after every epoch, :meth:`predictions` after a validation."""

    def __init__(self, folder: str | Path, writer: Any = None, purge_step: int | None = None):
        self.folder = Path(folder)
        self.writer = writer if writer is not None else make_writer(self.folder, purge_step)

    def epoch(self, record: EpochRecord | dict[str, Any]) -> None:
        """An epoch's record (a line of metrics.jsonl) as scalars at step = the epoch number."""
        record = record.to_dict() if isinstance(record, EpochRecord) else record
        step = int(record["epoch"])
        for tag, key in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), step)
        for key in VAL_SCALARS:
            if key in record.get("val", {}):
                self.writer.add_scalar(f"val/{key}", float(record["val"][key]), step)
        self.writer.flush()

    def predictions(self, epoch: int, samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Each (image, label, prediction) as one picture: the image, the label and the prediction side by side."""
        for i, (image, label, pred) in enumerate(samples):
            panel = np.concatenate([image, colorize(label), colorize(pred)], axis=1)
            self.writer.add_image(f"val/prediction_{i}", panel, int(epoch), dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
