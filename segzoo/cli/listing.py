"""List backbones, heads, recipes, presets and weight layouts, with the plugin and distribution of each."""

from __future__ import annotations

import argparse

from ..api import get_registry
from ..core.model import describe_strides
from ..core.table import format_table
from ..zoo.registry import BUILTIN_LOSS

COMMAND = "list"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None,
                   help="a wildcard over model names (e.g. '*fcn8s'): list matching models instead")


def run(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.pattern:
        for name in registry.list_models(args.pattern):
            print(name)
        return 0
    for kind in ("backbone", "head", "recipe", "preset", "weight layout", "loss"):
        rows = []
        if kind == "loss":  # the default, built into the trainer rather than registered
            rows.append([BUILTIN_LOSS, "-", "segzoo (built in)", "pixel-wise cross-entropy, the default"])
        for name in registry.names(kind):
            e = registry.entries[kind][name]
            rows.append([name, e.plugin, e.dist, _describe(e)])
        print(f"{'losses' if kind == 'loss' else kind + 's'} ({len(rows)})")
        print(format_table(["name", "plugin", "distribution", "description"], rows))
        print()
    failed = [p for p in registry.plugins if p.status == "failed"]
    if failed:
        print(f"{len(failed)} plugin(s) failed to load ('segzoo plugins' lists them all):")
        for p in failed:
            print(f"  {p.message()}")
        print()
    print("Compose any backbone with any head: <backbone>-<head>, e.g. segzoo build vgg16-fcn8s")
    return 0


def _describe(e) -> str:
    if e.kind == "recipe":
        r = e.obj
        return f"{r.backbone} + {r.head}, {r.num_classes} classes" + (f": {r.description}" if r.description else "")
    if e.kind == "head":
        parent = f"; staged from {e.parent}" if e.parent else ""
        return f"{describe_strides(e.strides)}{parent}: {e.description}"
    return e.description
