"""Where a weights file lives: a local path or a URL, resolved in one place for every reader and writer.

:func:`locate` is the only interpretation of a path that segzoo's weights, checkpoints and exports get:

- a local path stays a :class:`~pathlib.Path`, and so does ``file://`` (``file:///data/m.pt`` is ``/data/m.pt``);
- ``http://`` and ``https://`` are read through torch hub's cache (downloaded once, then used offline);
- any other ``scheme://`` is an fsspec filesystem (``s3://`` with s3fs, ``gs://`` with gcsfs, ``hf://`` with
  huggingface_hub, ``memory://``...), imported only when such a URL comes: ``pip install 'segzoo[remote]'`` and
  the scheme's own package. A scheme fsspec does not know, or whose package is missing, is one line naming
  what to install.

Nothing turns a URL into a local name (``Path("s3://b/m.pt")`` is the folder ``s3:``): writers that must stay
local refuse URLs (:func:`segzoo.core.files.local_path`). Remote writes are all-or-nothing as local ones are: the
file is written locally first, then sent in one put, which an object store (S3, GCS, Azure, the Hub, memory)
shows only once complete; a filesystem with real folders (SFTP, SMB...) gets it under a temporary name, then a
move.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

from ..core.errors import SegzooError
from ..core.files import atomic_write, url_scheme
from .cache import torch_hub_file

# fsspec protocols whose put is one atomic operation: the object appears whole, or not at all
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "hf", "memory"})
LOCAL_SCHEMES = ("file", "local")
READ_ONLY_SCHEMES = ("http", "https")


class RemoteError(SegzooError):
    """A URL segzoo cannot use here: an unknown scheme, a package to install, a read-only scheme written to."""


@dataclass(frozen=True)
class Location:
    """A resolved path: ``local`` for a file on this machine, else ``fs`` (an fsspec filesystem) and its ``path``."""

    text: str  # as the user wrote it, for messages
    local: Path | None = None
    fs: Any = None
    path: str = ""

    @property
    def name(self) -> str:
        return self.local.name if self.local is not None else PurePosixPath(self.path).name

    @property
    def atomic_put(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        return bool(OBJECT_STORES & set(protocols))


def locate(path: str | os.PathLike[str], what: str = "weights", writing: bool = False) -> Location:
    """Resolve ``path`` (see the module's doc); ``what`` names the file in messages, ``writing`` refuses http(s)."""
    text = os.fspath(path)
    scheme = url_scheme(text)
    if scheme is None:
        return Location(text, Path(text))
    if scheme in LOCAL_SCHEMES:
        parsed = urlparse(text)
        return Location(text, Path(url2pathname(parsed.netloc + parsed.path)))
    if scheme in READ_ONLY_SCHEMES:
        if writing:
            raise RemoteError(f"{text}: {scheme}:// URLs are read-only here; write to a local path, or to s3://, "
                              "gs://, hf://... (pip install 'segzoo[remote]' and the scheme's package)")
        return Location(text, torch_hub_file(text, what, instead="download it yourself and pass the local file"))
    try:
        import fsspec
    except ImportError:
        raise RemoteError(f"{text}: {scheme}:// URLs need fsspec, which is not installed; install it with: "
                          f"pip install 'segzoo[remote]'{_package_hint(scheme)}") from None
    try:
        fs, inner = fsspec.core.url_to_fs(text)
    except ImportError:
        raise RemoteError(f"{text}: {scheme}:// URLs need a package that is not installed; install it with: "
                          f"pip install {_package(scheme) or 'the package fsspec names for ' + scheme}") from None
    except ValueError:
        raise RemoteError(f"{text}: fsspec knows no {scheme}:// filesystem; use a local path, file://, s3://, gs://, "
                          "hf://, memory:// or another scheme fsspec lists (fsspec.available_protocols())") from None
    return Location(text, None, fs, inner)


def _package(scheme: str) -> str:
    """The package fsspec loads for ``scheme`` (``s3fs`` for s3), '' if it does not say."""
    try:
        from fsspec.registry import known_implementations
    except ImportError:
        return {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub"}.get(scheme, "")
    entry = known_implementations.get(scheme, {})
    return str(entry.get("class", "")).split(".")[0]


def _package_hint(scheme: str) -> str:
    package = _package(scheme)
    return f" {package}" if package and package != "fsspec" else ""


def kind(loc: Location) -> str:
    """``"file"``, ``"directory"`` or ``""`` (nothing there) for a resolved location."""
    if loc.local is not None:
        return "directory" if loc.local.is_dir() else "file" if loc.local.exists() else ""
    try:
        info = loc.fs.info(loc.path)
    except FileNotFoundError:
        return ""
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions: each store has its own errors
        raise RemoteError(f"cannot reach {loc.text} ({_why(exc)})") from None
    return "directory" if info.get("type") == "directory" else "file"


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_bytes(loc: Location, error: type[SegzooError]) -> bytes:
    """A remote file's bytes; a missing file, a folder or a failing store is one ``error`` naming the URL."""
    try:
        found = kind(loc)
        if found == "directory":
            raise error(f"{loc.text} is a folder; name the file itself")
        if not found:
            raise error(f"no such file: {loc.text}; check the URL")
        return bytes(loc.fs.cat_file(loc.path))
    except SegzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, network, permissions: each store has its own errors
        raise error(f"cannot read {loc.text} ({_why(exc)})") from None


def write_file(dest: str | os.PathLike[str], write: Callable[[BinaryIO], Any], overwrite: bool = True,
               what: str = "file") -> Path | str:
    """Write through ``write(f)`` to ``dest`` (local or URL) all-or-nothing; returns the local Path or the URL.

    ``overwrite=False``: an existing ``dest`` is a :class:`FileExistsError` and stays as it is.
    """
    loc = locate(dest, what, writing=True)
    if loc.local is not None:
        return atomic_write(loc.local, write, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="segzoo-") as folder:
        staged = Path(folder) / (loc.name or "file")
        with open(staged, "wb") as f:
            write(f)
        upload(staged, loc, overwrite)
    return loc.text


def upload(src: Path, loc: Location, overwrite: bool = True) -> str:
    """Send the local file ``src`` to a remote location in one put (or a temporary name and a move)."""
    fs, path = loc.fs, loc.path
    found = kind(loc)
    if found == "directory":
        raise RemoteError(f"{loc.text} is a folder; name the file to write")
    if found and not overwrite:
        raise FileExistsError(17, "File exists", loc.text)
    try:
        _put(src, fs, path, loc)
    except Exception as exc:  # noqa: BLE001 - credentials, quota, network: one line, the old file (if any) intact
        raise RemoteError(f"cannot write {loc.text} ({_why(exc)}); nothing was replaced") from None
    return loc.text


def _put(src: Path, fs: Any, path: str, loc: Location) -> None:
    if loc.atomic_put:
        fs.put_file(str(src), path)
        return
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    staged = f"{parent.rstrip('/')}/.{loc.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.put_file(str(src), staged)
        fs.mv(staged, path)
    finally:
        if fs.exists(staged):
            fs.rm(staged)


__all__ = ["OBJECT_STORES", "Location", "RemoteError", "kind", "locate", "read_bytes", "upload", "write_file"]
