"""The ``segzoo`` command: argument parsing and printing only; the work lives in the library.

Each sub-command is a module of this package with ``COMMAND``, ``add_arguments(parser)`` and
``run(args) -> int``, found by name, so adding a command is adding a file.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import re
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._version import __version__
from ..api import get_registry, loaded_registry
from ..core.errors import SegzooError, UnknownNameError
from ..zoo.loader import normalize


def _commands() -> list:
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (the usage of ``train`` alone is twenty), exit code 2 as before."""

    def error(self, message: str) -> NoReturn:
        # a setting's own line (segzoo.core.settings) reads as TrainConfig.check says it: "--epochs must be ..."
        message = re.sub(r"^argument (\S+): (must be )", r"\1 \2", message)
        self.exit(2, f"{self.prog}: error: {_cut(message)} (see '{self.prog} --help')\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(prog="segzoo", description="Fully Convolutional Networks, as a model zoo.")
    parser.add_argument("-p", dest="plugin_flags", action="append", default=[], metavar="no:NAME",
                        help="disable the plugin NAME (entry-point or distribution name), like pytest's -p no:NAME")
    parser.add_argument("--no-external-plugins", action="store_true",
                        help="load only segzoo's built-in plugins (also SEGZOO_DISABLE_PLUGIN_AUTOLOAD=1)")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the full traceback (also SEGZOO_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"segzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers = {}
    for module in sorted(_commands(), key=lambda m: m.COMMAND):
        p = sub.add_parser(module.COMMAND, help=(module.__doc__ or "").strip().splitlines()[0],
                           description=(module.__doc__ or "").strip())
        module.add_arguments(p)
        # errors say "run with --debug": after the command as well as before it (SUPPRESS: not given here keeps
        # the value given before the command)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, also print the full traceback (also SEGZOO_DEBUG=1)")
        handlers[module.COMMAND] = module.run
    return parser, handlers


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Docker, Slurm and Kubernetes send), raised where the program is, like Ctrl-C: every
    ``finally`` runs, so temporary files go and a run keeps its last good checkpoint."""

    signum = signal.SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    """The first SIGTERM stops the command; later ones (SLURM and ``timeout`` may send more, to the whole process
    group) are ignored while it stops, so no second exception breaks the clean-up with a traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion (``pip install 'segzoo[completion]'``): argcomplete answers and exits when the shell asks
    (it sets _ARGCOMPLETE); otherwise nothing is imported, so the extra costs nothing when absent or unused."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:  # the shell was set up for completion, but the extra is not installed: complete nothing
        return
    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser, handlers = build_parser()  # the help texts list the registry: SEGZOO_STRICT_PLUGINS raises here
    except SegzooError as exc:
        print(f"segzoo: error: {_cut(str(exc))}", file=sys.stderr)
        return 2
    _complete(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad option (said in one line) is an exit code like any other; --help exits as usual
        if exc.code in (0, None):
            raise
        return exc.code if isinstance(exc.code, int) else 2
    debug = args.debug or os.environ.get("SEGZOO_DEBUG", "").strip() not in ("", "0")
    previous = _install(signal.SIGTERM, _on_sigterm)
    try:
        _configure_plugins(args)
        return int(handlers[args.command](args) or 0)
    except SegzooError as exc:
        _traceback(debug)
        print(f"segzoo: error: {_cut(str(exc))}{_failed_plugins_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM; a run says how to resume (its exception carries it)
        _traceback(debug)
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        said = getattr(exc, "segzoo_message", "")
        print(f"segzoo: {what}" + (f"; {said}" if said else ""), file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:  # `segzoo list | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path that cannot be read or written: the disk, not segzoo, said no
        _traceback(debug)
        print(f"segzoo: error: {_cut(os_error_line(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug (segzoo's or a plugin's): one line unless asked for more
        _traceback(debug)
        text = " ".join(str(exc).split())
        hint = "" if debug else "; run with --debug (or SEGZOO_DEBUG=1) for the traceback"
        print(f"segzoo: error: unexpected {type(exc).__name__}: {_cut(text, 300)}{hint}", file=sys.stderr)
        return 1
    finally:
        _install(signal.SIGTERM, previous)


def _install(signum: int, handler: Any) -> Any:
    """Set a signal handler where Python allows it (the main thread), returning the one it replaced."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


def _traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc()


def _cut(text: str, limit: int = 1000) -> str:
    """One line of at most ``limit`` characters: a 100 KB name must not fill the terminal."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit - 40]}... ({len(text):,} characters in all)"


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EACCES: "no permission: choose a path you may read or write",
    errno.EPERM: "no permission: choose a path you may read or write",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: name a file",
    errno.ENOENT: "it does not exist: check the path",
    errno.EEXIST: "something of that name is in the way (a file where a folder is needed?): choose another path",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the path (the target of a rename, not its temporary file) and the fix."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    if where is not None:
        p = Path(os.fsdecode(where))
        if p.name.startswith(".") and p.name.endswith(".tmp"):  # our temporary file: name what it stood for
            p = p.parent / p.name[1:].rsplit(".", 2)[0]
        where = str(p)
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _ERRNO_HINTS.get(exc.errno or 0)
    return (f"cannot use {_cut(where, 300)}: " if where else "") + reason + (f" ({hint})" if hint else "")


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
        registry = get_registry(reload=True, disabled=disabled, external=not args.no_external_plugins)
        known = {normalize(n) for r in registry.plugins for n in (r.name, r.dist)}
        for name in sorted(disabled):
            if normalize(name) not in known:
                print(f"segzoo: warning: -p no:{_cut(name, 80)} names no installed plugin, so nothing was disabled "
                      f"(the plugins: {', '.join(sorted({r.name for r in registry.plugins}))}; 'segzoo plugins' "
                      "lists them)", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
