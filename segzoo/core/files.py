"""Plain files, read and written so that nothing is lost: all-or-nothing writes, reads that never hang.

Every output segzoo writes goes through :func:`atomic_write`: a uniquely named temporary file in the
target's folder, fsynced, given the permissions the umask asks for, then renamed over the target, so a
crash, a full disk or a signal leaves the old file or the new one, never half of one, and no temporary
file; SIGTERM and SIGINT are held while a file is written and acted on right after it is in place.
``overwrite=False`` refuses to replace a file that exists (atomically: a hard link, not a check then a
rename). Reads accept regular files only, so a FIFO or a device named by mistake cannot block.

A URL (``s3://bucket/m.pt``) is never a local path here: ``Path`` would fold it into a folder named ``s3:``.
These functions refuse one (:func:`local_path`); :mod:`segzoo.io.remote` reads and writes URLs where a
command can honour them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import SegzooError
from .signals import deferred_signals

# scheme://...; two letters at least, so a Windows drive (C:\\ or C:/) is never taken for a scheme
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# what Path makes of one: Path("s3://b/m.pt") is "s3:/b/m.pt" (a file under a folder named "s3:")
_FOLDED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


def url_scheme(path: str | os.PathLike[str]) -> str | None:
    """``"s3"`` for ``s3://bucket/key``, lower-cased; None for a local path."""
    match = _URL.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return match.group(1).lower() if match else None


def local_path(path: str | os.PathLike[str], what: str = "this output") -> Path:
    """``path`` as a local :class:`Path`; a URL is a :class:`SegzooError` saying that ``what`` stays local (so is
    a URL that ``Path`` already folded, ``s3:/b/m.pt``, e.g. a name derived from a URL with ``Path.with_name``)."""
    folded = _FOLDED_URL.match(os.fspath(path))
    scheme = url_scheme(path) or (folded.group(1).lower() if folded else None)
    if scheme:
        raise SegzooError(f"{what} stays on this machine, so it cannot be the URL {os.fspath(path)}; give a local "
                          f"path and copy the result to {scheme}:// afterwards")
    return Path(path)


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any], overwrite: bool = True) -> Path:
    """Write through ``write(f)`` to a temporary file beside ``path``, fsync, then rename it into place.

    The file gets ``0o666 & ~umask`` (``mkstemp`` alone would leave it 0600). With ``overwrite=False``
    an existing ``path`` is a :class:`FileExistsError` and is left untouched. A URL is refused (:func:`local_path`).
    """
    path = local_path(path, "this file")
    _make_parent(path)
    with deferred_signals():  # a SIGTERM inside torch.save would be a C++ error; held, it comes after the rename
        return _write_and_rename(path, write, overwrite)


def _write_and_rename(path: Path, write: Callable[[BinaryIO], Any], overwrite: bool) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            try:
                write(f)  # type: ignore[arg-type]
                f.flush()
            except Exception as exc:
                if f.error is not None:  # the disk's own error, which a writer (torch.save) may have re-worded
                    raise _disk_error(f.error, path) from None
                if isinstance(exc, OSError):
                    raise _disk_error(exc, path) from None
                raise
            if hasattr(os, "fchmod"):  # POSIX: the mode any other new file would get
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            try:
                os.fsync(f.fileno())
            except OSError as exc:
                raise _disk_error(exc, path) from None
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # a no-op once renamed; after any failure or signal, the cleanup
    return path


class _Recording:
    """A binary file that remembers the OSError its last write raised: torch.save turns a full disk into a
    RuntimeError ("unexpected pos"), and the disk's own error is what the user can act on."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class DiskFullError(SegzooError, OSError):
    """A write that found no space: one line naming the disk, its free space and what to free."""


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The folder where the file system holding ``path`` is mounted (the disk to name in a message)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while p != p.parent and os.path.ismount(p) is False:
        p = p.parent
    return p


def disk_full_message(path: str | os.PathLike[str]) -> str:
    """``cannot write X: the disk mounted at M is full (F bytes free); free space there ...``."""
    disk = mount_point(Path(path).parent)
    try:
        free = f"{shutil.disk_usage(disk).free / 1e6:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    return (f"cannot write {path}: the disk mounted at {disk} is full ({free}); free space there (old runs' "
            "last.pt files and exports are the largest) or write elsewhere")


def _disk_error(exc: OSError, path: Path) -> OSError:
    """ENOSPC/EDQUOT as a :class:`DiskFullError` naming the disk; any other OSError as it is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(disk_full_message(path))
    return exc


def check_output_path(path: str | os.PathLike[str], inputs: Any = (), force: bool = False,
                      flag: str = "--out", error: type[SegzooError] = SegzooError) -> Path:
    """The one rule for a file segzoo is asked to write: never one of the command's ``inputs`` (not even with
    ``force``, and also not through a link or another name of the same file), never a folder, and an existing
    file only with ``force``. Returns ``path`` as a :class:`Path`."""
    p = Path(path)
    for given in inputs or ():
        if given is not None and same_file(p, Path(given)):
            raise error(f"{flag} {p} is one of this command's inputs ({given}); segzoo never replaces its input, "
                        "even with --force: name another file")
    if p.is_dir():
        raise error(f"{flag} {p} is a folder; name the file to write, e.g. {p / 'out.json'}")
    if (p.exists() or p.is_symlink()) and not force:
        raise error(f"{flag} {p} exists; segzoo does not replace a file it did not just write: pass --force to "
                    "replace it, or name another file")
    return p


def same_file(a: Path, b: Path) -> bool:
    """Whether two names are one file: the same path (also through links, resolved), or two names of one existing
    file (a hard link)."""
    try:
        if a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b)):
            return True
    except (OSError, RuntimeError):
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def _make_parent(path: Path) -> None:
    """Create the folders above ``path``; a file where a folder should be is ENOTDIR naming it (mkdir's own error
    would be "File exists", which reads as if the target were there)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker)) from None


def _link_new(tmp: str, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a hard link fails on an existing name)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race, no worse)
        if path.exists():
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(tmp, path)


def atomic_write_text(text: str, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Text (JSON, CSV, Markdown) written the same all-or-nothing way, as UTF-8."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


MAX_TEXT_BYTES = 64 << 20  # settings, label maps, stats and run records are KB; 64 MB is a wrong file


def read_text_file(path: str | os.PathLike[str], what: str = "file",
                   error: type[SegzooError] = SegzooError, limit: int = MAX_TEXT_BYTES) -> str:
    """A regular file's UTF-8 text; a missing, special (FIFO, device, folder), unreadable, non-UTF-8 or larger than
    ``limit`` file is one ``error`` naming it, so nothing blocks on a pipe and nothing ends in a traceback.
    Every text file segzoo reads (YAML, JSON, label maps, records) comes through here."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file; name the file itself")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file (a pipe, socket or device); segzoo reads only "
                    "regular files: copy it to a file and pass that")
    size = os.stat(path).st_size
    if size > limit:
        raise error(f"{what} {path} is {size:,} bytes, more than the {limit:,} segzoo reads from such a file; "
                    "check that it is the right file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} grew past {limit:,} bytes while being read; check that it is the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); save it as "
                    "UTF-8") from None


def read_json_file(path: str | os.PathLike[str], what: str = "file", error: type[SegzooError] = SegzooError,
                   kind: type | None = dict, limit: int = MAX_TEXT_BYTES) -> Any:
    """A JSON file read through :func:`read_text_file`, as ``kind`` (a dict by default; ``None``: any JSON value).
    Bad JSON, NaN/Infinity literals and the wrong top-level type are one ``error`` naming the file."""
    text = read_text_file(path, what, error, limit)

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} {path} is not valid JSON ({str(exc)[:120]}); it is damaged: restore or remove it"
                    ) from None
    if kind is not None and not isinstance(data, kind):
        raise error(f"{what} {path} holds a JSON {type(data).__name__}, not the {kind.__name__} segzoo writes there; "
                    "it is damaged: restore or remove it")
    return data
