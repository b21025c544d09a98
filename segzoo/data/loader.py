"""The DataLoader every segzoo loop uses: batches of :func:`collate`, persistent workers, pinned memory on CUDA,
a user error raised in a worker process reaching the caller as itself, and workers that stop cleanly on SIGTERM to
the process group (a batch being handed over is received first) and die with their parent."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.errors import SegzooError
from ..core.signals import deferred_signals, loader_worker_init, stop_workers_at_exit
from .dataset import collate


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> DataLoader:
    """A loader over ``sampler``'s indices; with ``workers`` > 0 the worker processes live across epochs.

    Persistent workers keep the dataset they started with, so anything that changes per epoch must
    come through the sampler's indices (``ShardedSampler(tag_epoch=True)``), not through attributes
    set on the dataset afterwards. The loader has its own generator: creating an iterator never draws
    from the global RNG that dropout uses, which is what lets a resumed run repeat an uninterrupted one.
    """
    return SegmentationLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                              collate_fn=collate, pin_memory=pin_memory, persistent_workers=workers > 0,
                              generator=torch.Generator().manual_seed(seed), worker_init_fn=worker_init())


def worker_init() -> Callable[[int], None]:
    """The ``worker_init_fn`` of every segzoo loader: workers leave SIGTERM/SIGINT to this (their parent) process,
    which stops them in order, and die with it (``kill -9`` included) instead of living on as orphans; workers
    still alive when this process exits are killed then (:func:`stop_workers_at_exit`), not waited for."""
    stop_workers_at_exit()
    return functools.partial(loader_worker_init, os.getpid())


class SegmentationLoader(DataLoader):
    """A DataLoader whose :class:`SegzooError` from a worker process reads as it does from the main process.

    DataLoader re-raises a worker's exception as its own type with the message replaced by
    ``Caught DataError in DataLoader worker process 0. Original Traceback ...``; the CLI prints a
    SegzooError's message as one line, so the user would get the traceback instead of the message
    naming the file and the fix.
    """

    def __iter__(self) -> Iterator[Any]:
        return _original_errors(super().__iter__(), self)


def _original_errors(batches: Iterator[Any], loader: DataLoader) -> Iterator[Any]:
    while True:
        try:
            with deferred_signals():  # a SIGTERM mid-handover would reset a worker's connection (its traceback)
                batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            _stop_workers(batches, loader)
            original = worker_error(exc) if isinstance(exc, SegzooError) else exc
            if original is exc:
                raise
            raise original from None
        yield batch


def _stop_workers(batches: Iterator[Any], loader: DataLoader) -> None:
    """End the workers of an iterator that raised, at once, and let the loader start fresh ones next time.

    Left to DataLoader, a worker of an iterator that raised mid-epoch outlives its stop request: the iterator's
    clean-up waits 5 s for it, then sends SIGTERM, which a segzoo worker ignores (:func:`loader_worker_init`), and
    waits 5 s more, whenever the iterator is collected (10 s of a Python caller's time, once per failed loader).
    """
    workers = getattr(batches, "_workers", [])
    if getattr(batches, "_worker_pids_set", False):  # else torch's SIGCHLD handler reports each as a crash
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(batches))
        batches._worker_pids_set = False  # type: ignore[attr-defined]
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    for worker in workers:
        worker.join(timeout=5)
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    if getattr(loader, "_iterator", None) is batches:  # a persistent-worker loader would hand it out again
        loader._iterator = None


def worker_error(exc: SegzooError) -> SegzooError:
    """The error a loader worker raised, with its own message (``exc`` itself if it was not re-raised from one).

    The worker's formatted traceback ends with ``<module>.<class>: <message>``: the message is what follows.
    """
    text, cls = str(exc), type(exc)
    if not text.startswith(f"Caught {cls.__name__} in DataLoader worker process"):
        return exc
    last = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(last)
    if at < 0:
        return exc
    original = cls.__new__(cls)  # not cls(message): some errors take other arguments
    Exception.__init__(original, text[at + len(last):].rstrip("\n"))
    return original
