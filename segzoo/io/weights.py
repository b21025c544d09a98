"""Whole-model weights: which layout a file is in, and loading it into a built model.

Two layouts are segzoo's own, recognised from their keys, never from the file name:

- ``segzoo-checkpoint``: a file written by :func:`segzoo.save_model` (format "segzoo-model", recipe inside);
- ``segzoo``: a plain state dict of a segzoo model (keys ``backbone.*`` and ``head.*``).

Any other layout is a plugin's :class:`~segzoo.core.recipe.WeightLayout` (the FCN plugin's ``torchfcn``,
the published FCN weights), passed in by :mod:`segzoo.api`. A file that does not fit the model raises a
:class:`CheckpointError` listing the keys missing, unexpected and of the wrong shape, named in the file's
own vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError, InputError
from ..core.layers import convolutionalize_state_dict, widen_input_conv, widen_normalization
from ..core.model import SegmentationModel
from ..core.recipe import WeightLayout
from .checkpoint import FORMAT, read_state_dict, state_dict_of

LIST = 8  # keys shown per kind of difference


def detect_format(obj: Any, layouts: Mapping[str, WeightLayout] | None = None) -> str:
    """``segzoo-checkpoint``, ``segzoo`` or a layout's name for a loaded file's object; '' when none fits."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return "segzoo-checkpoint"
    try:
        state = state_dict_of(obj, "?")
    except CheckpointError:
        return ""
    if state and all(k.startswith(("backbone.", "head.")) for k in state):
        return "segzoo"
    return next((name for name, layout in (layouts or {}).items() if layout.detect(state)), "")


def apply_weights(model: SegmentationModel, obj: Any, path: str | os.PathLike[str],
                  layouts: Mapping[str, WeightLayout] | None = None) -> str:
    """Load an already-read file's object into ``model`` in place; ``path`` names the file in errors.

    Returns the layout it was in. ``layouts`` are the foreign layouts the registry knows.
    """
    layouts = layouts or {}
    fmt = detect_format(obj, layouts)
    if not fmt:
        keys = sorted(state_dict_of(obj, path))[:LIST] if isinstance(obj, dict) else type(obj).__name__
        known = "".join(f", or {name} ({layout.description})" for name, layout in layouts.items())
        raise CheckpointError(
            f"{path}: unknown weights layout (first keys {keys}); expected a segzoo checkpoint (save_model), a segzoo "
            f"state dict (backbone.*, head.*){known}; for ImageNet classifier weights use backbone_weights="
        )
    state = state_dict_of(obj, path)
    if fmt in layouts:
        state = layouts[fmt].to_model(model, state, str(path))
    else:
        hint = _checkpoint_hint(model, obj) if fmt == "segzoo-checkpoint" else ""
        check_fits(model.state_dict(), state, path, fmt, hint)
    model.load_state_dict(state)
    return fmt


def check_fits(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path: Any, fmt: str,
               hint: str = "", what: str = "this model") -> None:
    """Raise a :class:`CheckpointError` listing the keys ``found`` (a file's) lacks, adds, or holds in
    another shape than ``expected``, named in the file's vocabulary; ``hint`` ends the message with the fix.

    The one key check of segzoo: whole models, backbones and plugins' conversions all use it.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in sorted(expected) if k in found and found[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{kind} {_listed(keys)}" for kind, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)) if keys]
        raise CheckpointError(f"{path} ({fmt} layout) does not fit {what}: {'; '.join(parts)}{hint}")


def load_fitting(module: nn.Module, state: Mapping[str, torch.Tensor], path: Any, fmt: str, hint: str = "",
                 what: str = "this backbone") -> None:
    """:func:`check_fits` against ``module``'s own keys, then load: how a backbone factory takes converted weights."""
    check_fits(module.state_dict(), state, path, fmt, hint, what)
    module.load_state_dict(dict(state))


def load_classifier_weights(module: nn.Module, path: str | os.PathLike[str], layouts: Mapping[str, tuple[str, str]],
                            fc6_in_channels: int, fc6_kernel: int) -> str:
    """Load an ImageNet classifier's weights file into a convolutionalized backbone (fc6/fc7 as convs).

    ``layouts`` are the backbone plugin's own (see :func:`segzoo.core.layers.convolutionalize_state_dict`).
    Returns the layout found; a file that does not fit raises a :class:`CheckpointError` listing what differs.
    """
    hint = "; is it the right architecture?"
    try:
        state, layout = convolutionalize_state_dict(read_state_dict(path), layouts, fc6_in_channels, fc6_kernel)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} does not fit this backbone: {exc.args[0]}{hint}") from exc
    load_fitting(module, state, path, layout, hint)
    return layout


def build_convolutionalized(make: Callable[[int], nn.Module], name: str, weights: str | os.PathLike[str] | None,
                            in_chans: int, layouts: Mapping[str, tuple[str, str]], fc6_in_channels: int,
                            fc6_kernel: int, imagenet: Callable[[], str]) -> nn.Module:
    """A convolutionalized classifier (``make(channels)``, first conv ``features[0]``) with its ImageNet weights.

    ``weights`` is a local classifier file, ``"imagenet"`` (``imagenet()`` names the file, e.g. from torch hub's
    cache) or None. Those weights are RGB: the net is built for 3 channels, loaded, and only then is its first
    conv widened to ``in_chans`` as timm's ``adapt_input_conv`` does (and the normalization with it).
    """
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise InputError(f"backbone '{name}': in_chans must be a positive integer, got {in_chans!r}")
    model = make(3 if weights else in_chans)
    if weights == "imagenet":
        weights = imagenet()
    if weights:
        load_classifier_weights(model, weights, layouts, fc6_in_channels, fc6_kernel)
        model.features[0] = widen_input_conv(model.features[0], in_chans)
        model.normalization = widen_normalization(model.normalization, in_chans)
    return model


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - LIST} more)" if len(keys) > LIST else ""
    return f"{keys[:LIST]}{more}"


def _checkpoint_hint(model: SegmentationModel, ckpt: dict[str, Any]) -> str:
    recipe = ckpt.get("recipe")
    theirs: dict[str, Any] = recipe if isinstance(recipe, dict) else {}
    a = (theirs.get("backbone"), theirs.get("head"), theirs.get("geometry") or "modern")
    b = (model.recipe.backbone, model.recipe.head, model.recipe.geometry)
    if a == b:
        return ""
    return (f"; the file holds {a[0]}-{a[1]} in geometry '{a[2]}', the model is {b[0]}-{b[1]} "
            f"in geometry '{b[2]}': use segzoo.load_model(path)")


__all__ = ["LIST", "apply_weights", "build_convolutionalized", "check_fits", "detect_format",
           "load_classifier_weights", "load_fitting", "read_state_dict"]
