"""The contracts between backbones and heads, and the one model class that composes them.

A backbone maps an image to feature maps keyed by *output stride* (4, 8, 16, 32, ...), and says
what it returns in ``feature_info`` (like timm's ``features_only``: channels and reduction per
level). A head takes that dict and the input's size and returns N x C x H x W class scores. Neither
knows the other's layer names, which is what lets any backbone pair with any head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batch import Window
from .errors import GeometryError, InputError, PluginError
from .recipe import Recipe
from .tracing import tracing

# A label map holds one class index per pixel; this value means "not labelled": no loss, no metric.
IGNORE_INDEX = 255

# How an RGB image with values in [0, 1] becomes the network's input:
#   x = image * scale; if bgr: reverse the channels; x = (x - mean) / std   (mean/std in x's channel order)
# ImageNet weights (torchvision, timm) use the default; the Caffe-era FCN weights use
# {"mean": [104.00699, 116.66877, 122.67892], "std": [1, 1, 1], "scale": 255.0, "bgr": True}.
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1.0, "bgr": False}
CAFFE_NORM = {"mean": [104.00699, 116.66877, 122.67892], "std": [1.0, 1.0, 1.0], "scale": 255.0, "bgr": True}

# How a backbone and head lay out their grids. "modern": ceil-mode pools, padded convs, features
# aligned at the top-left and replicate-padded upsampling (segzoo's default). "caffe": the paper's
# reference nets (conv1 padded by 100, unpadded fc6 and transposed convs, crops at derived offsets),
# in which the published FCN weights were trained. Factories receive ``geometry=`` when it is not "modern".
GEOMETRIES = ("modern", "caffe")


def check_geometry(owner: str, geometry: str, supported: tuple[str, ...] = GEOMETRIES, hint: str = "") -> str:
    """A factory's guard: the geometry back, or an error naming what ``owner`` supports."""
    if geometry not in supported:
        known = "" if geometry in GEOMETRIES else f" (segzoo knows {list(GEOMETRIES)})"
        raise GeometryError(f"{owner} has no geometry {geometry!r}{known}; it supports {list(supported)}{hint}")
    return geometry


@dataclass(frozen=True)
class FeatureInfo:
    """One feature level a backbone returns: its output stride, channel count and grid offset.

    ``offset`` says where the grid lies on the input, in input pixels: cell j is centred at
    ``stride * j + (stride - 1) / 2 + offset``. 0 is the top-left-aligned grid of the modern geometry
    (cell j covers pixels stride*j .. stride*j+stride-1); the paper's pad-100 VGG16 has -99 at its
    pools. Heads that crop like Caffe's crop layer derive their offsets from it.
    """

    stride: int
    channels: int
    offset: float = 0.0

    @property
    def centre(self) -> float:
        """The input coordinate of cell 0's centre (Caffe's coord_map offset)."""
        return (self.stride - 1) / 2 + self.offset


class Backbone(nn.Module):
    """Base class for encoders. ``forward(x)`` returns ``{stride: tensor}`` for every level in ``feature_info``.

    Subclasses set ``feature_info`` and may override ``min_input_size`` (smallest H and W they take)
    and ``normalization`` (how images must be scaled for their weights).
    """

    feature_info: list[FeatureInfo]
    min_input_size: int = 32
    normalization: dict[str, Any] = IMAGENET_NORM

    def check_size(self, height: int, width: int) -> None:
        """Raise an InputError, naming the nearest sizes it takes, for an input size this backbone's geometry
        cannot take (U-Net's valid encoder: every 2x2 pool needs an even map); any size at or above
        ``min_input_size`` by default. Models call it before the first layer runs; the contract checks use it."""

    def channels(self) -> dict[int, int]:
        return {f.stride: f.channels for f in self.feature_info}

    def strides(self) -> list[int]:
        return [f.stride for f in self.feature_info]


class Head(nn.Module):
    """Base class for decoders. ``forward(features, size)`` returns N x C x size[0] x size[1] scores.

    ``strides`` lists the feature strides the head reads, coarsest first (for a head registered with a
    :class:`Strides` rule, the ones the rule picked from its backbone). A head whose scores cover only a
    centred window of the input (valid convolutions, as the original U-Net) overrides :meth:`output_window`
    and returns scores of that window's size; trainer, metrics, tiles and export read it from there.
    """

    strides: tuple[int, ...]
    num_classes: int

    def output_window(self, size: tuple[int, int]) -> Window:
        """Where this head's scores lie on an input of ``size`` (height, width): all of it, by default. A head with
        valid convolutions (the original U-Net) returns the centred window its scores cover, and refuses with an
        InputError a size its geometry cannot take, naming the nearest ones it can."""
        return Window.full(*size)


@dataclass(frozen=True)
class Strides:
    """The strides a head reads, as a rule over the backbone's levels rather than a fixed tuple.

    ``Strides.every(min=4)`` reads every level the backbone has with a stride of 4 or coarser (smp's Unet adapts
    to its encoder's depth this way); ``max`` bounds it from above, ``levels`` is the fewest levels it needs and
    ``required`` the strides that must be among them. The registry checks a backbone against the rule before
    building, suggests heads that fit, and checks that the built head's ``strides`` are :meth:`select`'s.
    """

    min: int = 1
    max: int | None = None
    levels: int = 1
    required: tuple[int, ...] = ()

    @classmethod
    def every(cls, min: int = 1, max: int | None = None, levels: int = 1,  # noqa: A002 - the rule's own words
              required: tuple[int, ...] | list[int] = ()) -> Strides:
        """Every level the backbone has from stride ``max`` (or its coarsest) down to stride ``min``."""
        return cls(min, max, levels, tuple(required))

    def __post_init__(self) -> None:
        ints = [self.min, self.levels, *self.required, *([] if self.max is None else [self.max])]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in ints) or (
                self.max is not None and self.max < self.min):
            raise PluginError(f"a Strides rule takes whole numbers >= 1 with min <= max; got {self!r}")

    def select(self, info: list[FeatureInfo]) -> tuple[int, ...]:
        """The strides this rule reads on a backbone with ``info``, coarsest first."""
        have = {f.stride for f in info}
        return tuple(sorted((s for s in have if s >= self.min and (self.max is None or s <= self.max)),
                            reverse=True))

    def fits(self, info: list[FeatureInfo]) -> bool:
        chosen = self.select(info)
        return len(chosen) >= self.levels and set(self.required) <= set(chosen)

    def __str__(self) -> str:
        top = "every level" if self.max is None else f"every level from stride {self.max}"
        needs = [f"at least {self.levels}"] if self.levels > 1 else []
        needs += [f"stride {', '.join(map(str, self.required))} among them"] if self.required else []
        return f"{top} down to stride {self.min}" + (f" ({'; '.join(needs)})" if needs else "")


def head_reads(declared: tuple[int, ...] | Strides, info: list[FeatureInfo]) -> tuple[int, ...] | None:
    """The strides a head declared as ``declared`` (a fixed tuple or a :class:`Strides` rule) reads on a backbone
    with ``info``, coarsest first; ``None`` when that backbone does not have what it needs."""
    if isinstance(declared, Strides):
        return declared.select(info) if declared.fits(info) else None
    return tuple(declared) if set(declared) <= {f.stride for f in info} else None


def describe_strides(declared: tuple[int, ...] | Strides) -> str:
    """How ``segzoo list`` and error messages say what a head reads."""
    return str(declared) if isinstance(declared, Strides) else f"strides {', '.join(map(str, declared))}"


def check_head_fits(head_name: str, strides: tuple[int, ...] | Strides, info: list[FeatureInfo], backbone_name: str,
                    alternatives: tuple[str, ...] | list[str] = ()) -> None:
    """Fail at build time, not at the first forward, when a head needs a stride the backbone lacks.

    ``alternatives`` are heads that would fit (the registry knows them); the failed head is never suggested.
    """
    if head_reads(strides, info) is not None:
        return
    have = {f.stride for f in info}
    fits = [h for h in alternatives if h != head_name]
    fix = (f"pick a head that reads only those strides: {', '.join(fits[:4])}" if fits
           else "no registered head reads only those strides")
    if isinstance(strides, Strides):
        raise InputError(f"head '{head_name}' reads {strides}, but backbone '{backbone_name}' provides "
                         f"{sorted(have)}; {fix}")
    missing = [s for s in strides if s not in have]
    raise InputError(
        f"head '{head_name}' fuses features at strides {list(strides)}, but backbone '{backbone_name}' "
        f"provides only {sorted(have)} (missing {missing}); {fix}"
    )


class SegmentationModel(nn.Module):
    """``backbone`` + ``head``: an image batch in, per-class scores of the same H x W out (or of the centred
    window :meth:`output_window` declares, for valid-convolution models).

    ``recipe`` (a :class:`~segzoo.core.recipe.Recipe`) is the plain-data description (names, classes,
    options) that rebuilds this model; checkpoints store it beside the weights. Without one, the model
    is described by its classes' names (it can run and train, but not be saved by name).
    """

    def __init__(self, backbone: Backbone, head: Head, recipe: Recipe | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.recipe = recipe if recipe is not None else Recipe(
            backbone=type(backbone).__name__.lower(), head=type(head).__name__.lower(),
            num_classes=int(getattr(head, "num_classes", 1) or 1))
        self._checked = False

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def normalization(self) -> dict[str, Any]:
        return dict(self.recipe.normalization or self.backbone.normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        features = self.backbone(x)
        # until an input large enough to tell a wrong stride (then never again); a tracer skips the checks,
        # whose size comparisons would fix the traced graph to the example's size
        if not self._checked and not tracing():
            self._checked = self.check_features(features, (x.shape[-2], x.shape[-1]))
            out = self.head(features, x.shape[-2:])
            self.check_output(out, x)
            return out
        return self.head(features, x.shape[-2:])

    def output_window(self, height: int, width: int) -> Window:
        """Where the scores for an input of ``height`` x ``width`` lie on it: the whole input for same-size
        models, a centred window for valid-convolution ones (the head declares it). Labels are cropped to it."""
        size = (int(height), int(width))
        return self.head.output_window(size) if isinstance(self.head, Head) else Window.full(*size)

    def check_output(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """The head's scores have the input's N, the model's classes and the output window's H x W, or the plugin
        is named."""
        window = self.output_window(x.shape[-2], x.shape[-1])
        want = (x.shape[0], self.num_classes, window.height, window.width)
        if tuple(out.shape) != want:
            declared = "" if window.is_full(x.shape[-2], x.shape[-1]) else f" (its declared output window {window})"
            raise PluginError(
                f"head '{self.recipe.head}' from plugin '{self.recipe.head_plugin or '?'}' "
                f"({self.recipe.head_dist or '?'}) returned scores of shape {tuple(out.shape)} for an input of "
                f"{tuple(x.shape)}; a head must return N x num_classes x H x W at the size it is given"
                f"{declared}, or declare a smaller centred window with Head.output_window")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise InputError(f"expected a batch N x C x H x W, got a tensor of shape {tuple(x.shape)}; "
                             "add a batch dimension with x[None]")
        h, w = x.shape[-2:]
        low = self.backbone.min_input_size
        if h < low or w < low:
            name = self.recipe.backbone
            raise InputError(
                f"input {h}x{w} is smaller than backbone '{name}' takes: the minimum is {low}x{low}; "
                "resize or pad the image"
            )
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):  # a tracer's sizes are symbols
            self.backbone.check_size(int(h), int(w))

    def check_features(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> bool:
        """Forward calls :func:`check_maps` (so ``segzoo build`` does) until an input decides; see there."""
        r = self.recipe
        return check_maps(list(self.backbone.feature_info), features, size, f"backbone '{r.backbone}' from plugin "
                          f"'{r.backbone_plugin or '?'}' ({r.backbone_dist or '?'})",
                          r.backbone_dist.split(" ")[0] or "DIST_OR_MODULE")


def check_maps(info: list[FeatureInfo], features: dict[int, torch.Tensor], size: tuple[int, int], owner: str,
               dist: str = "DIST_OR_MODULE") -> bool:
    """Compare what a backbone returned for an input of ``size`` with what it declared, and blame ``owner``.

    The one check of a backbone's maps, at a model's first forward and in ``check-plugin``: every declared
    stride is returned, with the declared channels, and its map has the size the declared grid gives
    (:func:`grid_fits`). Returns whether the input was large enough for the sizes to tell a stride from its
    half or double (:func:`grid_decides`); until one is, a model checks again at later forwards.
    """
    for f in info:
        got = features.get(f.stride)
        if got is None:
            raise PluginError(f"{owner} declares stride {f.stride} but returned strides {sorted(features)}; its "
                              "feature_info must match its forward()")
        if got.shape[1] != f.channels:
            raise PluginError(f"{owner} declares {f.channels} channels at stride {f.stride} but returned "
                              f"{got.shape[1]}; its feature_info must match its forward()")
    maps = [tuple(features[f.stride].shape[-2:]) for f in info]
    wrong = [(f, m) for f, m in zip(info, maps) if not all(grid_fits(c, n, f) for c, n in zip(m, size))]
    if wrong:
        seen = [f"{observed_stride(m, size, f):.1f}".removesuffix(".0") for f, m in zip(info, maps)]
        should = "; ".join(f"stride {f.stride} gives about {_cells(size[0], f)}x{_cells(size[1], f)}"
                           for f, _ in wrong)
        raise PluginError(
            f"{owner} declares strides {[f.stride for f in info]} but for a {size[0]}x{size[1]} input returned maps "
            f"of {', '.join(f'{h}x{w}' for h, w in maps)}, i.e. strides about [{', '.join(seen)}] ({should}); its "
            f"feature_info must match its forward(): declare the stride each level has (and FeatureInfo.offset "
            f"where padding moves its grid); 'segzoo check-plugin {dist}' checks it at several sizes"
        )
    return all(grid_decides(n, f) for f in info for n in size)


def expected_cells(n: int, f: FeatureInfo) -> float:
    """How many cells the map at ``f``'s stride has along an input side of ``n`` pixels, by its declared grid.

    The grid covers the input plus the margin its offset says lies outside it on each side (the paper's
    pad-100 VGG16 has offset -99 at its pools, so a 64-pixel side gives (64 + 198) / 16 cells at stride 16).
    """
    return (n - 2 * f.offset) / f.stride


def grid_fits(cells: int, n: int, f: FeatureInfo) -> bool:
    """Whether a map of ``cells`` along an ``n``-pixel side can come from the declared stride and offset.

    Rounding (ceil- or floor-mode layers, one-sided padding) moves a map less than one cell from
    :func:`expected_cells`; every built-in backbone, in both geometries, is within that. Another cell, or a
    quarter of the map where that is more, is left for padding a backbone does not declare in its offset.
    A map at half or twice the declared stride, however it rounds, is outside that band once the declared
    map has 8 cells (:func:`grid_decides`; a finer one from 3); below that the check may not tell them apart.
    """
    expected = expected_cells(n, f)
    return abs(cells - expected) < 1 + max(1.0, expected / 4)


def grid_decides(n: int, f: FeatureInfo) -> bool:
    """Whether :func:`grid_fits` on an ``n``-pixel side rejects a map at half or twice the declared stride."""
    return expected_cells(n, f) >= 8


def observed_stride(cells: tuple[int, int], size: tuple[int, int], f: FeatureInfo) -> float:
    """The stride a map of ``cells`` suggests for an input of ``size``, on the level's declared offset."""
    ratios = [(n - 2 * f.offset) / max(c, 1) for c, n in zip(cells, size)]
    return sum(ratios) / len(ratios)


def _cells(n: int, f: FeatureInfo) -> str:
    return f"{expected_cells(n, f):.0f}"
