"""hubconf.py: torch.hub.load(repo_dir, "<model>", source="local") builds every model segzoo lists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import segzoo

ROOT = Path(__file__).parents[1]
REGISTRY = segzoo.get_registry()
NARROW = {"fc_channels": 16}


def hubconf():
    spec = importlib.util.spec_from_file_location("segzoo_hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_listed_model_is_an_entry_point_and_torch_hub_can_check_the_dependencies():
    module = hubconf()
    for name in segzoo.list_models():
        assert callable(getattr(module, name.replace("-", "_"))), name
    assert {"torch", "timm"} <= set(module.dependencies)


@pytest.mark.parametrize("name", REGISTRY.names("recipe"))
def test_torch_hub_load_builds_every_recipe(name):
    backbone = REGISTRY.resolve(name).backbone
    options = {"backbone_kwargs": NARROW} if backbone in ("vgg16", "alexnet") else {}
    model = torch.hub.load(str(ROOT), name.replace("-", "_"), source="local", num_classes=3, **options)
    assert isinstance(model, segzoo.SegmentationModel) and model.recipe.name == name and model.num_classes == 3


def test_torch_hub_load_of_a_saved_model(tmp_path):
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs=NARROW)
    segzoo.save_model(model, tmp_path / "m.pt")
    back = torch.hub.load(str(ROOT), "load", str(tmp_path / "m.pt"), source="local")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
