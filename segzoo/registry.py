"""The registry: backbones, heads and recipes by name, and composing them into models.

It knows no concrete backbone or head: everything in it was put there by a plugin through
:mod:`segzoo.hookspecs`. Names compose as ``<backbone>-<head>`` (``vgg16-fcn8s``,
``timm-resnet18-fcn16s``); recipes (``registry.yaml``) name such a composition with defaults.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import GeometryError, PluginError, SegzooError, UnknownNameError
from .model import GEOMETRIES, SegmentationModel, check_head_fits

KINDS = ("backbone", "head", "recipe")
RECIPE_KEYS = {
    "backbone", "head", "num_classes", "input_size", "backbone_weights", "backbone_kwargs",
    "head_kwargs", "normalization", "description", "class_names", "geometry", "weights",
}


@dataclass
class Entry:
    """One registered name and where it came from."""

    kind: str
    name: str
    obj: Any  # a factory, or a recipe dict
    plugin: str
    dist: str
    description: str = ""

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

    def head(self, name: str, factory: Callable[..., Any], description: str = "") -> None:
        self._add("head", name, factory, description)

    def recipe(self, name: str, recipe: dict[str, Any]) -> None:
        unknown = set(recipe) - RECIPE_KEYS
        if unknown or not {"backbone", "head"} <= set(recipe):
            raise PluginError(
                f"recipe '{name}' needs 'backbone' and 'head' and may only use {sorted(RECIPE_KEYS)}; "
                f"got {sorted(recipe)}"
            )
        self._add("recipe", name, dict(recipe), recipe.get("description", ""))

    def _add(self, kind: str, name: str, obj: Any, description: str) -> None:
        if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
            raise PluginError(f"{kind} name {name!r} must be a non-empty lower-case string without spaces")
        if kind != "recipe" and not callable(obj):
            raise PluginError(f"{kind} '{name}' must be registered with a callable factory, got {type(obj).__name__}")
        self.staged.append(Entry(kind, name, obj, self.plugin, self.dist, description or _first_line(obj)))


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) if callable(obj) else None
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


class Registry:
    """Names → factories and recipes, each remembering the plugin that registered it."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.plugins: list[Any] = []  # PluginRecord, filled by segzoo.plugins.load_plugins

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

    def head_factory(self, name: str) -> tuple[Callable[..., Any], Entry]:
        entry = self.entries["head"].get(name)
        if entry is None:
            raise UnknownNameError("head", name, self.names("head"))
        return entry.obj, entry

    def _is_backbone(self, name: str) -> bool:
        try:
            self.backbone_factory(name)
        except UnknownNameError:
            return False
        return True

    def resolve(self, name: str) -> dict[str, Any]:
        """A model name → a full recipe dict (a copy: callers may change it)."""
        if name in self.entries["recipe"]:
            recipe = copy.deepcopy(self.entries["recipe"][name].obj)
            recipe.setdefault("name", name)
            return recipe
        # Heads and backbones may both contain '-': try every split, the head being a registered name.
        for head in sorted(self.entries["head"], key=len, reverse=True):
            backbone = name[: -len(head) - 1]
            if name.endswith("-" + head) and backbone and self._is_backbone(backbone):
                return {"name": name, "backbone": backbone, "head": head}
        raise UnknownNameError("model", name, self.model_names())

    def create_model(
        self,
        name: str,
        num_classes: int | None = None,
        backbone_weights: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        head_kwargs: dict[str, Any] | None = None,
        geometry: str | None = None,
        weights: str | None = None,
    ) -> SegmentationModel:
        recipe = self.resolve(name)
        if geometry is not None:
            recipe["geometry"] = geometry
        if weights is not None:
            recipe["weights"] = str(weights)
        if num_classes is not None:
            recipe["num_classes"] = num_classes
        recipe.setdefault("num_classes", 21)
        if backbone_weights is not None:
            recipe["backbone_weights"] = str(backbone_weights)
        recipe["backbone_kwargs"] = {**recipe.get("backbone_kwargs", {}), **(backbone_kwargs or {})}
        recipe["head_kwargs"] = {**recipe.get("head_kwargs", {}), **(head_kwargs or {})}
        return self.build(recipe)

    def build(self, recipe: dict[str, Any]) -> SegmentationModel:
        """Build the model a (resolved) recipe describes, with its full-model ``weights`` if it names any."""
        n = recipe.get("num_classes", 21)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SegzooError(f"num_classes must be a positive integer, got {n!r}")
        geometry = recipe.get("geometry") or "modern"
        if geometry not in GEOMETRIES:
            raise UnknownNameError("geometry", geometry, GEOMETRIES, hint=f"segzoo knows {list(GEOMETRIES)}")
        # Only a non-default geometry is passed, so factories written before geometries existed still work.
        extra = {} if geometry == "modern" else {"geometry": geometry}
        make_backbone, b_entry = self.backbone_factory(recipe["backbone"])
        make_head, h_entry = self.head_factory(recipe["head"])
        backbone = _call_plugin(
            b_entry, make_backbone, weights=recipe.get("backbone_weights"), **extra, **recipe.get("backbone_kwargs", {})
        )
        head = _call_plugin(h_entry, make_head, list(backbone.feature_info), n, **extra,
                            **recipe.get("head_kwargs", {}))
        check_head_fits(recipe["head"], tuple(head.strides), list(backbone.feature_info), recipe["backbone"])
        recipe = {**recipe, "geometry": geometry, "backbone_plugin": b_entry.plugin, "head_plugin": h_entry.plugin,
                  "backbone_dist": b_entry.dist, "head_dist": h_entry.dist}
        recipe.setdefault("normalization", dict(backbone.normalization))
        model = SegmentationModel(backbone, head, recipe)
        if recipe.get("weights"):
            from .weights import load_weights

            load_weights(model, recipe["weights"])
        return model


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


def _call_plugin(entry: Entry, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a plugin's factory; a crash that is not the user's fault names the plugin."""
    try:
        return factory(*args, **kwargs)
    except SegzooError:
        raise
    except TypeError as exc:
        if "geometry" in kwargs and "geometry" in str(exc):
            raise GeometryError(
                f"{entry.kind} '{entry.name}' from {entry.source} does not support geometry '{kwargs['geometry']}'; "
                "use geometry='modern'"
            ) from exc
        raise SegzooError(f"{entry.kind} '{entry.name}' from {entry.source} rejected its options: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: say whose, in one line
        raise PluginError(f"{entry.kind} '{entry.name}' from {entry.source} failed to build: "
                          f"{type(exc).__name__}: {exc}") from exc
