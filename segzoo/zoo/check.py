"""Run the contract checks the built-ins pass (:mod:`segzoo.zoo.contract`) over one plugin's parts.

``segzoo check-plugin DIST_OR_MODULE`` prints the table; plugin authors call
:func:`assert_plugin_passes` from pytest. A backbone is checked composed with the registered head
that reads the most of its strides (any plugin's; no head is named here); a head on a tiny
:class:`~segzoo.zoo.contract.SyntheticBackbone` with exactly the strides it declared; a recipe by resolving
its parts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..core.errors import SegzooError
from ..core.model import FeatureInfo, Head, SegmentationModel, Strides, describe_strides
from ..core.recipe import Recipe
from .contract import CheckResult, SyntheticBackbone, _check, check_output_shape, run_contract
from .loader import HOOKS, PluginRecord, load_plugins, normalize
from .registry import Entry, Registry


@dataclass
class PartCheck:
    """One row of the report: a part of the plugin (or the plugin itself) and one check's result."""

    kind: str
    name: str
    result: CheckResult


def find_plugin(target: str, registry: Registry) -> list[PluginRecord]:
    """Records whose distribution, entry-point name or module is ``target``."""
    t = normalize(target)
    return [r for r in registry.plugins
            if t in (r.dist, normalize(r.name)) or target in (r.module, r.module.split(":")[0])]


def load_target(target: str, registry: Registry | None = None) -> tuple[Registry, list[PluginRecord]]:
    """The registry holding ``target``: an installed plugin, or else a module imported and loaded in-process."""
    if not target.strip():
        raise SegzooError("check-plugin needs a plugin: a distribution, entry-point name or module, e.g. "
                          "segzoo check-plugin segzoo-plugin-example ('segzoo plugins' lists the installed ones)")
    registry = registry if registry is not None else load_plugins()
    records = find_plugin(target, registry)
    if records:
        return registry, records
    try:
        module = importlib.import_module(target)
    except (ImportError, ValueError, TypeError) as exc:  # also a name no module can have ('a..b', '.x')
        installed = sorted({f"{r.dist} ({r.name})" for r in registry.plugins})
        raise SegzooError(
            f"no plugin distribution, entry point or importable module named '{target[:100]}' ({exc}); "
            f"installed plugins: {', '.join(installed)}; 'segzoo plugins' lists them"
        ) from None
    if not any(callable(getattr(module, hook, None)) for hook in HOOKS):
        raise SegzooError(f"module '{target}' is no segzoo plugin: it defines none of the hooks {', '.join(HOOKS)} "
                          "(each marked @segzoo.hookimpl)")
    registry = load_plugins(extra=[(target, module)])
    return registry, find_plugin(target, registry)


def check_plugin(target: str, registry: Registry | None = None, num_classes: int = 3) -> list[PartCheck]:
    """Every contract check on every backbone, head and recipe ``target`` registers."""
    registry, records = load_target(target, registry)
    rows: list[PartCheck] = []
    for record in records:
        rows.append(PartCheck("plugin", record.name, _loads(record)))
        dist = f"{record.dist} {record.version}".strip()
        for kind in ("backbone", "head", "recipe"):
            for entry in registry.entries[kind].values():
                if entry.plugin == record.name and entry.dist == dist:
                    check = {"backbone": check_backbone, "head": check_head, "recipe": check_recipe}[kind]
                    rows += [PartCheck(kind, entry.name, r) for r in check(registry, entry, num_classes)]
    return rows


def _loads(record: PluginRecord) -> CheckResult:
    if record.status == "loaded" and not record.registered:
        return CheckResult("loads", False, "loaded, but registers no backbone, head, recipe, preset or weight layout")
    if record.status == "loaded":
        source = f"{record.dist} {record.version}".strip()  # a module loaded in-process has no version
        return CheckResult("loads", True, f"{source}, {record.registered} name(s)")
    why = record.error or "disabled by -p no:NAME, SEGZOO_DISABLE_PLUGINS or SEGZOO_DISABLE_PLUGIN_AUTOLOAD"
    return CheckResult("loads", False, f"{record.status}: {why}")


def check_backbone(registry: Registry, entry: Entry, num_classes: int) -> list[CheckResult]:
    if entry.is_family:
        return [CheckResult("family", True, f"not built: check a member by name, e.g. {entry.name[:-1]}<variant>")]

    def build() -> SegmentationModel:
        make, _ = registry.backbone_factory(entry.name)
        info = list(make().feature_info)
        reads = {h.name: r for h in registry.entries["head"].values() if (r := h.reads(info))}
        heads = sorted(reads, key=lambda n: (-len(reads[n]), n))
        assert heads, f"no registered head reads only the strides it declares ({sorted(f.stride for f in info)})"
        return registry.build(Recipe(backbone=entry.name, head=heads[0], num_classes=num_classes))

    return _contract(build, check_backbone=True)


def check_head(registry: Registry, entry: Entry, num_classes: int) -> list[CheckResult]:
    """A fixed head on a synthetic backbone with just the strides it declared, so that every parameter must train
    and a head reading a stride it did not declare fails. A head declared by a :class:`~segzoo.core.model.Strides`
    rule is checked so on the levels its rule reads from strides 1-32, and must also build, reading what the rule
    says, on the backbones its rule fits with one level fewer at either end."""
    strides = entry.strides
    if isinstance(strides, Strides):
        offered = {1, 2, 4, 8, 16, 32, *strides.required, *([strides.max] if strides.max else [])}
        chosen = list(strides.select([FeatureInfo(s, 1) for s in offered]))
        variants = [chosen, chosen[1:], chosen[:-1]]
    else:
        variants = [sorted(strides, reverse=True)]

    def build(levels: list[int]) -> SegmentationModel:
        backbone = SyntheticBackbone(sorted(levels))
        info = list(backbone.feature_info)
        head = entry.obj(info, num_classes)
        assert isinstance(head, Head), f"the factory returned a {type(head).__name__}, not a segzoo.Head"
        got, want = tuple(getattr(head, "strides", ())), entry.reads(info)
        assert got == want, (f"registered with {describe_strides(strides)}, which reads {list(want or ())} on a "
                             f"backbone with strides {sorted(levels)}, built with {list(got)}")
        classes = head.num_classes
        assert classes == num_classes, f"asked for {num_classes} classes, got head.num_classes={classes}"
        return SegmentationModel(backbone, head, Recipe(backbone="synthetic", head=entry.name,
                                                        num_classes=num_classes))

    rows = _contract(lambda: build(variants[0]), check_backbone=False)
    for levels in variants[1:]:
        if levels and isinstance(strides, Strides) and strides.fits([FeatureInfo(s, 1) for s in levels]):
            def built(v: list[int] = levels) -> str:
                return _shape_of(build(v))

            rows.append(_check(f"adapts to strides {sorted(levels)}", built))
    return rows


def _shape_of(model: SegmentationModel) -> str:
    """The model builds and returns N x C x H x W at the contract's sizes."""
    return check_output_shape(model)


def _contract(build, check_backbone: bool) -> list[CheckResult]:
    model = None

    def first() -> str:
        nonlocal model
        model = build()
        return f"as {model.recipe.name}, {sum(p.numel() for p in model.parameters()):,} parameters"

    built = _check("builds with default options", first)
    if model is None:
        return [built]
    return [built, *run_contract(model, rebuild=build, check_backbone=check_backbone)]


def check_recipe(registry: Registry, entry: Entry, num_classes: int) -> list[CheckResult]:
    def resolves() -> str:
        registry.backbone_factory(entry.obj.backbone)
        registry.head(entry.obj.head)
        return f"{entry.obj.backbone} + {entry.obj.head}"

    return [_check("names registered parts", resolves)]


def assert_plugin_passes(target: str, num_classes: int = 3) -> None:
    """For a plugin's own pytest suite: ``assert_plugin_passes("my-dist")`` fails listing every broken check."""
    rows = check_plugin(target, num_classes=num_classes)
    failed = [f"{r.kind} {r.name}: {r.result.name}: {r.result.detail}" for r in rows if not r.result.passed]
    assert rows, f"'{target}' registers nothing to check"
    assert not failed, f"{len(failed)} contract check(s) failed:\n" + "\n".join(failed)
