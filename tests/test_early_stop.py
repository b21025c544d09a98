"""Early stopping: counted in validations, min_delta, best.pt kept, a line saying why, patience kept on resume."""

from __future__ import annotations

import pytest
import torch

from segzoo.core.errors import SegzooError
from segzoo.train import TrainConfig, train
from segzoo.train.early_stop import EarlyStopping

TINY = {"model": "alexnet-fcn32s", "backbone_kwargs": {"fc_channels": 32}, "input_size": 64, "batch_size": 8,
        "scale": (1.0, 1.0), "progress": False, "device": "cpu"}


def test_counts_validations_without_a_rise_of_more_than_min_delta():
    stop = EarlyStopping(patience=2, min_delta=0.01)
    assert stop.update(0.50, 1) and not stop.should_stop
    assert not stop.update(0.505, 2)  # risen, but not by more than min_delta: the best stays 0.50
    assert stop.best == 0.50 and stop.bad == 1 and not stop.should_stop
    assert stop.update(0.52, 3) and stop.bad == 0 and stop.best_epoch == 3
    stop.update(0.40, 4)
    stop.update(0.51, 5)
    assert stop.should_stop
    assert "stopped early after epoch 5" in stop.reason(5) and "52.0 at epoch 3" in stop.reason(5)
    again = EarlyStopping(patience=3)
    again.load(stop.state())
    assert (again.bad, again.best, again.patience) == (2, 0.52, 3) and not again.should_stop
    assert not EarlyStopping(patience=0, bad=100).should_stop  # 0: never


def test_early_stop_needs_validation():
    with pytest.raises(SegzooError, match="--early-stop 2 watches validation"):
        TrainConfig(model="alexnet-fcn32s", early_stop=2, val_split=None).check()
    with pytest.raises(SegzooError, match="--min-delta must be a finite number >= 0"):
        TrainConfig(model="alexnet-fcn32s", min_delta=-1).check()


def test_run_stops_keeps_best_and_a_resumed_run_keeps_its_patience(tmp_path, demo_data):
    """min_delta 1 (a rise of 100 mean IU points) can never be met: every validation after the first is worse."""
    lines: list[str] = []
    cfg = TrainConfig(**TINY, data=str(demo_data), out_dir=str(tmp_path / "run"), epochs=2, early_stop=2,
                      min_delta=1.0)
    first = train(cfg, log=lines.append)
    assert first.stop_reason is None and len(first.history) == 2  # one bad validation of the two allowed
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["early_stop"]["bad"] == 1
    lines.clear()
    resumed = train(TrainConfig(**{**cfg.to_dict(), "scale": (1.0, 1.0), "epochs": 6, "resume": True}),
                    log=lines.append)
    # the count went on from 1: one more bad validation ends the run (without it, two more would)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert resumed.stop_reason and resumed.stop_reason in lines
    assert "stopped early after epoch 3" in resumed.stop_reason and "best.pt" in resumed.stop_reason
    assert resumed.best_checkpoint.is_file() and resumed.best_epoch == 1
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["early_stop"]["bad"] == 2
    again = train(TrainConfig(**{**cfg.to_dict(), "scale": (1.0, 1.0), "epochs": 6, "resume": True}),
                  log=lines.append)
    assert len(again.history) == 3 and "stopped early" in again.stop_reason  # out of patience: trains no more
