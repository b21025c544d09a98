"""The public functions, over one process-wide registry filled from plugins on first use.

The one module that knows both the registry (names → parts) and weight files: the registry builds
a randomly initialised model, and this module applies the weights a recipe or a call names.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .core.errors import CheckpointError, UnknownNameError
from .core.files import check_output_path, url_scheme
from .core.model import SegmentationModel
from .core.recipe import Recipe
from .io.checkpoint import read_checkpoint, safe_load, save_model, state_dict_of
from .io.hub import CONFIG_NAME, is_hub_id, read_pretrained
from .io.remote import kind, locate
from .io.weights import apply_weights, detect_format
from .zoo.loader import load_plugins
from .zoo.registry import Registry

_REGISTRY: Registry | None = None


def get_registry(reload: bool = False, **load_options: Any) -> Registry:
    """The shared registry; ``reload=True`` (with ``disabled=``/``external=`` options) loads plugins anew."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_plugins(**load_options)
    return _REGISTRY


def loaded_registry() -> Registry | None:
    """The shared registry if plugins were loaded already, else None (loads nothing)."""
    return _REGISTRY


def create_model(
    name: str,
    num_classes: int | None = None,
    backbone_weights: str | os.PathLike[str] | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    head_kwargs: Mapping[str, Any] | None = None,
    geometry: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
) -> SegmentationModel:
    """Build ``<backbone>-<head>`` (or a named recipe), e.g. ``create_model("vgg16-fcn8s", num_classes=21)``.

    ``backbone_weights`` is a local ImageNet classification state dict (torchvision or timm layout), or
    ``"imagenet"``: the backbone plugin's named ImageNet weights (torchvision's for vgg16/alexnet, timm's
    for ``timm-*``) from the libraries' caches, downloaded once if absent unless ``SEGZOO_OFFLINE=1``
    (see :mod:`segzoo.io.cache`). ``geometry`` is "modern" (the default, or the recipe's) or "caffe", the
    paper's reference nets. ``weights`` is a whole model's weights: a segzoo checkpoint or state dict,
    or a layout a plugin registered (the published FCN weights in torchfcn's layout, with ``geometry="caffe"``),
    e.g. ``create_model("vgg16-fcn8s", geometry="caffe", weights="fcn8s_from_caffe.pth")``. ``registry``
    defaults to the shared one (tests and tools pass their own).
    """
    registry = registry or get_registry()
    recipe = registry.resolve(name)
    changes: dict[str, Any] = {
        "backbone_kwargs": {**recipe.backbone_kwargs, **(backbone_kwargs or {})},
        "head_kwargs": {**recipe.head_kwargs, **(head_kwargs or {})},
    }
    for key, value in (("num_classes", num_classes), ("geometry", geometry),
                       ("backbone_weights", backbone_weights), ("weights", weights)):
        if value is not None:
            changes[key] = str(value) if isinstance(value, os.PathLike) else value
    return build(recipe.replace(**changes), registry)


def build(recipe: Recipe, registry: Registry | None = None) -> SegmentationModel:
    """The model a recipe describes, with the whole-model ``weights`` it names loaded."""
    registry = registry or get_registry()
    model = registry.build(recipe)
    if recipe.weights:
        apply_weights(model, safe_load(recipe.weights), recipe.weights, registry.weight_layouts())
    return model


def load_model(path: str | os.PathLike[str], map_location: Any = "cpu") -> SegmentationModel:
    """Rebuild a saved model from what it was saved as alone.

    ``path`` is a checkpoint of :func:`save_model` (or a trainer's), as a local file or a URL (``s3://``,
    ``memory://``, ``https://``...: :mod:`segzoo.io.remote`), a folder of :func:`segzoo.save_pretrained`, or a
    Hub model ``"hf-hub:org/name"`` (:func:`from_pretrained`).
    """
    if _pretrained_folder(path):
        return from_pretrained(path)
    recipe, ckpt = read_checkpoint(path, map_location=map_location)
    return _rebuild(recipe, ckpt["state_dict"], path)


def from_pretrained(source: str | os.PathLike[str]) -> SegmentationModel:
    """A model from a Hub id (``"hf-hub:org/name"`` or ``"org/name"``, from the Hugging Face cache when there, so
    it works offline once fetched) or a folder (local or URL) written by :func:`segzoo.save_pretrained`."""
    text = os.fspath(source)
    if not is_hub_id(text) and not url_scheme(text) and not Path(text).exists() and text.count("/") == 1:
        text = f"hf-hub:{text}"  # org/name, as huggingface_hub writes repo ids
    recipe, state, _ = read_pretrained(text)
    return _rebuild(recipe, state, text)


def _pretrained_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Hub id or a folder holding config.json (http(s) URLs are files: never probed)."""
    text = os.fspath(path)
    if is_hub_id(text):
        return True
    if url_scheme(text) in ("http", "https"):
        return False
    return kind(locate(text)) == "directory" and kind(locate(f"{text.rstrip('/')}/{CONFIG_NAME}")) == "file"


def _rebuild(recipe: Recipe, state: Any, path: str | os.PathLike[str]) -> SegmentationModel:
    """The model ``recipe`` builds, with ``state`` loaded strictly; a missing plugin names its distribution."""
    try:
        model = get_registry().build(recipe)
    except UnknownNameError as exc:
        made = {"backbone": (recipe.backbone_plugin, recipe.backbone_dist), "head": (recipe.head_plugin,
                                                                                       recipe.head_dist)}
        plugin, dist = made.get(exc.kind, ("", ""))
        if not dist:
            raise
        raise CheckpointError(
            f"{path} was made with {exc.kind} '{exc.name}' from plugin '{plugin}' (distribution {dist}), which is "
            f"not installed or not loaded; install it (pip install {dist.split(' ')[0]}) or enable it") from None
    missing, unexpected = model.load_state_dict(state_dict_of(state, path), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model its recipe builds: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


def convert(src: str | os.PathLike[str], model_name: str, out: str | os.PathLike[str], source: str,
            num_classes: int | None = None, overwrite: bool = True) -> SegmentationModel:
    """Convert a foreign weights file into a segzoo checkpoint (weights + recipe) that loads with no flags.

    ``source`` names a weight layout a plugin registered (the FCN plugin's ``torchfcn``); the layout says which classes,
    geometry and backbone options the file needs, and ``num_classes`` overrides its classes.
    ``overwrite=False`` leaves an existing ``out`` as it is (a :class:`FileExistsError`).
    """
    check_output_path(out, (src,), force=True, error=CheckpointError)  # never its own input, even overwrite=True
    registry = get_registry()
    layout = registry.weight_layout(source)
    obj = safe_load(src)
    fmt = detect_format(obj, registry.weight_layouts())
    if fmt != source:
        found = f"it is a {fmt} file, which loads as it is" if fmt else "its keys fit no known layout"
        raise CheckpointError(f"{src} is not in {source}'s layout: {found}")
    state = state_dict_of(obj, src)
    options = dict(layout.build_options(state)) if layout.build_options else {}
    if num_classes is not None:
        options["num_classes"] = num_classes
    model = create_model(model_name, **options)
    model.load_state_dict(layout.to_model(model, state, str(src)))
    where = os.fspath(src) if url_scheme(src) else str(Path(src).resolve())  # a URL is never made a local path
    save_model(model, out, overwrite=overwrite, converted_from={"path": where, "layout": source})
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Every composable model name matching a shell-style wildcard, e.g. ``list_models("*fcn8s")``."""
    return get_registry().list_models(pattern)


def list_backbones(pattern: str = "*") -> list[str]:
    return [n for n in get_registry().names("backbone") if fnmatch.fnmatchcase(n, pattern)]


def list_heads(pattern: str = "*") -> list[str]:
    return [n for n in get_registry().names("head") if fnmatch.fnmatchcase(n, pattern)]


def list_presets(pattern: str = "*") -> list[str]:
    return [n for n in get_registry().names("preset") if fnmatch.fnmatchcase(n, pattern)]


__all__ = ["build", "convert", "create_model", "from_pretrained", "get_registry", "list_backbones", "list_heads",
           "list_models", "list_presets", "load_model", "loaded_registry", "save_model"]
