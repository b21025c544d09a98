"""The loss hook: plugins register losses (Dice, focal...) that training uses by name; cross-entropy is built in."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import segzoo
import segzoo.api
from segzoo.core.batch import Batch
from segzoo.core.errors import PluginError, SegzooError, UnknownNameError
from segzoo.train import TrainConfig, cross_entropy, make_loss, train
from segzoo.zoo.loader import load_plugins

CALLS: list[dict] = []


def toy_focal(weight=None, ignore_index=255, gamma=2.0):
    """A focal loss, as a third-party plugin would register it."""
    CALLS.append({"gamma": gamma, "weight": weight})

    def loss(scores, batch):
        target = batch.mask
        ce = F.cross_entropy(scores, target, weight=weight, ignore_index=ignore_index, reduction="none")
        valid = target != ignore_index
        return ((1 - torch.exp(-ce)) ** gamma * ce)[valid].mean()

    return loss


def plugin_module(sees_batch=True, **losses) -> types.ModuleType:
    module = types.ModuleType("toy_losses")

    @segzoo.hookimpl
    def segzoo_register_losses(registrar):
        for name, factory in losses.items():
            registrar.loss(name, factory, sees_batch=sees_batch)

    module.segzoo_register_losses = segzoo_register_losses
    return module


@pytest.fixture
def toy_registry(monkeypatch):
    registry = load_plugins(extra=[("toy-losses", plugin_module(focal=toy_focal, vector=lambda: lambda s, t: s))])
    monkeypatch.setattr(segzoo.api, "_REGISTRY", registry)
    CALLS.clear()
    return registry


def test_a_plugin_loss_trains_a_step(tmp_path, demo_data, toy_registry):
    assert toy_registry.loss("focal").source == "plugin 'toy-losses' (<in-process>)"
    cfg = TrainConfig(model="alexnet-fcn32s", backbone_kwargs={"fc_channels": 32}, input_size=64, batch_size=8,
                      scale=(1.0, 1.0), progress=False, device="cpu", val_split=None, epochs=1,
                      data=str(demo_data), out_dir=str(tmp_path / "run"), loss="focal", loss_kwargs={"gamma": 1.0},
                      class_weights=[1, 2, 2, 2, 2, 2])
    result = train(cfg, log=lambda _: None)
    assert CALLS and CALLS[0]["gamma"] == 1.0 and CALLS[0]["weight"].tolist() == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert result.history[0].train_loss > 0


def test_segzoo_list_shows_the_losses(toy_registry, capsys):
    from segzoo.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "losses (3)" in out and "cross-entropy" in out and "A focal loss" in out


def test_the_builtin_is_cross_entropy_and_plugin_losses_are_checked(toy_registry):
    scores, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    batch = Batch.from_masks(target)
    assert torch.equal(make_loss()(scores, batch), cross_entropy(scores, target))
    with pytest.raises(SegzooError, match="built-in cross-entropy takes no options"):
        make_loss(options={"gamma": 2})
    with pytest.raises(SegzooError, match="loss 'focal' .* takes no reduction, so it cannot honour --loss sum"):
        make_loss("focal", reduction="sum")
    with pytest.raises(SegzooError, match="does not take the options given"):
        make_loss("focal", options={"alpha": 1})
    with pytest.raises(PluginError, match=r"loss 'vector' .* returned \(2, 3, 4, 4\), not a scalar"):
        make_loss("vector")(scores, batch)
    with pytest.raises(UnknownNameError, match=r"unknown loss 'focall'\. Did you mean: focal"):
        make_loss("focall")


def test_a_plugin_may_not_take_the_builtin_name():
    registry = load_plugins(extra=[("bad-losses", plugin_module(**{"cross-entropy": toy_focal}))])
    record = next(r for r in registry.plugins if r.name == "bad-losses")
    assert record.status == "failed" and "segzoo's built-in cross-entropy" in record.error


def test_a_loss_in_the_old_form_warns_and_sees_only_the_masked_samples(monkeypatch):
    """The 0.1 form loss(scores, target) keeps working for one minor version, with a DeprecationWarning naming the
    new form; it is handed the samples that carry a mask, and a graph-keeping zero when none does."""
    seen = []

    def old(ignore_index=255):
        return lambda scores, target: seen.append((scores.shape[0], target.clone())) or scores.mean()

    with pytest.warns(DeprecationWarning, match=r"loss 'old' .*sees_batch=True.*removed in segzoo 0\.3"):
        registry = load_plugins(extra=[("old-losses", plugin_module(sees_batch=False, old=old))])
    monkeypatch.setattr(segzoo.api, "_REGISTRY", registry)
    loss = make_loss("old")
    scores = torch.randn(3, 2, 4, 4, requires_grad=True)
    mask = torch.randint(0, 2, (3, 4, 4))
    loss(scores, Batch(mask, torch.tensor([True, False, True]), torch.ones(3, 2)))
    assert seen[0][0] == 2 and torch.equal(seen[0][1], mask[[0, 2]])
    zero = loss(scores, Batch(torch.full((3, 4, 4), 255), torch.zeros(3, dtype=torch.bool), torch.ones(3, 2)))
    assert len(seen) == 1 and zero.item() == 0.0 and zero.requires_grad


def test_a_loss_in_the_new_form_sees_the_whole_batch(monkeypatch):
    seen = []

    def aware():
        return lambda scores, batch: seen.append(batch) or scores.mean()

    registry = load_plugins(extra=[("aware-losses", plugin_module(aware=aware))])
    monkeypatch.setattr(segzoo.api, "_REGISTRY", registry)
    batch = Batch(torch.zeros(2, 4, 4, dtype=torch.long), torch.tensor([True, False]), torch.tensor([[1., 0], [1, 1]]))
    make_loss("aware")(torch.randn(2, 2, 4, 4), batch)
    assert seen == [batch] and batch.counts() == {"mask": 1, "image": 1}
