"""Plain files, read and written so that nothing is lost: all-or-nothing writes, reads that never hang.

Every output segzoo writes goes through :func:`atomic_write`: a uniquely named temporary file in the
target's folder, fsynced, given the permissions the umask asks for, then renamed over the target, so a
crash, a full disk or a signal leaves the old file or the new one, never half of one, and no temporary
file. ``overwrite=False`` refuses to replace a file that exists (atomically: a hard link, not a check
then a rename). Reads accept regular files only, so a FIFO or a device named by mistake cannot block.

A URL (``s3://bucket/m.pt``) is never a local path here: ``Path`` would fold it into a folder named ``s3:``.
These functions refuse one (:func:`local_path`); :mod:`segzoo.io.remote` reads and writes URLs where a
command can honour them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import SegzooError

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):  # POSIX: the mode any other new file would get
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # a no-op once renamed; after any failure or signal, the cleanup
    return path


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


def read_text_file(path: str | os.PathLike[str], what: str = "file",
                   error: type[SegzooError] = SegzooError) -> str:
    """A regular file's UTF-8 text; a missing, special (FIFO, device, folder), unreadable or non-UTF-8 file
    is one ``error`` naming it, so nothing blocks on a pipe and nothing ends in a traceback."""
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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); save it as "
                    "UTF-8") from None
