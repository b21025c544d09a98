"""segzoo.api: names to models with their weights, and checkpoints back to models."""

from __future__ import annotations

import pytest
import torch

import segzoo
from segzoo.api import build, create_model, load_model, save_model


def tiny(**kw):
    return create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 16}, **kw)


def test_create_model_applies_whole_model_weights_and_records_them(tmp_path):
    src = tiny()
    path = save_model(src, tmp_path / "m.pt")
    again = tiny(weights=path)
    assert again.recipe.weights == str(path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), again.state_dict().values()))


def test_build_of_a_recipe_is_what_create_model_builds():
    model = build(segzoo.Recipe(backbone="alexnet", head="fcn32s", num_classes=4, backbone_kwargs={"fc_channels": 8}))
    assert model.num_classes == 4 and model.recipe.backbone_plugin == "alexnet"
    assert model.recipe.name == "alexnet-fcn32s" and model.recipe.backbone_dist.startswith("segzoo ")


def test_a_checkpoint_whose_plugin_is_missing_names_the_distribution_to_install(tmp_path):
    model = tiny()
    model.recipe = model.recipe.replace(backbone="gone-net", backbone_plugin="gone", backbone_dist="gone-dist 2.1")
    save_model(model, tmp_path / "m.pt")
    with pytest.raises(segzoo.CheckpointError, match=r"made with backbone 'gone-net' from plugin 'gone' \(distribution "
                                                     r"gone-dist 2.1\).*pip install gone-dist"):
        load_model(tmp_path / "m.pt")


def test_a_checkpoint_with_a_malformed_recipe_is_a_checkpoint_error(tmp_path):
    path = save_model(tiny(), tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["recipe"] = "vgg16-fcn8s"
    torch.save(ckpt, path)
    with pytest.raises(segzoo.CheckpointError, match="must be a mapping of recipe fields.*damaged"):
        load_model(path)


def test_presets_and_weight_layouts_are_listed_like_models():
    assert segzoo.list_presets() == sorted(segzoo.list_presets()) and segzoo.list_presets("paper-*")
    assert "torchfcn" in segzoo.get_registry().weight_layouts()
