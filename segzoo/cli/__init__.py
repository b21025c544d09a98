"""The ``segzoo`` command: argument parsing and printing only; the work lives in the library.

Each sub-command is a module of this package with ``COMMAND``, ``add_arguments(parser)`` and
``run(args) -> int``, found by name, so adding a command is adding a file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ..api import get_registry, loaded_registry
from ..core.errors import SegzooError, UnknownNameError


def _commands() -> list:
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="segzoo", description="Fully Convolutional Networks, as a model zoo.")
    parser.add_argument("-p", dest="plugin_flags", action="append", default=[], metavar="no:NAME",
                        help="disable the plugin NAME (entry-point or distribution name), like pytest's -p no:NAME")
    parser.add_argument("--no-external-plugins", action="store_true",
                        help="load only segzoo's built-in plugins (also SEGZOO_DISABLE_PLUGIN_AUTOLOAD=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers = {}
    for module in sorted(_commands(), key=lambda m: m.COMMAND):
        p = sub.add_parser(module.COMMAND, help=(module.__doc__ or "").strip().splitlines()[0],
                           description=(module.__doc__ or "").strip())
        module.add_arguments(p)
        handlers[module.COMMAND] = module.run
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        _configure_plugins(args)
        return int(handlers[args.command](args) or 0)
    except SegzooError as exc:
        print(f"segzoo: error: {exc}{_failed_plugins_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `segzoo list | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


def _failed_plugins_hint(exc: SegzooError) -> str:
    """An unknown name may belong to a plugin that failed to load: say so on the same line."""
    registry = loaded_registry()
    if not isinstance(exc, UnknownNameError) or registry is None:
        return ""
    failed = [r.source for r in registry.plugins if r.status == "failed"]
    if not failed:
        return ""
    return f" ({len(failed)} plugin(s) failed to load: {', '.join(failed)}; 'segzoo plugins' says why)"


def _configure_plugins(args: argparse.Namespace) -> None:
    disabled = set()
    for flag in args.plugin_flags:
        if not flag.startswith("no:") or len(flag) == 3:
            raise SegzooError(f"-p takes no:NAME to disable a plugin, got {flag!r}")
        disabled.add(flag[3:])
    if disabled or args.no_external_plugins:
        get_registry(reload=True, disabled=disabled, external=not args.no_external_plugins)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
