"""The paper's training presets, as data: the values the papers state, resolved per model."""

from __future__ import annotations

from pathlib import Path

import pytest

from segzoo.errors import SegzooError, UnknownNameError
from segzoo.presets import PRESETS, list_presets, training_preset


def test_heavy_is_the_reference_solvers():
    p = training_preset("paper-heavy", "vgg16-fcn32s")
    assert (p["batch_size"], p["loss_reduction"], p["momentum"], p["weight_decay"]) == (1, "sum", 0.99, 5e-4)
    assert p["head_kwargs"] == {"learnable_upsampling": False}
    lrs = {h: training_preset("paper-heavy", f"vgg16-{h}")["lr"] for h in ("fcn32s", "fcn16s", "fcn8s")}
    assert lrs == {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}
    assert training_preset("paper-heavy", "vgg16-fcn8s-atonce")["init_from"] is None  # at once: from VGG16


def test_cvpr_is_the_papers_optimisation():
    p = training_preset("paper-cvpr", "vgg16-fcn32s")
    assert (p["batch_size"], p["loss_reduction"], p["momentum"], p["lr"]) == (20, "mean", 0.9, 1e-4)
    assert p["zero_init_scores"] and p["fixed_final_upsampling"] and p["head_kwargs"]["learnable_upsampling"]
    sixteen = training_preset("paper-cvpr", "vgg16-fcn16s")
    assert sixteen["lr"] == pytest.approx(p["lr"] / 100) and sixteen["init_from"] == "fcn32s"
    assert training_preset("paper-cvpr", "alexnet-fcn32s")["lr"] == 1e-3


def test_presets_share_their_fields_and_are_documented():
    fields = [set(p) for p in PRESETS.values()]
    assert all(f == fields[0] for f in fields)
    doc = (Path(__file__).parents[1] / "docs" / "paper.md").read_text()
    assert all(f"`{name}`" in doc for name in list_presets())


def test_unknown_preset_or_head_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="Did you mean: paper-heavy"):
        training_preset("paper-hevy", "vgg16-fcn8s")
    with pytest.raises(SegzooError, match="not for 'vgg16-fcn4s'"):
        training_preset("paper-cvpr", "vgg16-fcn4s")
