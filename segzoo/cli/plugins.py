"""List every plugin found: loaded, disabled or failed (with the error), and the distribution of each."""

from __future__ import annotations

import argparse

from ..api import get_registry
from ..core.table import format_table
from ._options import add_json_option, check_json_target, human, write_json

COMMAND = "plugins"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    add_json_option(p, "every plugin's record")


def run(args: argparse.Namespace) -> int:
    check_json_target(args.json, args.force)
    out = human(args)
    records = get_registry().plugins
    rows = [[r.name, f"{r.dist} {r.version}".strip(), r.status, r.registered, r.error] for r in records]
    print(format_table(["plugin", "distribution", "status", "names", "error"], rows, markdown=args.markdown), file=out)
    counts = {s: sum(r.status == s for r in records) for s in ("loaded", "disabled", "failed")}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items())
          + "; disable one with 'segzoo -p no:NAME' or SEGZOO_DISABLE_PLUGINS=NAME,...;"
          " all external ones with --no-external-plugins or SEGZOO_DISABLE_PLUGIN_AUTOLOAD=1", file=out)
    write_json(args.json, {"plugins": [{"plugin": r.name, "distribution": r.dist, "version": r.version,
                                        "module": r.module, "status": r.status, "names": r.registered,
                                        "error": r.error} for r in records], "counts": counts}, args.force)
    return 0
