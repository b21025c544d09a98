"""torch.hub entry points: every model segzoo lists, by its name with ``-`` written ``_``.

    model = torch.hub.load("path/to/segzoo", "vgg16_fcn8s", source="local", num_classes=21)
    model = torch.hub.load("path/to/segzoo", "vgg16_fcn8s", source="local", backbone_weights="DEFAULT")
    model = torch.hub.load("path/to/segzoo", "load", "hf-hub:org/name", source="local")  # a saved model

Each entry is :func:`segzoo.create_model` of that name, with its keyword arguments (``num_classes``,
``backbone_weights``, ``backbone_kwargs``, ``head_kwargs``, ``geometry``, ``weights``); ``load`` is
:func:`segzoo.load_model` (a checkpoint, a URL, a save_pretrained folder or ``hf-hub:org/name``). The names
come from the registry, so a model a plugin adds is an entry point too. segzoo must be installed
(``pip install segzoo``): its built-in models register through the package's entry points.
"""

from __future__ import annotations

from typing import Any

import segzoo

dependencies = ["torch", "torchvision", "timm", "pluggy", "yaml"]


def _entry(name: str) -> Any:
    def build(**kwargs: Any) -> segzoo.SegmentationModel:
        return segzoo.create_model(name, **kwargs)

    build.__name__ = name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"segzoo.create_model({name!r}, **kwargs): see segzoo.create_model for the arguments."
    return build


def load(source: str, **kwargs: Any) -> segzoo.SegmentationModel:
    """segzoo.load_model(source): a checkpoint (path or URL), a save_pretrained folder, or ``hf-hub:org/name``."""
    return segzoo.load_model(source, **kwargs)


for _name in segzoo.list_models():
    _built = _entry(_name)
    globals()[_built.__name__] = _built
