"""Signals held back while a file is written, and loader workers that live and die with their parent.

A SIGTERM (what ``timeout``, Docker, Kubernetes and SLURM send) or a Ctrl-C may land anywhere. Landing
inside ``torch.save``, the handler's exception is raised inside PyTorch's C++ writer, which turns it into
``RuntimeError: [enforce fail at inline_container.cc]``: the program then ends as a crash (exit 1), not as
a stop (exit 143 with the resume line). :func:`deferred_signals` holds such signals while a write runs and
delivers them, to the handler that was there before, as soon as it is done; the file is then whole.

Loader workers get every signal sent to their process group as well: killed by it, their parent's
DataLoader reports them as crashed with a traceback. :func:`loader_worker_init` has them ignore SIGTERM
and SIGINT (the parent stops them in order) and, on Linux, die when their parent dies, ``kill -9``
included, instead of living on as orphans.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

HELD = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name))


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = HELD) -> Iterator[None]:
    """Hold ``signums`` (SIGTERM, SIGINT) for the ``with`` block, then deliver each one that came, once.

    A held signal is delivered after the block to the handler that was in place before (the CLI's, which
    raises; Python's, which raises KeyboardInterrupt; or the default, which ends the process). Only the
    main thread can set handlers; elsewhere (signals are delivered to the main thread anyway) the block
    runs as it is. A handler set outside Python (``getsignal`` gives None) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signums:
            before = signal.getsignal(signum)
            if before is None:
                continue
            signal.signal(signum, hold)
            previous[signum] = before
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def loader_worker_init(parent_pid: int, worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` (bind ``parent_pid`` with functools.partial in the parent).

    The worker ignores SIGTERM and SIGINT, which reach it too when they are sent to the whole process group:
    its parent decides, and shuts it down in order. On Linux the kernel sends it SIGKILL when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); a parent already gone before that was set ends the worker at once.
    """
    for signum in HELD:
        signal.signal(signum, signal.SIG_IGN)
    if not sys.platform.startswith("linux") or os.getppid() != parent_pid:  # started by a fork server: not ours
        return
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died between the check and arming the death signal
        os._exit(1)


def stop_workers_at_exit() -> None:
    """Called in the parent (once is enough): at exit, kill the DataLoader workers still alive.

    A worker ignores SIGTERM (:func:`loader_worker_init`), so multiprocessing's own exit handler, which sends
    daemonic children SIGTERM and then waits for them without a time limit, would wait forever for a worker of a
    loader still referenced at exit (a persistent-worker loader of a finished run, a test's fixture). This handler,
        registered after multiprocessing's, runs before it and ends every daemonic child (which multiprocessing would
    end anyway) with SIGKILL, as the parent's death would."""
    if not _AT_EXIT:
        _AT_EXIT.append(True)
        atexit.register(_kill_loader_workers)


_AT_EXIT: list[bool] = []


def _kill_loader_workers() -> None:
    import multiprocessing

    children = [p for p in multiprocessing.active_children() if p.daemon]
    if children and hasattr(signal, "SIGCHLD"):  # torch's SIGCHLD handler would report each as a crashed worker
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for p in children:  # multiprocessing would send these SIGTERM and wait: a loader worker ignores it
        p.kill()
        p.join(timeout=5)


def _die_with_parent() -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl: the parent's shutdown still runs
        pass
