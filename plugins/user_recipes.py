"""Recipes from the YAML file that ``SEGZOO_REGISTRY`` names, in ``registry.yaml``'s layout.

A plugin of its own, so that a file that cannot be read, is not a recipe mapping or redefines one of segzoo's
recipes is reported by name (``segzoo plugins``: ``plugin 'user-recipes' ... failed: ...``) while segzoo's own
recipes and every other plugin load. It adds names, and never silently replaces a built-in one: a recipe that
repeats a built-in one exactly is skipped, one that changes it is refused.
"""

from __future__ import annotations

import os

from segzoo import hookimpl
from segzoo.core.errors import PluginError

from .recipes import DEFAULT, read_recipes


@hookimpl
def segzoo_register_recipes(registrar):
    path = os.environ.get("SEGZOO_REGISTRY")
    if not path:
        return
    builtin = read_recipes(DEFAULT)
    for name, recipe in read_recipes(path).items():
        if builtin.get(name) == recipe:  # a copy of registry.yaml, or of one of its entries
            continue
        if name in builtin:
            raise PluginError(f"the recipe '{name}' in SEGZOO_REGISTRY={path} redefines segzoo's built-in recipe of "
                              "that name; give yours another name (the built-in ones stay as they are)")
        registrar.recipe(name, recipe)
