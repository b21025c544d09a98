"""A run folder is one run's: what ``segzoo train`` checks before it writes, and the lock it holds while it does.

* A folder holding any file a run writes (:data:`RUN_FILES`) is an existing run: a new run refuses it
  (continue it with ``--resume``, or pick another folder), and a run resumed from another folder's
  checkpoint refuses it too, so no folder ends up a mix of two runs.
* :class:`RunLock` holds ``.segzoo.lock`` (naming the process and host) for the whole run, so a second
  process training into the same folder stops at once, naming the first. The lock is an OS lock on
  the file (``flock``), released by the kernel when its process dies however it dies, so a lock file
  left by a dead process is simply taken over (with a notice naming it).
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

from ..core.errors import TrainingError
from .config import TrainConfig

RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.jsonl", "metrics.csv")
LOCK_NAME = ".segzoo.lock"


def run_files(out: str | os.PathLike[str]) -> list[str]:
    """The files of a run that ``out`` already holds (none: a new or empty folder)."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()]


def check_new_run(out: str | os.PathLike[str]) -> None:
    """Refuse a folder that holds (part of) a run: a new run there would replace its files."""
    found = run_files(out)
    if not found:
        return
    if "last.pt" in found:
        raise TrainingError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume --out {out}, "
                            "or pass another --out (segzoo never replaces a run's files with another run's)")
    raise TrainingError(f"{out} already holds part of a run ({', '.join(found)}) but no last.pt to resume from; "
                        "pass another --out, or move those files away yourself (segzoo never replaces them)")


# What else a run writes into its folder before its first checkpoint (segzoo.train.class_weights' cache).
EARLY_FILES = ("class_weights.json",)
KEEP = ("both", "best", "last")


def restart_run(out: str | os.PathLike[str]) -> list[str]:
    """Clear a run that stopped before its first checkpoint, so ``--restart`` can train it again in ``out``.

    Only segzoo's own files go (config.json, the metric logs, the class-weight cache), under the run's
    lock; a folder holding a checkpoint (a run that can be resumed, or a trained model) is refused, and so is
    a config.json that is not a run's. Returns the names removed.
    """
    out = Path(out)
    found = run_files(out)
    checkpoints = [n for n in found if n.endswith(".pt")]
    if checkpoints:
        raise TrainingError(f"--restart clears only a run that stopped before its first checkpoint, and {out} holds "
                            f"{', '.join(checkpoints)}; continue it with --resume --out {out}, or pass another --out "
                            "(segzoo never deletes a checkpoint)")
    if "config.json" in found and not _is_run_config(out / "config.json"):
        raise TrainingError(f"{out / 'config.json'} is not a segzoo run's config; --restart removes only segzoo's "
                            "own files: move it away yourself, or pass another --out")
    removed = []
    with RunLock(out):
        for name in (*found, *EARLY_FILES):
            if (out / name).is_file():
                (out / name).unlink()
                removed.append(name)
    return removed


def _is_run_config(path: Path) -> bool:
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and {"model", "epochs", "out_dir"} <= set(written)


def keep_checkpoints(out: str | os.PathLike[str], keep: str) -> list[str]:
    """After a finished run, ``--keep best`` removes last.pt (it holds the optimizer state, about twice best.pt:
    the run can no longer be resumed) and ``--keep last`` removes best.pt; ``both`` removes nothing. A run
    without the checkpoint to keep (no validation, so no best.pt) keeps everything. Returns the names removed."""
    if keep not in KEEP:
        raise TrainingError(f"--keep takes {', '.join(KEEP)}, got {keep!r}")
    out = Path(out)
    if keep == "both" or not (out / f"{keep}.pt").is_file():
        return []
    other = out / ("last.pt" if keep == "best" else "best.pt")
    if not other.is_file():
        return []
    other.unlink()
    return [other.name]


def check_resume_target(out: str | os.PathLike[str], checkpoint: str | os.PathLike[str],
                        stored: dict[str, Any] | None = None) -> None:
    """Resuming ``checkpoint`` into ``out``: fine in the checkpoint's own folder, in a folder without a run, or in
    one where this very continuation began and was stopped before its first checkpoint (its config.json has the
    checkpoint's settings, ``stored``, and there is no last.pt)."""
    out, checkpoint = Path(out), Path(checkpoint)
    if _same_dir(out, checkpoint.parent):
        return
    found = run_files(out)
    if not found or ("last.pt" not in found and stored is not None and _same_settings(out, stored)):
        return
    mine = f" (if {out} continues this run, resume its own: --resume --out {out})" if "last.pt" in found else ""
    raise TrainingError(
        f"--out {out} holds another run ({', '.join(found)}) than the checkpoint {checkpoint}; resuming there "
        f"would mix two runs: pass --out {checkpoint.parent} to continue in the checkpoint's folder, or a new "
        f"folder{mine}")


def _same_settings(out: Path, stored: dict[str, Any]) -> bool:
    try:
        written = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(written, dict):
        return False
    keys = (set(written) | set(stored)) - set(TrainConfig.RUNTIME)
    return all(written.get(k) == stored.get(k) for k in keys)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


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
                        "or train into another --out")
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
