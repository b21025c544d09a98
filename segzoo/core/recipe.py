"""Plain-data records the registry hands around: a model :class:`Recipe`, a training :class:`Preset`, and a
whole-model :class:`WeightLayout`. Each is frozen, so what a plugin registered cannot be changed by a caller;
``replace`` makes a changed copy.

Words: a **recipe** is a named model (registry.yaml: backbone, head, classes, input size, options); a
**preset** is a named set of training settings (the paper's ``paper-cvpr``); a **weight layout** is a foreign
way of naming a whole model's weights (torchfcn's) with its conversion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SegzooError

# The input a model is summarised and benchmarked at when neither the user nor its recipe says: the
# paper's PASCAL VOC images are at most 500x500.
DEFAULT_INPUT_SIZE = (3, 500, 500)


@dataclass(frozen=True)
class Recipe:
    """Everything that rebuilds a model: checkpoints store :meth:`to_dict` beside the weights.

    ``backbone_weights`` is an ImageNet classifier file for the backbone's factory, ``weights`` a whole
    model's weights file; both are applied by :func:`segzoo.create_model`, never by the registry.
    The ``*_plugin``/``*_dist`` fields record where the parts came from, so a checkpoint whose plugin is
    missing can say which distribution to install.
    """

    backbone: str
    head: str
    name: str = ""
    num_classes: int = 21
    input_size: tuple[int, int, int] | None = None
    backbone_weights: str | None = None
    weights: str | None = None
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    head_kwargs: Mapping[str, Any] = field(default_factory=dict)
    geometry: str = "modern"
    normalization: Mapping[str, Any] | None = None
    class_names: tuple[str, ...] | None = None
    description: str = ""
    backbone_plugin: str = ""
    backbone_dist: str = ""
    head_plugin: str = ""
    head_dist: str = ""

    def __post_init__(self) -> None:
        for key in ("backbone", "head"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise SegzooError(f"a recipe's {key} must be a registered name, got {getattr(self, key)!r}")
        n = self.num_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SegzooError(f"num_classes must be a positive integer, got {n!r}")
        for key in ("backbone_kwargs", "head_kwargs"):
            if not isinstance(getattr(self, key), Mapping):
                raise SegzooError(f"a recipe's {key} must be a mapping of option names to values, "
                                  f"got {type(getattr(self, key)).__name__}")
        if self.input_size is not None:
            size = tuple(self.input_size)
            if len(size) != 3 or not all(isinstance(d, int) and d > 0 for d in size):
                raise SegzooError(f"a recipe's input_size must be [C, H, W] of positive integers, "
                                  f"got {self.input_size!r}")
            object.__setattr__(self, "input_size", size)
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not all(isinstance(c, str) for c in names):
                raise SegzooError(f"a recipe's class_names must be a list of strings, got {names!r}")
            object.__setattr__(self, "class_names", tuple(names))
        if self.normalization is not None:
            _check_normalization(self.normalization)
        if not self.name:
            object.__setattr__(self, "name", f"{self.backbone}-{self.head}")

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, strings, numbers): what a checkpoint stores and ``weights_only`` reads."""
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        d["backbone_kwargs"], d["head_kwargs"] = dict(self.backbone_kwargs), dict(self.head_kwargs)
        d["normalization"] = dict(self.normalization) if self.normalization else None
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "recipe") -> Recipe:
        """A recipe from plain data (registry.yaml, a checkpoint); anything else is one :class:`SegzooError`."""
        if not isinstance(d, Mapping):
            raise SegzooError(f"{where} must be a mapping of recipe fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, d)) - known)
        if unknown or not {"backbone", "head"} <= set(d):
            raise SegzooError(f"{where} needs 'backbone' and 'head' and may only use {sorted(known)}; got {sorted(d)}")
        try:
            return cls(**{k: v for k, v in d.items() if v is not None or k in ("input_size", "class_names")})
        except TypeError as exc:
            raise SegzooError(f"{where} is malformed: {exc}") from None


def _check_normalization(norm: Any) -> None:
    """mean and std of one finite number per channel, every std > 0 (a 0 would divide the image into inf/NaN
    and every prediction would be garbage, silently)."""
    if not isinstance(norm, Mapping):
        raise SegzooError(f"a recipe's normalization must be a mapping with 'mean' and 'std', got {norm!r:.60}")
    mean, std = norm.get("mean"), norm.get("std")
    numbers = (int, float)
    ok = (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) >= 1
          and all(isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v) for v in (*mean, *std)))
    if not ok:
        raise SegzooError(f"a recipe's normalization needs 'mean' and 'std' lists of finite numbers, one per channel; "
                          f"got mean {mean!r:.60}, std {std!r:.60}")
    assert isinstance(std, (list, tuple))  # for the type checker: ok said so
    if min(std) <= 0:
        raise SegzooError(f"a recipe's normalization has std {list(std)}: every std must be > 0 (a 0 divides by zero)")
    scale = norm.get("scale", 1.0)
    if not isinstance(scale, numbers) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise SegzooError(f"a recipe's normalization scale must be a finite number > 0, got {scale!r:.60}")


@dataclass(frozen=True)
class Preset:
    """A named set of training settings (``segzoo train --preset NAME``), registered by a plugin.

    ``settings`` are :class:`segzoo.train.TrainConfig` fields (batch_size, loss_reduction, optimizer,
    momentum, weight_decay, geometry, ...) that fill the settings a run leaves unset. ``lr`` gives the
    learning rate by head name and ``lr_by_model`` by model name (which wins). ``head_kwargs`` go under
    the run's own head options. ``staged`` says the preset fine-tunes each head from its coarser parent
    (declared when the head is registered), as the paper trains FCN-16s from FCN-32s.
    """

    description: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    lr: Mapping[str, float] = field(default_factory=dict)
    lr_by_model: Mapping[str, float] = field(default_factory=dict)
    head_kwargs: Mapping[str, Any] = field(default_factory=dict)
    staged: bool = False

    def lr_for(self, model: str, head: str) -> float | None:
        """This preset's learning rate for one model, or None when it has none."""
        return self.lr_by_model.get(model, self.lr.get(head))


@dataclass(frozen=True)
class WeightLayout:
    """A foreign layout of a whole model's weights (e.g. the published FCN weights' names), with its conversion.

    ``detect(state)`` says whether a state dict is in this layout (by its keys). ``to_model(model, state,
    path)`` returns the state renamed to ``model``'s keys, raising :class:`~segzoo.errors.CheckpointError`
    (listing what differs) when it does not fit. ``from_model(model)`` is the inverse, if the layout has
    one. ``build_options(state)`` gives the :func:`segzoo.create_model` keyword arguments a file of this
    layout needs (classes, geometry, backbone options), for ``segzoo convert``.
    """

    detect: Callable[[Mapping[str, Any]], bool]
    to_model: Callable[[Any, dict[str, Any], str], dict[str, Any]]
    from_model: Callable[[Any], dict[str, Any]] | None = None
    build_options: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    description: str = ""
