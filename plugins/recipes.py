"""segzoo's named recipes from ``registry.yaml``, registered through the same hook any plugin would use.

A user's own recipe file (``SEGZOO_REGISTRY``) is the ``user-recipes`` plugin (:mod:`segzoo_plugins.user_recipes`),
so that a broken file is reported by name while these load.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from segzoo import hookimpl
from segzoo.core.errors import PluginError
from segzoo.core.files import read_text_file

DEFAULT = Path(__file__).with_name("registry.yaml")


def read_recipes(path: str | os.PathLike[str]) -> dict[str, dict]:
    text = read_text_file(path, "recipe registry (SEGZOO_REGISTRY)", PluginError)  # a pipe would block forever
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PluginError(f"{path} is not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    recipes = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(recipes, dict):
        raise PluginError(f"{path} must hold a mapping 'recipes: {{name: {{backbone: ..., head: ...}}}}'")
    return recipes


@hookimpl
def segzoo_register_recipes(registrar):
    for name, recipe in read_recipes(DEFAULT).items():
        registrar.recipe(name, recipe)
