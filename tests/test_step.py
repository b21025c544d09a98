"""The one training step: labels cropped to the model's output window, accumulation, divergence, and bench using it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.core.batch import Batch, Window
from segzoo.core.model import Head, SegmentationModel
from segzoo.studies.bench import timing
from segzoo.train.loss import PixelCrossEntropy, WithImageLabels, cross_entropy
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


# -- a step over several micro-batches, or ranks, is the step of one batch of all their samples ----------------
def mixed_batch():
    """Two masked samples (void over different areas, so their valid pixels differ) and two image-labelled ones
    (all void, as MixedDataset gives them)."""
    batch = loader_batch(4, seed=3)
    batch["mask"][0, :24] = 255
    batch["mask"][1, :, :6] = 255
    batch["mask"][2:] = 255
    batch["has_mask"] = torch.tensor([True, True, False, False])
    batch["image_labels"] = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    return batch


def take(batch, rows):
    picked = torch.tensor(rows)
    return {k: (v[picked] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def gradients(criterion, parts, with_totals=True):
    """The gradients after one optimiser step's worth of backward passes, the batch split into ``parts``."""
    torch.manual_seed(0)
    model = valid_model()
    step = TrainStep(model, model, criterion, torch.optim.SGD(model.parameters(), lr=0.1), CPU)
    batches = [take(mixed_batch(), rows) for rows in parts]
    totals = step.group_totals(batches) if with_totals else None
    for batch in batches:
        done = step(batch, group=len(parts), last=False, totals=totals)  # last=False: keep the gradients
        assert done.loss == done.loss  # not NaN, whichever kinds the micro-batch lacks
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("parts", [[[0, 2], [1, 3]], [[0, 1], [2, 3]], [[2, 3], [0, 1]], [[0, 1, 3], [2]],
                                   [[0], [1], [2], [3]]])
@pytest.mark.parametrize("class_weight", [None, torch.tensor([0.5, 1.0, 2.0])])
def test_accumulated_micro_batches_of_a_mixed_batch_give_the_whole_batchs_gradient(parts, class_weight):
    """Cross-entropy is a mean over the valid pixels of all the step's masked samples, the image-level loss over
    all its image-labelled ones, whichever micro-batch each falls in; one micro-batch holding only image-labelled
    samples (or only masked ones) included."""
    criterion = WithImageLabels(PixelCrossEntropy(class_weight), 0.7, pool="lse", suppress=0.3)
    whole = gradients(criterion, [[0, 1, 2, 3]])
    split = gradients(criterion, parts)
    for name in whole:
        assert torch.allclose(whole[name], split[name], rtol=1e-5, atol=1e-6), name


def test_a_loss_whose_terms_have_no_norm_is_averaged_over_the_micro_batches():
    """A plugin's loss (one term, nothing known of what it averages) is divided by the group's size, as before;
    so is every term of a group stepped without its totals."""
    criterion = WithImageLabels(PixelCrossEntropy(), 1.0)
    halves = [[0, 2], [1, 3]]
    averaged = gradients(lambda scores, batch: criterion(scores, batch), halves)
    no_totals = gradients(criterion, halves, with_totals=False)
    torch.manual_seed(0)
    model = valid_model()
    for rows in halves:
        batch = take(mixed_batch(), rows)
        x, targets = to_batch(batch, CPU, model)
        (criterion(model(x), targets) / 2).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(averaged[name], p.grad, atol=1e-7) and torch.allclose(no_totals[name], p.grad,
                                                                                     atol=1e-7), name


def test_each_rank_weighs_its_terms_by_its_share_times_the_world_size():
    """Under DDP (which averages gradients over ranks) a rank with 1 of the step's 3 image-labelled samples and
    all of its valid pixels weighs its image term 2 x 1/3 and its pixel term 2 x 1."""
    model = valid_model()
    step = TrainStep(model, model, WithImageLabels(PixelCrossEntropy(), 1.0), torch.optim.SGD(model.parameters()),
                     Runtime(torch.device("cpu"), rank=0, world_size=2))
    batch = take(mixed_batch(), [0, 2])
    pixels = float((batch["mask"][:, 4:60, 4:60] != 255).sum())
    assert step.norms(batch) == [pixels, 1.0]
    assert step.term_weights(batch, 1, [pixels, 3.0]) == pytest.approx([2.0, 2 / 3])
    assert step.term_weights(batch, 1, [pixels, 0.0])[1] == 0.0  # no such sample anywhere: 0, not 0/0
