"""The one training step: labels cropped to the model's output window, accumulation, divergence, and bench using it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.core.batch import Batch, Window
from segzoo.core.model import Head, SegmentationModel
from segzoo.studies.bench import timing
from segzoo.train.loss import PixelCrossEntropy, cross_entropy
from segzoo.train.runtime import Runtime
from segzoo.train.step import Diverged, TrainStep, to_batch

CPU = Runtime(torch.device("cpu"))


class ValidHead(Head):
    """Scores for the centre of the input only, `margin` pixels in from every side, as valid convolutions give."""

    def __init__(self, feature_info, num_classes, margin=4):
        super().__init__()
        self.strides, self.num_classes, self.margin = (32,), num_classes, margin
        channels = {f.stride: f.channels for f in feature_info}[32]
        self.score = torch.nn.Conv2d(channels, num_classes, 1)

    def output_window(self, size):
        return self.centre(size)

    def centre(self, size):
        return Window.centred(size[0], size[1], size[0] - 2 * self.margin, size[1] - 2 * self.margin)

    def forward(self, features, size):
        scores = F.interpolate(self.score(features[32]), size=tuple(size), mode="bilinear", align_corners=False)
        return self.centre(tuple(size)).crop(scores)


def valid_model(num_classes=3) -> SegmentationModel:
    backbone = segzoo.create_model("alexnet-fcn32s", num_classes=num_classes,
                                   backbone_kwargs={"fc_channels": 8, "dropout": 0.0}).backbone
    return SegmentationModel(backbone, ValidHead(backbone.feature_info, num_classes))


def loader_batch(n=2, size=64, num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, size, size, generator=g),
            "mask": torch.randint(0, num_classes, (n, size, size), generator=g), "index": torch.arange(n),
            "skipped": 0}


def test_the_labels_are_cropped_to_the_window_the_model_declares():
    model = valid_model()
    batch = loader_batch()
    x, targets = to_batch(batch, CPU, model)
    assert model.output_window(64, 64) == Window(4, 4, 56, 56)
    assert torch.equal(targets.mask, batch["mask"][:, 4:60, 4:60]) and targets.has_mask.all()
    assert model(x).shape == (2, 3, 56, 56)  # the model's own output check accepts its window
    plain = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 8})
    assert torch.equal(to_batch(batch, CPU, plain)[1].mask, batch["mask"])  # same-size models: untouched


def test_a_head_whose_output_differs_from_its_declared_window_is_named():
    model = valid_model()
    model.head.output_window = lambda size: Window.full(*size)  # declares all, returns the centre
    with pytest.raises(segzoo.PluginError, match=r"returned scores of shape \(1, 3, 56, 56\)"):
        model(torch.randn(1, 3, 64, 64))


def test_the_step_trains_a_windowed_model_on_the_cropped_labels():
    torch.manual_seed(0)
    model = valid_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, model, PixelCrossEntropy(), optimizer, CPU)
    batch = loader_batch()
    with torch.no_grad():
        expected = cross_entropy(model(batch["image"]), batch["mask"][:, 4:60, 4:60]).item()
    before = model.head.score.weight.clone()
    done = step(batch)
    assert done.loss == pytest.approx(expected, rel=1e-5) and done.images == 2 and done.stepped
    assert done.kinds == {"mask": 2, "image": 0}
    assert not torch.equal(before, model.head.score.weight)


def test_accumulation_steps_only_at_the_group_end():
    model = valid_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, model, PixelCrossEntropy(), optimizer, CPU)
    before = model.head.score.weight.clone()
    assert not step(loader_batch(seed=1), group=2, last=False).stepped
    assert torch.equal(before, model.head.score.weight) and model.head.score.weight.grad is not None
    assert step(loader_batch(seed=2), group=2, last=True).stepped
    assert not torch.equal(before, model.head.score.weight) and model.head.score.weight.grad is None


def test_a_non_finite_loss_is_a_divergence_and_nothing_steps():
    model = valid_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, model, lambda scores, batch: scores.sum() * float("nan"), optimizer, CPU)
    before = model.head.score.weight.clone()
    with pytest.raises(Diverged, match="the loss became nan"):
        step(loader_batch())
    assert torch.equal(before, model.head.score.weight)


def test_a_loss_sees_the_batch_with_its_image_labels():
    model = valid_model()
    seen: list[Batch] = []
    step = TrainStep(model, model, lambda scores, b: seen.append(b) or scores.mean(),
                     torch.optim.SGD(model.parameters(), lr=0.1), CPU)
    batch = {**loader_batch(), "has_mask": torch.tensor([True, False]),
             "image_labels": torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])}
    done = step(batch)
    assert seen[0].image_labels.tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert seen[0].has_mask.tolist() == [True, False] and done.kinds == {"mask": 1, "image": 1}


def test_bench_times_the_trainers_own_step(monkeypatch):
    calls = []
    real = TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, *a, **k: calls.append(self) or real(self, *a, **k))
    model = valid_model()
    run = timing.make_step(model, torch.randn(1, 3, 64, 64), "train", channels_last=False)
    run()
    assert len(calls) == 1 and isinstance(calls[0].criterion, PixelCrossEntropy) and calls[0].model is model
