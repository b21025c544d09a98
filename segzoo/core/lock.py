"""An exclusive lock on an output folder (``.segzoo.lock``), held by ``train`` for a run and by ``predict`` for
its ``--out``: a second process writing into the same folder stops at once, naming the first.

The lock is an OS lock on the file (``flock``), released by the kernel when its process dies however it dies,
so a lock file left by a dead process is simply taken over (with a notice naming it). It lives in the core so
every room that writes a folder can take it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import TrainingError

LOCK_NAME = ".segzoo.lock"


class RunLock:
    """An exclusive lock on a run folder for as long as the ``with`` block runs (the folder is created).

    A second holder, in this process or another, gets a :class:`TrainingError` naming the first one's pid
    and host. Without ``fcntl`` (Windows) the lock file itself is the lock, with a dead pid's file taken over.
    """

    def __init__(self, out: str | os.PathLike[str], notice: Callable[[str], None] | None = None):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.notice = notice or (lambda text: print(text, file=sys.stderr))
        self.fd: int | None = None
        self.created_dir = False

    def __enter__(self) -> RunLock:
        self.created_dir = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a holder that releases between our open and our lock: try the new file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if not _try_lock(fd, self.path):
                    raise TrainingError(
                        f"{self.out} is in use by another segzoo run ({_describe(_read(fd))}); wait for it to end, "
                        "or write into another --out")
                if _same_file(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # we locked a lock file its holder had just removed
        else:  # pragma: no cover - needs five releases in a row racing us
            raise TrainingError(f"could not lock {self.path}; try again")
        previous = _read(fd)
        if previous:
            self.notice(f"note: took over the lock of {self.out} left by a run that is gone ({_describe(previous)})")
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": " ".join(sys.argv)[:300]})
        os.ftruncate(fd, 0)
        os.pwrite(fd, mine.encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked, so no one else's file is removed
        finally:
            os.close(self.fd)  # releases the lock
            self.fd = None
        if self.created_dir:
            try:
                self.out.rmdir()  # a run that wrote nothing leaves no empty folder behind
            except OSError:
                pass


def _try_lock(fd: int, path: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the file's content decides
        holder = _read(fd)
        return not holder or not _alive(holder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: fall back to the holder's pid
        holder = _read(fd)
        return not holder or not _alive(holder)
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: another host's, or an unreadable pid, counts as alive."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text
