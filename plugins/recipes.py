"""Named recipes from ``registry.yaml``, registered through the same hook any plugin would use."""

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


def all_recipes() -> dict[str, dict]:
    """The built-in recipes plus those of a ``SEGZOO_REGISTRY`` file, which adds names but never silently
    replaces a built-in one: a built-in name with other contents is a :class:`PluginError` naming it."""
    recipes = read_recipes(DEFAULT)
    user = os.environ.get("SEGZOO_REGISTRY")
    if not user or Path(user) == DEFAULT:
        return recipes
    for name, recipe in read_recipes(user).items():
        if name in recipes and recipes[name] != recipe:
            raise PluginError(f"the recipe '{name}' in SEGZOO_REGISTRY={user} redefines segzoo's built-in recipe of "
                              "that name; give yours another name (the built-in ones stay as they are)")
        recipes[name] = recipe
    return recipes


@hookimpl
def segzoo_register_recipes(registrar):
    for name, recipe in all_recipes().items():
        registrar.recipe(name, recipe)
