"""What a dataset held when it was used: one digest of its files' names, sizes and contents.

A study trains many runs on "the same data" over hours or days; a mask fixed in place between two
seeds, or a study resumed over another copy, would otherwise average runs on different data without
a word. :func:`fingerprint` lists every file under the root (hidden files and segzoo's own
``segzoo_stats.json`` left out) with its size, modification time and SHA-256, and digests the names,
sizes and hashes (not the times): a copy elsewhere has the same digest, an edit in place another.
Given the previous listing it hashes again only the files whose size or time changed, so checking
before each run costs a directory walk.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import DataError

# Files segzoo itself writes into a dataset folder (segzoo.data.stats): not part of the data.
OWN_FILES = ("segzoo_stats.json",)
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as ``sha256:<hex>``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def fingerprint(root: str | os.PathLike[str], previous: dict[str, Any] | None = None,
                exclude: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"root", "digest", "count", "bytes", "files": {relpath: [size, mtime_ns, sha256]}}`` of ``root``.

    ``previous`` (an earlier fingerprint of the same data) lends the hashes of files whose size and
    time are unchanged. ``exclude``: a folder inside ``root`` that is not data (a study writing there).
    """
    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; pass --data DIR")
    known = (previous or {}).get("files") or {}
    files: dict[str, list[Any]] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and (skip is None or (Path(folder) / d).resolve() != skip))
        for name in sorted(names):
            if name.startswith(".") or name in OWN_FILES:
                continue
            path = Path(folder) / name
            if not path.is_file():  # a pipe or a dangling link is no data
                continue
            st = path.stat()
            rel = path.relative_to(root).as_posix()
            old = known.get(rel)
            same = isinstance(old, list) and len(old) == 3 and old[:2] == [st.st_size, st.st_mtime_ns]
            files[rel] = [st.st_size, st.st_mtime_ns, old[2] if same and old is not None else file_digest(path)]
    listing = json.dumps([[rel, v[0], v[2]] for rel, v in sorted(files.items())], separators=(",", ":"))
    digest = f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"
    return {"root": str(root), "exclude": None if skip is None else str(skip), "digest": digest,
            "count": len(files), "bytes": sum(v[0] for v in files.values()), "files": files}


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, file by file: ``changed x``, ``added y``, ``removed z``."""
    a, b = before.get("files") or {}, now.get("files") or {}
    out = [f"removed {k}" for k in sorted(set(a) - set(b))]
    out += [f"added {k}" for k in sorted(set(b) - set(a))]
    out += [f"changed {k}" for k in sorted(set(a) & set(b)) if a[k][2] != b[k][2] or a[k][0] != b[k][0]]
    return out
