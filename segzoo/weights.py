"""Whole-model weights: which layout a file is in, loading it into a built model, converting it.

Three layouts are recognised from their keys, never from the file name:

- ``segzoo-checkpoint``: a file written by :func:`segzoo.save_model` (format "segzoo-model", recipe inside);
- ``segzoo``: a plain state dict of a segzoo model (keys ``backbone.*`` and ``head.*``);
- ``torchfcn``: the published FCN weights converted from Caffe, as distributed for the PyTorch port
  (keys ``conv1_1.weight`` ... ``fc7.*``, ``score_fr.*``, ``score_pool4.*``, ``upscore2.weight`` ...).
  They belong to the paper's geometry (``geometry="caffe"``) and to BGR 0-255 input minus the Caffe
  mean, which the caffe-geometry backbones put in the recipe's normalization.

A file that does not fit the model raises a :class:`CheckpointError` listing the keys missing,
unexpected and of the wrong shape, named in the file's own vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import FORMAT, safe_load, save_model, state_dict_of
from .errors import CheckpointError
from .model import SegmentationModel

# torchfcn's names for VGG16's 13 convs, in order, and for the FCN head's layers (segzoo module -> torchfcn).
VGG16_CONVS = tuple(f"conv{block}_{i}" for block, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1))
TORCHFCN_HEAD = {
    "backbone.fc6": "fc6", "backbone.fc7": "fc7", "head.score_fr": "score_fr",
    "head.score_skip.16": "score_pool4", "head.score_skip.8": "score_pool3",
    "head.upscore_skip.16": "upscore2", "head.upscore_skip.8": "upscore_pool4",
}
TORCHFCN_FINAL = {32: "upscore", 16: "upscore16", 8: "upscore8"}  # the last upsampling, by the head's finest stride
TORCHFCN_HEADS = {"upscore8": "fcn8s", "upscore16": "fcn16s", "upscore": "fcn32s"}  # how a file shows its head
LIST = 8  # keys shown per kind of difference


def detect_format(obj: Any) -> str:
    """``segzoo-checkpoint``, ``segzoo`` or ``torchfcn`` for a loaded file's object; '' when none fits."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return "segzoo-checkpoint"
    try:
        keys = set(state_dict_of(obj, "?"))
    except CheckpointError:
        return ""
    if keys and all(k.startswith(("backbone.", "head.")) for k in keys):
        return "segzoo"
    if {"conv1_1.weight", "score_fr.weight"} <= keys:
        return "torchfcn"
    return ""


def load_weights(model: SegmentationModel, path: str | os.PathLike[str]) -> str:
    """Load a whole model's weights file into ``model`` in place; returns the layout it was in."""
    return apply_weights(model, safe_load(path), path)


def apply_weights(model: SegmentationModel, obj: Any, path: str | os.PathLike[str]) -> str:
    """Load an already-read file's object into ``model``; ``path`` names the file in errors."""
    fmt = detect_format(obj)
    if not fmt:
        keys = sorted(state_dict_of(obj, path))[:LIST] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: unknown weights layout (first keys {keys}); expected a segzoo checkpoint (save_model), a segzoo "
            "state dict (backbone.*, head.*) or torchfcn's FCN weights (conv1_1.*, score_fr.*); for ImageNet "
            "classifier weights use backbone_weights="
        )
    state = state_dict_of(obj, path)
    if fmt == "torchfcn":
        state = from_torchfcn(model, state, path)
    else:
        hint = _checkpoint_hint(model, obj) if fmt == "segzoo-checkpoint" else ""
        check_fits(model.state_dict(), state, path, fmt, hint)
    model.load_state_dict(state)
    return fmt


def from_torchfcn(model: SegmentationModel, state: dict[str, torch.Tensor],
                  path: str | os.PathLike[str] = "weights") -> dict[str, torch.Tensor]:
    """torchfcn's state dict renamed to ``model``'s keys, after checking that every key and shape fits."""
    geometry = model.recipe.get("geometry", "modern")
    if geometry != "caffe":
        raise CheckpointError(
            f"{path} holds torchfcn's FCN weights, which belong to the paper's geometry, but the model was built "
            f"with geometry '{geometry}'; build it with geometry='caffe' (segzoo convert --from torchfcn does)"
        )
    names = torchfcn_names(model)
    own = model.state_dict()
    expected = {names[k]: v for k, v in own.items()}
    check_fits(expected, state, path, "torchfcn", _torchfcn_hint(model, state))
    return {k: state[names[k]] for k in own}


def torchfcn_names(model: SegmentationModel) -> dict[str, str]:
    """segzoo key -> torchfcn key for every weight of a caffe-geometry VGG16 FCN-32s, -16s or -8s (at once too)."""
    features = getattr(model.backbone, "features", None)
    convs = [n for n, m in features.named_children() if isinstance(m, nn.Conv2d)] if features is not None else []
    strides = tuple(getattr(model.head, "strides", ()))
    if len(convs) != len(VGG16_CONVS) or not strides or strides[-1] not in TORCHFCN_FINAL \
            or not set(strides) <= set(TORCHFCN_FINAL):
        raise CheckpointError(
            f"torchfcn's weights are VGG16 FCN-32s, -16s or -8s; '{model.recipe.get('name', '?')}' is not one of "
            "them: build vgg16-fcn32s, vgg16-fcn16s, vgg16-fcn8s or vgg16-fcn8s-atonce"
        )
    modules = {f"backbone.features.{i}": name for i, name in zip(convs, VGG16_CONVS)}
    modules.update(TORCHFCN_HEAD, **{"head.upscore": TORCHFCN_FINAL[strides[-1]]})
    names = {}
    for key in model.state_dict():
        module, _, param = key.rpartition(".")
        if module not in modules:
            raise CheckpointError(f"'{key}' of this model has no counterpart in torchfcn's layout")
        names[key] = f"{modules[module]}.{param}"
    return names


def to_torchfcn(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """The model's weights in torchfcn's layout (the inverse of :func:`from_torchfcn`)."""
    names = torchfcn_names(model)
    return {names[k]: v.detach().clone() for k, v in model.state_dict().items()}


def convert(src: str | os.PathLike[str], model_name: str, out: str | os.PathLike[str], source: str = "torchfcn",
            num_classes: int | None = None) -> SegmentationModel:
    """Convert a foreign weights file into a segzoo checkpoint (weights + recipe) that loads with no flags.

    ``num_classes`` defaults to what the file scores (torchfcn: the rows of ``score_fr``), and the
    width of fc6/fc7 is the file's (4096 in the published weights).
    """
    from .api import create_model

    if source != "torchfcn":
        raise CheckpointError(f"cannot convert from {source!r}: the known source layouts are ['torchfcn']")
    obj = safe_load(src)
    fmt = detect_format(obj)
    if fmt != "torchfcn":
        found = f"it is a {fmt} file, which loads as it is" if fmt else "it has no conv1_1.weight/score_fr.weight"
        raise CheckpointError(f"{src} is not in torchfcn's layout: {found}")
    state = state_dict_of(obj, src)
    n = num_classes if num_classes is not None else int(state["score_fr.weight"].shape[0])
    fc = state.get("fc7.weight")
    kwargs = {"fc_channels": int(fc.shape[0])} if fc is not None else {}
    model = create_model(model_name, num_classes=n, geometry="caffe", backbone_kwargs=kwargs)
    model.load_state_dict(from_torchfcn(model, state, src))
    save_model(model, out, converted_from={"path": str(Path(src).resolve()), "layout": source})
    return model


def check_fits(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Any, fmt: str,
               hint: str = "", what: str = "this model") -> None:
    """Raise a :class:`CheckpointError` listing the keys ``found`` (a file's) lacks, adds, or holds in
    another shape than ``expected``, named in the file's vocabulary; ``hint`` ends the message with the fix."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in sorted(expected) if k in found and found[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{what} {_listed(keys)}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong)) if keys]
        raise CheckpointError(f"{path} ({fmt} layout) does not fit {what}: {'; '.join(parts)}{hint}")


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - LIST} more)" if len(keys) > LIST else ""
    return f"{keys[:LIST]}{more}"


def _torchfcn_hint(model: SegmentationModel, state: dict[str, torch.Tensor]) -> str:
    hints = []
    final = next((k for k in TORCHFCN_HEADS if f"{k}.weight" in state), None)
    if final and final != TORCHFCN_FINAL[model.head.strides[-1]]:
        head = TORCHFCN_HEADS[final]
        hints.append(f"the file is an FCN-{head[3:]} (its last upsampling is {final}): build vgg16-{head}")
    score = state.get("score_fr.weight")
    if score is not None and score.shape[0] != model.num_classes:
        hints.append(f"it scores {score.shape[0]} classes, not {model.num_classes}: pass num_classes={score.shape[0]}")
    return f"; {'; '.join(hints)}" if hints else ""


def _checkpoint_hint(model: SegmentationModel, ckpt: dict[str, Any]) -> str:
    def describe(recipe: dict[str, Any]) -> tuple[Any, Any, Any]:
        return recipe.get("backbone"), recipe.get("head"), recipe.get("geometry") or "modern"

    theirs, ours = describe(ckpt.get("recipe") or {}), describe(model.recipe)
    if theirs == ours:
        return ""
    return (f"; the file holds {theirs[0]}-{theirs[1]} in geometry '{theirs[2]}', the model is {ours[0]}-{ours[1]} "
            f"in geometry '{ours[2]}': use segzoo.load_model(path)")
