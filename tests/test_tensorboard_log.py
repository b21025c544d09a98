"""TensorBoard logs: scalars per epoch and validation predictions as images; a clear error without tensorboard."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from segzoo.core.errors import SegzooError
from segzoo.train import TrainConfig, train
from segzoo.train import tensorboard_log as logs


class FakeWriter:
    def __init__(self):
        self.scalars, self.images, self.closed = [], [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image, step, dataformats))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_a_run_logs_scalars_and_predictions(tmp_path, demo_data, monkeypatch):
    writer = FakeWriter()
    monkeypatch.setattr(logs, "make_writer", lambda folder, purge_step: writer)
    train(tiny(tmp_path, demo_data), log=lambda _: None)
    tags = {tag for tag, _, step in writer.scalars if step == 1}
    assert {"train/loss", "train/lr", "val/mean_iu", "val/pixel_acc"} <= tags
    assert [(t, img.shape, img.dtype, fmt) for t, img, _, fmt in writer.images] == [
        (f"val/prediction_{i}", (64, 192, 3), np.uint8, "HWC") for i in range(3)]  # image | label | prediction
    assert writer.closed


def tiny(tmp_path, demo_data, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "alexnet-fcn32s", "backbone_kwargs": {"fc_channels": 32}, "input_size": 64,
                          "batch_size": 8, "scale": (1.0, 1.0), "progress": False, "device": "cpu", "epochs": 1,
                          "data": str(demo_data), "out_dir": str(tmp_path / "run"), "tensorboard": True, **kw})


def test_a_resumed_run_hides_the_events_of_the_epochs_it_trains_again(tmp_path, demo_data, monkeypatch):
    """A run stopped after epoch 2 with last.pt at epoch 1 logged epoch 2 to TensorBoard; resumed, it trains epoch 2
    again, so its writer purges the events from step 2 on (TensorBoard's purge_step), as metrics.csv is cut back."""
    purges = []
    monkeypatch.setattr(logs, "make_writer", lambda folder, purge_step: purges.append(purge_step) or FakeWriter())
    train(tiny(tmp_path, demo_data, val_split=None), log=lambda _: None)
    train(tiny(tmp_path, demo_data, val_split=None, epochs=2, resume=True), log=lambda _: None)
    assert purges == [None, 2]


def test_the_real_writer_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    log = logs.TensorBoardLog(tmp_path / "tb")
    log.epoch({"epoch": 1, "train_loss": 0.5, "lr": 0.1, "val": {"mean_iu": 0.3}})
    log.predictions(1, [(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8), np.zeros((8, 8), np.uint8))])
    log.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_without_tensorboard_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(SegzooError, match=r"pip install 'segzoo\[tb\]'"):
        logs.make_writer(tmp_path)
