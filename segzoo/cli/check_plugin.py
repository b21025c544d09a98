"""Run the contract checks the built-ins pass over one plugin's backbones, heads and recipes.

DIST_OR_MODULE is an installed distribution (segzoo-plugin-example), an entry-point name, or an
importable module with hooks that is not installed yet. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse

from ..api import get_registry
from ..core.table import format_table
from ..zoo.check import check_plugin
from ._options import add_json_option, check_json_target, human, typed, write_json

COMMAND = "check-plugin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="DIST_OR_MODULE", help="a plugin distribution, entry-point name or module")
    p.add_argument("--num-classes", **typed("num_classes"), default=3,
                   help="classes of the models checked (default: 3)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    add_json_option(p, "every check's result")


def run(args: argparse.Namespace) -> int:
    check_json_target(args.json, args.force, inputs=[args.target])
    out = human(args)
    rows = check_plugin(args.target, get_registry(), num_classes=args.num_classes)
    table = [[r.kind, r.name, r.result.name, "pass" if r.result.passed else "FAIL", r.result.detail] for r in rows]
    print(format_table(["part", "name", "check", "result", "detail"], table, markdown=args.markdown), file=out)
    failed = sum(not r.result.passed for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed", file=out)
    write_json(args.json, {"target": args.target, "passed": len(rows) - failed, "failed": failed,
                           "checks": [{"part": r.kind, "name": r.name, "check": r.result.name,
                                       "passed": r.result.passed, "detail": r.result.detail} for r in rows]},
               args.force)
    return 1 if failed else 0
