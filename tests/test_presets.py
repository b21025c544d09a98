"""Training presets as data: registered by a plugin, resolved per model by segzoo.train.presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import segzoo
from segzoo.core.errors import SegzooError, UnknownNameError
from segzoo.train.presets import preset_help, resolve_preset


def test_heavy_is_the_reference_solvers():
    p = resolve_preset("paper-heavy", "vgg16-fcn32s")
    assert (p["batch_size"], p["loss_reduction"], p["momentum"], p["weight_decay"]) == (1, "sum", 0.99, 5e-4)
    assert p["head_kwargs"] == {"learnable_upsampling": False, "fixed_final_upsampling": True,
                                "zero_init_scores": True}
    lrs = {h: resolve_preset("paper-heavy", f"vgg16-{h}")["lr"] for h in ("fcn32s", "fcn16s", "fcn8s")}
    assert lrs == {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}
    assert resolve_preset("paper-heavy", "vgg16-fcn8s-atonce")["init_from"] is None  # at once: from VGG16


def test_cvpr_is_the_papers_optimisation():
    p = resolve_preset("paper-cvpr", "vgg16-fcn32s")
    assert (p["batch_size"], p["loss_reduction"], p["momentum"], p["lr"]) == (20, "mean", 0.9, 1e-4)
    assert p["head_kwargs"]["zero_init_scores"] and p["head_kwargs"]["fixed_final_upsampling"]
    assert p["head_kwargs"]["learnable_upsampling"]
    sixteen = resolve_preset("paper-cvpr", "vgg16-fcn16s")
    # the coarser model comes from the head's declared parent, through the registry
    assert sixteen["lr"] == pytest.approx(p["lr"] / 100) and sixteen["init_from"] == "vgg16-fcn32s"
    assert resolve_preset("paper-cvpr", "alexnet-fcn32s")["lr"] == 1e-3


def test_every_registered_preset_is_documented_and_in_help():
    registry = segzoo.get_registry()
    doc = (Path(__file__).parents[1] / "docs" / "paper.md").read_text()
    names = registry.names("preset")
    assert names and all(isinstance(registry.preset(n), segzoo.Preset) for n in names)
    assert all(f"`{name}`" in doc for name in names if registry.entries["preset"][name].dist.startswith("segzoo "))
    assert all(name in preset_help() for name in names)


def test_a_preset_cannot_be_changed_by_a_caller():
    preset = segzoo.get_registry().preset("paper-cvpr")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.staged = False


def test_unknown_preset_or_head_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="Did you mean: paper-heavy"):
        resolve_preset("paper-hevy", "vgg16-fcn8s")
    with pytest.raises(SegzooError, match="not for 'vgg16-fcn4s'"):
        resolve_preset("paper-cvpr", "vgg16-fcn4s")
