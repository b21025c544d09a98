"""Resolving a training preset (registered by a plugin, e.g. the paper's ``paper-cvpr``) for one model.

A preset is data (:class:`segzoo.Preset`); the FCN plugin registers the paper's two. ``TrainConfig(preset=...)``
(``segzoo train --preset``) fills a run's unset settings from :func:`resolve_preset`'s answer.
"""

from __future__ import annotations

from typing import Any

from ..api import get_registry
from ..core.errors import SegzooError


def resolve_preset(name: str, model: str, need_lr: bool = True) -> dict[str, Any]:
    """A preset's settings for one model name (``vgg16-fcn16s``): ``lr`` is the one number for that model,
    ``head_kwargs`` its head options and ``init_from`` the coarser model it is fine-tuned from (or None).

    A model the preset has no learning rate for is an error, unless ``need_lr`` is False (the caller has
    its own learning rate); its ``lr`` is None then.
    """
    registry = get_registry()
    preset = registry.preset(name)
    if not model and not need_lr:  # settings shared by several models (a study's): nothing per model
        return {**preset.settings, "lr": None, "head_kwargs": dict(preset.head_kwargs), "init_from": None}
    head = registry.resolve(model).head
    lr = preset.lr_for(model, head)
    if lr is None and need_lr:
        raise SegzooError(
            f"preset '{name}' defines learning rates for heads {sorted(preset.lr)} only, not for "
            f"'{model}'; pass the learning rate yourself (--lr, or lr= in a config)"
        )
    return {**preset.settings, "lr": lr, "head_kwargs": dict(preset.head_kwargs),
            "init_from": registry.parent_model(model) if preset.staged else None}


def preset_help() -> str:
    """One line per registered preset, for ``--help``."""
    registry = get_registry()
    return "; ".join(f"{n} ({registry.preset(n).description})" for n in registry.names("preset"))
