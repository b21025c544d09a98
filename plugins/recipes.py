"""Named recipes from ``registry.yaml``, registered through the same hook any plugin would use."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from segzoo import hookimpl
from segzoo.core.errors import PluginError

DEFAULT = Path(__file__).with_name("registry.yaml")


def read_recipes(path: str | os.PathLike[str]) -> dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    recipes = data.get("recipes")
    if not isinstance(recipes, dict):
        raise PluginError(f"{path} must hold a mapping 'recipes: {{name: {{backbone: ..., head: ...}}}}'")
    return recipes


@hookimpl
def segzoo_register_recipes(registrar):
    for name, recipe in read_recipes(os.environ.get("SEGZOO_REGISTRY", DEFAULT)).items():
        registrar.recipe(name, recipe)
