"""Parsing what several commands share: ``KEY=VALUE`` options for a backbone or head, and settings checked at
the edge (argparse types from segzoo.core.settings' table, naming the valid range), so a bad value is one line
before any work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..core.errors import SegzooError
from ..core.files import atomic_write_text, check_output_path, local_path, same_file
from ..core.settings import SETTINGS
from ..io.remote import kind, locate
from ..studies.summary import parse_input_size


def parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["fc_channels=512", "dropout=0.1"]`` → ``{"fc_channels": 512, "dropout": 0.1}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise SegzooError(f"{flag} {pair[:80]!r} must be KEY=VALUE with KEY a Python name, e.g. {flag} dropout=0.1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SegzooError(f"{flag} {pair[:80]!r}: cannot read the value {value[:40]!r}; write a number, "
                              "true/false, a word, or a [list]") from None
    return out


def typed(name: str) -> dict[str, Any]:
    """``add_argument`` keywords for the setting ``name`` of :data:`segzoo.core.settings.SETTINGS`: an argparse
    ``type`` whose error is the table's line (``--epochs must be an integer from 1 to 1000000, got 0 (...)``, the
    same as ``TrainConfig.check`` and the other Python doors say), and a choice setting's ``choices`` for --help."""
    entry = SETTINGS[name]

    def parse(text: str) -> Any:
        try:
            return entry.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = entry.kind.__name__  # what argparse calls the type in its own messages
    return {"type": parse, "choices": entry.choices} if entry.choices else {"type": parse}


def input_size(text: str, flag: str = "--input") -> tuple[int, int, int]:
    """``--input CxHxW`` for a model of RGB images: three channels, sides from 1 to 16384."""
    c, h, w = parse_input_size(text)
    if c != 3:
        raise SegzooError(f"{flag} {text[:40]}: the models take 3-channel (RGB) images, not {c}; write 3x{h}x{w}")
    if max(h, w) > 16384:
        raise SegzooError(f"{flag} {text[:40]}: sides up to 16384 pixels, got {h}x{w}")
    return c, h, w


def check_new_file(path: str, force: bool, flag: str = "--out", inputs: tuple[Any, ...] = ()) -> None:
    """Refuse to replace an existing file (segzoo never overwrites what it did not just write) unless ``--force``,
    and one of the command's ``inputs`` even then; a folder is never a file to write
    (:func:`segzoo.core.files.check_output_path`). ``path`` may be a URL (s3://, memory://...), checked where it
    points."""
    loc = locate(path, writing=True)
    if loc.local is not None:
        check_output_path(loc.local, inputs, force, flag)
        return
    found = kind(loc)
    if found == "directory":
        raise SegzooError(f"{flag} {path} is a folder; name the file to write, e.g. {path.rstrip('/')}/model.pt")
    if found and not force:
        raise SegzooError(f"{path} exists; segzoo does not replace it: pass --force to replace it, or another name")


def tile_options(args: argparse.Namespace) -> float:
    """``--overlap`` belongs to ``--tile``: given alone it would be accepted and ignored, so it is refused.
    Returns the overlap to use (0.25 by default)."""
    if args.overlap is not None and args.tile is None:
        raise SegzooError(f"--overlap {args.overlap:g} blends tiles, so it needs --tile S (e.g. --tile 512); without "
                          "--tile each image is one forward pass")
    return 0.25 if args.overlap is None else args.overlap


def local_folder(flag: str, what: str) -> Callable[[str], str]:
    """An argparse ``type`` for an output that stays on this machine (a run folder, predictions): a URL is one line
    saying so, where ``Path`` would have made the folder ``s3:`` of it."""

    def parse(text: str) -> str:
        try:
            local_path(text, f"{flag} ({what})")
        except SegzooError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    parse.__name__ = "local path"
    return parse


# -- --json FILE|- : one implementation for every command that reports ------------------------------------------
STDOUT = "-"


def add_json_option(p: argparse.ArgumentParser, what: str, force: bool = True, default: str = "") -> None:
    """``--json FILE`` (``-`` = standard output, where the table then goes to standard error) and, unless the
    command has its own, ``--force`` to replace an existing FILE."""
    p.add_argument("--json", default=None, metavar="FILE",
                   help=f"write {what} as JSON to FILE, or to standard output with '-' (the human-readable text then "
                        f"goes to standard error){default}; an existing FILE is refused unless --force")
    if force:
        p.add_argument("--force", action="store_true", help="replace the --json file if it exists (default: refuse)")


def human(args: argparse.Namespace) -> TextIO:
    """Where the human-readable text goes: standard error while the JSON holds standard output, else stdout."""
    return sys.stderr if getattr(args, "json", None) == STDOUT else sys.stdout


def check_json_target(path: str | None, force: bool, inputs: Iterable[str | os.PathLike[str] | None] = (),
                      outputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """Refuse, before any work, a ``--json`` file that would replace something: an existing file without
    ``--force``, a folder, and (even with ``--force``) one of the command's own input files or other outputs."""
    if path is None or path == STDOUT:
        return
    target = Path(path)
    for given in outputs:  # the inputs are check_new_file's: never replaced, not even with --force
        if given is not None and str(given) != STDOUT and same_file(target, Path(given)):
            raise SegzooError(f"--json {path} is one of this command's outputs ({given}); name another file")
    check_new_file(path, force, flag="--json", inputs=tuple(i for i in inputs if i is not None))


def write_json(path: str | None, data: Any, force: bool) -> Path | None:
    """Write ``data`` as JSON to ``path`` (temp + rename, never replacing a file that appeared meanwhile unless
    ``force``), or to standard output for ``-``; returns the file written, if any."""
    if path is None:
        return None
    text = json.dumps(data, indent=1, default=str) + "\n"
    if path == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    try:
        return atomic_write_text(text, path, overwrite=force)
    except FileExistsError:
        raise SegzooError(f"{path} exists; segzoo does not replace it: pass --force to replace it, or another name")\
            from None
