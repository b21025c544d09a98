"""``--class-weights auto``: median-frequency balancing, counted once from the training split, cached, printed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segzoo.cli import main
from segzoo.core.errors import SegzooError
from segzoo.data import open_dataset
from segzoo.train import TrainConfig, train
from segzoo.train.class_weights import CACHE, auto_class_weights, median_frequency, pixel_counts

TINY = {"model": "alexnet-fcn32s", "backbone_kwargs": {"fc_channels": 32}, "input_size": 64, "batch_size": 8,
        "scale": (1.0, 1.0), "progress": False, "device": "cpu", "val_split": None, "epochs": 1}


def test_median_frequency_weights():
    # freq = class pixels / labelled pixels of the images holding the class: 0.1, 0.3, absent, 0.1 -> median 0.1
    weights = median_frequency(np.array([10, 30, 0, 5]), np.array([100, 100, 0, 50]))
    assert weights == pytest.approx([1.0, 1 / 3, 0.0, 1.0])
    with pytest.raises(SegzooError, match="no labelled pixel"):
        median_frequency(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))


def test_counts_skip_void_and_the_cache_is_reused_only_for_the_same_source(tmp_path, demo_data):
    ds = open_dataset(demo_data, "train")
    pixels, seen_in = pixel_counts(ds)
    masks = [ds.load(i)[1] for i in range(len(ds))]
    assert pixels.sum() == sum(int((m != 255).sum()) for m in masks)
    assert pixels[0] == sum(int((m == 0).sum()) for m in masks)
    lines: list[str] = []
    source = {"data": str(demo_data), "split": "train", "label_map": None}
    first = auto_class_weights(ds, tmp_path, source, log=lines.append)
    assert first == pytest.approx(median_frequency(pixels, seen_in))
    assert "counted over 8 training images" in lines[-1] and "background" in lines[-1]
    assert json.loads((tmp_path / CACHE).read_text())["pixels"] == pixels.tolist()
    assert auto_class_weights(ds, tmp_path, source, log=lines.append) == first and "read from" in lines[-1]
    auto_class_weights(ds, tmp_path, {**source, "split": "val"}, log=lines.append)  # another source: counted again
    assert "counted over" in lines[-1]


def test_training_with_auto_weights_uses_and_prints_them(tmp_path, demo_data, capsys):
    lines: list[str] = []
    result = train(TrainConfig(**TINY, data=str(demo_data), out_dir=str(tmp_path / "run"), class_weights="auto"),
                   log=lines.append)
    cached = json.loads((tmp_path / "run" / CACHE).read_text())
    assert any(line.startswith("class weights (median frequency") for line in lines)
    assert len(cached["weights"]) == 6 and result.files_written  # the run went through
    stored = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]
    assert stored["class_weights"] == "auto"  # a resumed run reads the cache again
    with pytest.raises(SegzooError, match="give 'auto'"):
        TrainConfig(model="alexnet-fcn32s", class_weights="balanced").check()
    assert main(["train", "--data", str(demo_data), "--class-weights", "auto", "--print-config"]) == 0
    assert "class_weights: auto" in capsys.readouterr().out
