"""The registry: backbones, heads, recipes, presets and weight layouts by name, and composing models.

It knows no concrete backbone or head: everything in it was put there by a plugin through
:mod:`segzoo.core.hookspecs`, and it reads no file (weights are applied by :mod:`segzoo.api`). Names
compose as ``<backbone>-<head>`` (``vgg16-fcn8s``, ``timm-resnet18-fcn16s``); recipes (``registry.yaml``)
name such a composition with defaults.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import GeometryError, PluginError, SegzooError, UnknownNameError
from ..core.model import (
    GEOMETRIES,
    Backbone,
    FeatureInfo,
    Head,
    SegmentationModel,
    Strides,
    check_head_fits,
    head_reads,
)
from ..core.recipe import Preset, Recipe, WeightLayout

KINDS = ("backbone", "head", "recipe", "preset", "weight layout", "loss")
# The loss segzoo trains with by default; it is built in (segzoo.train.loss), the others come from plugins.
BUILTIN_LOSS = "cross-entropy"


@dataclass
class Entry:
    """One registered name and where it came from; a head also carries its declared strides and parent."""

    kind: str
    name: str
    obj: Any  # a factory, a Recipe, a Preset or a WeightLayout
    plugin: str
    dist: str
    description: str = ""
    strides: tuple[int, ...] | Strides = ()  # a fixed tuple, or a rule over the backbone's levels
    parent: str | None = None
    sees_batch: bool = True  # a loss: called as loss(scores, batch) (False: the deprecated loss(scores, target))

    def reads(self, info: list[FeatureInfo]) -> tuple[int, ...] | None:
        """The strides this head reads on a backbone with ``info`` (``None``: it does not fit that backbone)."""
        return head_reads(self.strides, info)

    @property
    def is_family(self) -> bool:
        return self.name.endswith("*")

    @property
    def source(self) -> str:
        return f"plugin '{self.plugin}' ({self.dist})"


@dataclass
class Registrar:
    """What a hook receives: stages one plugin's registrations, committed only if the plugin succeeds."""

    plugin: str
    dist: str
    staged: list[Entry] = field(default_factory=list)

    def backbone(self, name: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add("backbone", name, factory, description)

    def head(self, name: str, factory: Callable[..., Any],
             strides: tuple[int, ...] | list[int] | Strides | None = None, parent: str | None = None,
             description: str = "") -> None:
        """``strides``: the feature strides the head reads, coarsest first, or a rule (``segzoo.Strides.every(min=4)``)
        for a head that adapts to its backbone; ``parent``: its coarser head (staged)."""
        if isinstance(strides, Strides):
            self._add("head", name, factory, description)
            self.staged[-1].strides, self.staged[-1].parent = strides, self._parent(name, parent)
            return
        if strides is None or isinstance(strides, (str, bytes)) or not len(strides) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in strides):
            raise PluginError(f"head '{name}' must declare the strides it reads, coarsest first, e.g. "
                              f"registrar.head({name!r}, factory, strides=(32, 16, 8)), or as a rule for a head "
                              f"that adapts to its backbone, strides=segzoo.Strides.every(min=4); got {strides!r}")
        self._add("head", name, factory, description)
        self.staged[-1].strides, self.staged[-1].parent = tuple(strides), self._parent(name, parent)

    @staticmethod
    def _parent(name: str, parent: str | None) -> str | None:
        if parent is not None and not isinstance(parent, str):
            raise PluginError(f"head '{name}': parent must be the name of the coarser head, got {parent!r}")
        return parent

    def recipe(self, name: str, recipe: Mapping[str, Any] | Recipe) -> None:
        try:
            obj = recipe if isinstance(recipe, Recipe) else Recipe.from_dict({"name": name, **recipe},
                                                                               where=f"recipe '{name}'")
        except SegzooError as exc:
            raise PluginError(str(exc)) from None
        self._add("recipe", name, obj, obj.description)

    def preset(self, name: str, preset: Preset) -> None:
        if not isinstance(preset, Preset):
            raise PluginError(f"preset '{name}' must be a segzoo.Preset, got {type(preset).__name__}")
        self._add("preset", name, preset, preset.description)

    def weight_layout(self, name: str, layout: WeightLayout) -> None:
        if not isinstance(layout, WeightLayout):
            raise PluginError(f"weight layout '{name}' must be a segzoo.WeightLayout, got {type(layout).__name__}")
        self._add("weight layout", name, layout, layout.description)

    def loss(self, name: str, factory: Callable[..., Any], description: str = "", sees_batch: bool = False) -> None:
        """``factory(weight=None, reduction="mean", ignore_index=255, **options)`` -> ``loss(scores, batch)``.

        ``sees_batch=True`` is the current form: the loss gets the scores and a :class:`segzoo.Batch` (masks,
        image-level labels, which kind each sample is). Without it the loss is the 0.1 form ``loss(scores,
        target)``, given only the pixel-labelled samples' masks; that form is deprecated (removed in 0.3).
        """
        if name == BUILTIN_LOSS:
            raise PluginError(f"loss name '{name}' is segzoo's built-in cross-entropy; register yours under "
                              "another name")
        if not sees_batch:
            warnings.warn(f"loss '{name}' from plugin '{self.plugin}' ({self.dist}) is registered in the deprecated "
                          "form loss(scores, target); register it with registrar.loss(name, factory, "
                          "sees_batch=True) and take loss(scores, batch: segzoo.Batch) (batch.mask is the target). "
                          "The old form is removed in segzoo 0.3", DeprecationWarning, stacklevel=2)
        self._add("loss", name, factory, description)
        self.staged[-1].sees_batch = bool(sees_batch)

    def _add(self, kind: str, name: str, obj: Any, description: str) -> None:
        if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
            raise PluginError(f"{kind} name {name!r} must be a non-empty lower-case string without spaces")
        if kind in ("backbone", "head", "loss") and not callable(obj):
            raise PluginError(f"{kind} '{name}' must be registered with a callable factory, got {type(obj).__name__}")
        self.staged.append(Entry(kind, name, obj, self.plugin, self.dist, description or _first_line(obj)))


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) if callable(obj) else None
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


class Registry:
    """Names → factories, recipes, presets and weight layouts, each remembering the plugin that registered it."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.plugins: list[Any] = []  # PluginRecord, filled by segzoo.zoo.loader.load_plugins

    # -- registration -------------------------------------------------------------------------
    def commit(self, registrar: Registrar) -> None:
        """Add a plugin's staged names, all or none: a clash names both sources.

        Two names clash when they are equal, or, for backbones, when one resolves a name the other does:
        a concrete name inside another plugin's family (``timm-resnet34`` and ``timm-*``), a family
        covering another plugin's concrete name, or two families of which one contains the other. A
        plugin may name members of its own family (segzoo's ``timm-*`` lists ``timm-resnet18``).
        """
        seen: dict[tuple[str, str], Entry] = {}
        for e in registrar.staged:
            prior = self.entries[e.kind].get(e.name) or seen.get((e.kind, e.name))
            if prior is not None:
                raise PluginError(
                    f"{e.kind} name '{e.name}' from {e.source} clashes with the one from {prior.source}; "
                    "rename one of them or disable a plugin (SEGZOO_DISABLE_PLUGINS)"
                )
            if e.kind == "backbone":
                for other in self.entries["backbone"].values():
                    if other.source != e.source and _overlap(e.name, other.name):
                        raise PluginError(_family_clash(e, other))
            seen[(e.kind, e.name)] = e
        for e in registrar.staged:
            self.entries[e.kind][e.name] = e

    # -- lookup -------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def model_names(self) -> list[str]:
        """Every recipe plus every composition of a concrete (non-family) backbone with a head."""
        combos = {f"{b}-{h}" for b in self.names("backbone") if not b.endswith("*") for h in self.names("head")}
        return sorted(combos | set(self.entries["recipe"]))

    def list_models(self, pattern: str = "*") -> list[str]:
        return [n for n in self.model_names() if fnmatch.fnmatchcase(n, pattern)]

    def backbone_factory(self, name: str) -> tuple[Callable[..., Any], Entry]:
        entry = self.entries["backbone"].get(name)
        if entry is not None:
            return entry.obj, entry
        for fam in self.entries["backbone"].values():
            prefix = fam.name[:-1]
            if fam.is_family and name.startswith(prefix) and len(name) > len(prefix):
                variant = name[len(prefix):]
                return functools.partial(fam.obj, variant), fam
        raise UnknownNameError("backbone", name, self.names("backbone"))

    def backbone_takes(self, name: str, option: str) -> bool:
        """Whether backbone ``name``'s factory names ``option`` (e.g. ``fc_channels``) in its signature; a factory
        that passes ``**options`` on (timm's) is not counted, since what it takes is decided further down."""
        factory, _ = self.backbone_factory(name)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            return False
        return option in params

    def _entry(self, kind: str, name: str, hint: str | None = None, known: list[str] | None = None) -> Entry:
        """The entry ``kind`` registered as ``name``, or an :class:`UnknownNameError` naming the closest ones."""
        entry = self.entries[kind].get(name)
        if entry is None:
            known = self.names(kind) if known is None else known
            raise UnknownNameError(kind, name, known, *([hint] if hint else []))
        return entry

    def head(self, name: str) -> Entry:
        return self._entry("head", name)

    def preset(self, name: str) -> Preset:
        return self._entry("preset", name, f"the presets are {self.names('preset')}; 'segzoo list' shows them").obj

    def loss(self, name: str) -> Entry:
        """A loss a plugin registered (the built-in cross-entropy is not an entry: segzoo.train.loss has it)."""
        known = [BUILTIN_LOSS, *self.names("loss")]
        return self._entry("loss", name, f"the losses are {known}; a plugin adds one with "
                                         "registrar.loss(name, factory)", known)

    def weight_layouts(self) -> dict[str, WeightLayout]:
        return {name: e.obj for name, e in sorted(self.entries["weight layout"].items())}

    def weight_layout(self, name: str) -> WeightLayout:
        return self._entry("weight layout", name, f"the known layouts are {self.names('weight layout')}").obj

    def _is_backbone(self, name: str) -> bool:
        try:
            self.backbone_factory(name)
        except UnknownNameError:
            return False
        return True

    def fitting_heads(self, info: list[FeatureInfo], exclude: str | None = None) -> list[str]:
        """Heads that read only strides the backbone has (by their tuple or their rule), best first: those reading
        its coarsest level (whose layers then all train), most strides first; ``exclude`` (the head that just
        failed) is never among them."""
        coarsest = max((f.stride for f in info), default=0)
        reads = {e.name: r for e in self.entries["head"].values() if e.name != exclude and (r := e.reads(info))}
        return sorted(reads, key=lambda n: (max(reads[n]) != coarsest, -len(reads[n]), n))

    def resolve(self, name: str) -> Recipe:
        """A model name → its recipe: a registered one, or ``<backbone>-<head>`` with the defaults."""
        if name in self.entries["recipe"]:
            return self.entries["recipe"][name].obj
        # Heads and backbones may both contain '-': try every split, the head being a registered name.
        for head in sorted(self.entries["head"], key=len, reverse=True):
            backbone = name[: -len(head) - 1]
            if name.endswith("-" + head) and backbone and self._is_backbone(backbone):
                return Recipe(backbone=backbone, head=head, name=name)
        raise UnknownNameError("model", name, self.model_names())

    def with_head(self, name: str, head: str) -> str:
        """The model name with another head (``vgg16-fcn16s`` → ``vgg16-fcn32s``), by the registry, not by strings."""
        return f"{self.resolve(name).backbone}-{head}"

    def parent_model(self, name: str) -> str | None:
        """The coarser model ``name`` is fine-tuned from in staged training, from its head's declared parent."""
        parent = self.head(self.resolve(name).head).parent
        return self.with_head(name, parent) if parent else None

    def build(self, recipe: Recipe) -> SegmentationModel:
        """The model a recipe describes, randomly initialised but for its ``backbone_weights`` (the factory's job)."""
        if recipe.geometry not in GEOMETRIES:
            raise UnknownNameError("geometry", recipe.geometry, GEOMETRIES, hint=f"segzoo knows {list(GEOMETRIES)}")
        # Only a non-default geometry is passed, so factories written before geometries existed still work.
        extra = {} if recipe.geometry == "modern" else {"geometry": recipe.geometry}
        make_backbone, b_entry = self.backbone_factory(recipe.backbone)
        h_entry = self.head(recipe.head)
        backbone = call_plugin(b_entry, recipe.backbone, make_backbone, weights=recipe.backbone_weights, **extra,
                                **recipe.backbone_kwargs)
        info = _checked_backbone(backbone, recipe.backbone, b_entry)
        fitting = self.fitting_heads(info, exclude=recipe.head)
        check_head_fits(recipe.head, h_entry.strides, info, recipe.backbone, fitting)
        head = call_plugin(h_entry, recipe.head, h_entry.obj, list(info), recipe.num_classes, **extra,
                            **recipe.head_kwargs)
        _check_head(head, recipe, h_entry, info)
        recipe = recipe.replace(backbone_plugin=b_entry.plugin, head_plugin=h_entry.plugin,
                                backbone_dist=b_entry.dist, head_dist=h_entry.dist,
                                normalization=recipe.normalization or dict(backbone.normalization))
        return SegmentationModel(backbone, head, recipe)


def _checked_backbone(backbone: Any, name: str, entry: Entry) -> list[FeatureInfo]:
    """What a backbone factory returned, checked for what the model needs, blaming the plugin in one line."""
    if not isinstance(backbone, Backbone):
        raise PluginError(f"backbone '{name}' from {entry.source} returned a {type(backbone).__name__}, not a "
                          "segzoo.Backbone; subclass segzoo.Backbone and set feature_info")
    info = getattr(backbone, "feature_info", None)
    if not info or not all(isinstance(f, FeatureInfo) for f in info):
        raise PluginError(f"backbone '{name}' from {entry.source} has no feature_info: set self.feature_info to a "
                          "list of segzoo.FeatureInfo(stride, channels), one per level forward() returns")
    return list(info)


def _check_head(head: Any, recipe: Recipe, entry: Entry, info: list[FeatureInfo]) -> None:
    if not isinstance(head, Head):
        raise PluginError(f"head '{recipe.head}' from {entry.source} returned a {type(head).__name__}, not a "
                          "segzoo.Head")
    strides = tuple(getattr(head, "strides", ()) or ())
    want = entry.reads(info)
    if strides != want:
        rule = f" ({entry.strides}) on this backbone" if isinstance(entry.strides, Strides) else ""
        raise PluginError(f"head '{recipe.head}' from {entry.source} was registered with strides "
                          f"{list(want or ())}{rule} but the head it built has strides "
                          f"{list(strides)}; set self.strides to the strides it reads, as registered")
    if getattr(head, "num_classes", None) != recipe.num_classes:
        raise PluginError(f"head '{recipe.head}' from {entry.source} was asked for {recipe.num_classes} classes but "
                          f"its num_classes is {getattr(head, 'num_classes', None)!r}; set self.num_classes")


def _in_family(name: str, family: str) -> bool:
    """Whether the family ``family`` (``prefix*``) resolves ``name``, which may itself be a family."""
    prefix = family[:-1]
    if name.endswith("*"):
        return name[:-1].startswith(prefix)
    return name.startswith(prefix) and len(name) > len(prefix)


def _overlap(a: str, b: str) -> bool:
    """Whether two different backbone names (concrete or ``prefix*`` families) resolve a name in common."""
    return (b.endswith("*") and _in_family(a, b)) or (a.endswith("*") and _in_family(b, a))


def _family_clash(new: Entry, old: Entry) -> str:
    kind = "family" if new.is_family else "name"
    if old.is_family and _in_family(new.name, old.name):
        why = "which already resolves " + ("its names" if new.is_family else "that name")
    else:
        why = "whose names it would also resolve" if old.is_family else "which it would take over"
    return (f"backbone {kind} '{new.name}' from {new.source} clashes with the {'family' if old.is_family else 'name'} "
            f"'{old.name}' from {old.source}, {why}; rename one of them (prefix yours with your project's name) "
            "or disable a plugin (SEGZOO_DISABLE_PLUGINS)")


def call_plugin(entry: Entry, name: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a plugin's factory (a backbone's, a head's, a loss's). Options its signature does not take are the
    user's to fix; any other failure names the plugin."""
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as exc:
        if "geometry" in kwargs and "geometry" in str(exc):
            raise GeometryError(f"{entry.kind} '{name}' from {entry.source} does not support geometry "
                                f"'{kwargs['geometry']}'; use geometry='modern'") from None
        options = sorted(k for k in kwargs if k not in ("weights", "geometry"))
        raise SegzooError(f"{entry.kind} '{name}' from {entry.source} does not take the options given "
                          f"({', '.join(options) or 'none'}): {exc}; see its factory's parameters") from None
    except ValueError:  # no signature to read (a builtin): let the call itself decide
        pass
    try:
        return factory(*args, **kwargs)
    except SegzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, or a value it refused: say whose, in one line
        raise PluginError(f"{entry.kind} '{name}' from {entry.source} failed to build: "
                          f"{type(exc).__name__}: {exc}") from exc
