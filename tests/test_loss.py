"""The loss hook: plugins register losses (Dice, focal...) that training uses by name; cross-entropy is built in."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import segzoo
import segzoo.api
from segzoo.core.errors import PluginError, SegzooError, UnknownNameError
from segzoo.train import TrainConfig, cross_entropy, make_loss, train
from segzoo.zoo.loader import load_plugins

CALLS: list[dict] = []


def toy_focal(weight=None, ignore_index=255, gamma=2.0):
    """A focal loss, as a third-party plugin would register it."""
    CALLS.append({"gamma": gamma, "weight": weight})

    def loss(scores, target):
        ce = F.cross_entropy(scores, target, weight=weight, ignore_index=ignore_index, reduction="none")
        valid = target != ignore_index
        return ((1 - torch.exp(-ce)) ** gamma * ce)[valid].mean()

    return loss


def plugin_module(**losses) -> types.ModuleType:
    module = types.ModuleType("toy_losses")

    @segzoo.hookimpl
    def segzoo_register_losses(registrar):
        for name, factory in losses.items():
            registrar.loss(name, factory)

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
    assert torch.equal(make_loss()(scores, target), cross_entropy(scores, target))
    with pytest.raises(SegzooError, match="built-in cross-entropy takes no options"):
        make_loss(options={"gamma": 2})
    with pytest.raises(SegzooError, match="loss 'focal' .* takes no reduction, so it cannot honour --loss sum"):
        make_loss("focal", reduction="sum")
    with pytest.raises(SegzooError, match="does not take the options given"):
        make_loss("focal", options={"alpha": 1})
    with pytest.raises(PluginError, match=r"loss 'vector' .* returned \(2, 3, 4, 4\), not a scalar"):
        make_loss("vector")(scores, target)
    with pytest.raises(UnknownNameError, match=r"unknown loss 'focall'\. Did you mean: focal"):
        make_loss("focall")


def test_a_plugin_may_not_take_the_builtin_name():
    registry = load_plugins(extra=[("bad-losses", plugin_module(**{"cross-entropy": toy_focal}))])
    record = next(r for r in registry.plugins if r.name == "bad-losses")
    assert record.status == "failed" and "segzoo's built-in cross-entropy" in record.error
