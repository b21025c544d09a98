"""List backbones, heads, recipes, presets and weight layouts, with the plugin and distribution of each."""

from __future__ import annotations

import argparse
from typing import Any

from .._version import __version__
from ..api import get_registry
from ..core.model import Strides, describe_strides
from ..core.table import format_table
from ..zoo.registry import BUILTIN_LOSS
from ._options import add_json_option, check_json_target, human, write_json

COMMAND = "list"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None,
                   help="a wildcard over model names (e.g. '*fcn8s'): list matching models instead")
    add_json_option(p, "every registered name (or the matching models)")


def run(args: argparse.Namespace) -> int:
    check_json_target(args.json, args.force)
    out = human(args)
    registry = get_registry()
    if args.pattern:
        models = registry.list_models(args.pattern)
        for name in models:
            print(name, file=out)
        write_json(args.json, {"segzoo": __version__, "pattern": args.pattern, "models": models}, args.force)
        return 0
    listed: dict[str, Any] = {"segzoo": __version__}
    for kind in ("backbone", "head", "recipe", "preset", "weight layout", "loss"):
        rows: list[list[str]] = []
        records: list[dict[str, Any]] = []
        if kind == "loss":  # the default, built into the trainer rather than registered
            rows.append([BUILTIN_LOSS, "-", "segzoo (built in)", "pixel-wise cross-entropy, the default"])
            records.append({"name": BUILTIN_LOSS, "plugin": None, "distribution": "segzoo (built in)",
                            "description": rows[0][-1]})
        for name in registry.names(kind):
            e = registry.entries[kind][name]
            rows.append([name, e.plugin, e.dist, _describe(e)])
            records.append({"name": name, "plugin": e.plugin, "distribution": e.dist, "description": _describe(e),
                            **({"strides": str(e.strides) if isinstance(e.strides, Strides) else list(e.strides),
                                "parent": e.parent} if kind == "head" else {})})
        title = "losses" if kind == "loss" else kind + "s"
        listed[title.replace(" ", "_")] = records
        print(f"{title} ({len(rows)})", file=out)
        print(format_table(["name", "plugin", "distribution", "description"], rows), file=out)
        print(file=out)
    failed = [p for p in registry.plugins if p.status == "failed"]
    listed["failed_plugins"] = [{"plugin": p.name, "distribution": p.dist, "error": p.error} for p in failed]
    if failed:
        print(f"{len(failed)} plugin(s) failed to load ('segzoo plugins' lists them all):", file=out)
        for p in failed:
            print(f"  {p.message()}", file=out)
        print(file=out)
    print("Compose any backbone with any head: <backbone>-<head>, e.g. segzoo build vgg16-fcn8s", file=out)
    write_json(args.json, listed, args.force)
    return 0


def _describe(e) -> str:
    if e.kind == "recipe":
        r = e.obj
        return f"{r.backbone} + {r.head}, {r.num_classes} classes" + (f": {r.description}" if r.description else "")
    if e.kind == "head":
        parent = f"; staged from {e.parent}" if e.parent else ""
        return f"{describe_strides(e.strides)}{parent}: {e.description}"
    return e.description
