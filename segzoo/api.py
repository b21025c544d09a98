"""The public functions, over one process-wide registry filled from plugins on first use."""

from __future__ import annotations

from typing import Any

from .model import SegmentationModel
from .registry import Registry

_REGISTRY: Registry | None = None


def get_registry(reload: bool = False, **load_options: Any) -> Registry:
    """The shared registry; ``reload=True`` (with ``disabled=``/``external=`` options) loads plugins anew."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        from .plugins import load_plugins

        _REGISTRY = load_plugins(**load_options)
    return _REGISTRY


def create_model(
    name: str,
    num_classes: int | None = None,
    backbone_weights: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    head_kwargs: dict[str, Any] | None = None,
    geometry: str | None = None,
    weights: str | None = None,
) -> SegmentationModel:
    """Build ``<backbone>-<head>`` (or a named recipe), e.g. ``create_model("vgg16-fcn8s", num_classes=21)``.

    ``backbone_weights`` is a local ImageNet classification state dict (torchvision or timm layout);
    nothing is ever downloaded. ``geometry`` is "modern" (the default, or the recipe's) or "caffe", the
    paper's reference nets. ``weights`` is a whole model's weights: a segzoo checkpoint or state dict,
    or the published FCN weights in torchfcn's layout (with ``geometry="caffe"``), e.g.
    ``create_model("vgg16-fcn8s", geometry="caffe", weights="fcn8s_from_caffe.pth")``.
    """
    return get_registry().create_model(name, num_classes, backbone_weights, backbone_kwargs, head_kwargs,
                                       geometry, weights)


def list_models(pattern: str = "*") -> list[str]:
    """Every composable model name matching a shell-style wildcard, e.g. ``list_models("*fcn8s")``."""
    return get_registry().list_models(pattern)


def list_backbones(pattern: str = "*") -> list[str]:
    import fnmatch

    return [n for n in get_registry().names("backbone") if fnmatch.fnmatchcase(n, pattern)]


def list_heads(pattern: str = "*") -> list[str]:
    import fnmatch

    return [n for n in get_registry().names("head") if fnmatch.fnmatchcase(n, pattern)]
