"""A run folder is one run's: what ``segzoo train`` checks before it writes, and the lock it holds while it does.

* A folder holding any file a run writes (:data:`RUN_FILES`) is an existing run: a new run refuses it
  (continue it with ``--resume``, or pick another folder), and a run resumed from another folder's
  checkpoint refuses it too, so no folder ends up a mix of two runs.
* :class:`RunLock` holds ``.segzoo.lock`` (naming the process and host) for the whole run, so a second
  process training into the same folder stops at once, naming the first. The lock is an OS lock on
  the file (``flock``), released by the kernel when its process dies however it dies, so a lock file
  left by a dead process is simply taken over (with a notice naming it).
* ``resume="auto"`` (``--resume auto``) makes one command that survives requeues: :func:`auto_resume` starts a
  run in a folder without one, resumes the folder's ``last.pt``, and starts again where a run was stopped
  before its first checkpoint, removing only that run's :data:`LEFTOVERS`, by name, under the lock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import SegzooError, TrainingError
from ..core.files import read_text_file
from ..core.lock import LOCK_NAME, RunLock
from .config import TrainConfig

RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.jsonl", "metrics.csv")
# What a run may have written before its first checkpoint: all ``resume="auto"`` ever removes, by name.
LEFTOVERS = ("config.json", "metrics.jsonl", "metrics.csv")
__all__ = ["LEFTOVERS", "LOCK_NAME", "RUN_FILES", "RunLock", "auto_resume", "check_new_run", "check_resume_target",
           "run_files"]


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
        written = json.loads(read_text_file(out / "config.json", "config.json"))
    except (SegzooError, ValueError):
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


def auto_resume(config: TrainConfig, main: bool = True, notice: Callable[[str], None] | None = None) -> TrainConfig:
    """``config`` with ``resume="auto"`` decided: ``True`` (continue its ``out_dir``'s last.pt) or ``False`` (start).

    A folder holding only :data:`LEFTOVERS` (a run stopped before its first checkpoint, which nothing can continue)
    is emptied of them by the ``main`` process, under the folder's lock, and the run starts again. A ``best.pt``
    without ``last.pt`` is a run that trained but cannot be continued: that is refused, never removed.
    """
    if config.resume != "auto":
        return config
    if not config.out_dir:
        raise TrainingError("resume='auto' (--resume auto) continues the run in its folder, so it needs one: give "
                            "--out RUN_DIR (out_dir=), the same at every restart")
    out = Path(config.out_dir)
    found = run_files(out)
    if "best.pt" in found and "last.pt" not in found:
        raise TrainingError(f"{out} holds best.pt but no last.pt, so --resume auto can neither continue that run nor "
                            "start again over it; move best.pt away yourself, or pass another --out")
    if "last.pt" in found or not found or not main:
        return dataclasses.replace(config, resume="last.pt" in found)
    say = notice or (lambda text: print(text, file=sys.stderr))
    with RunLock(out, notice=say):
        found = run_files(out)  # again, now that no one else can write there
        if "last.pt" in found:
            return dataclasses.replace(config, resume=True)
        gone = [name for name in found if name in LEFTOVERS]
        for name in gone:
            (out / name).unlink(missing_ok=True)
    if gone:
        say(f"--resume auto: {out} held a run stopped before its first checkpoint ({', '.join(gone)}, nothing to "
            "resume); removed those and starting again")
    return dataclasses.replace(config, resume=False)
