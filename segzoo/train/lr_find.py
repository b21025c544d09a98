"""The learning-rate range test (``segzoo train --lr-find``; Smith, "Cyclical Learning Rates", 2017; fastai's and
Lightning's ``lr_find``): train for a few hundred steps at most while the learning rate grows exponentially, follow
the smoothed loss, stop when it diverges, and suggest a learning rate from the curve.

The sweep (:func:`lr_range_test`) knows nothing of models: it calls ``step(lr)``, one training step at that rate
returning the loss, so it is tested on any function. :func:`find_lr` makes that step from a run's own training
step (:mod:`segzoo.train.step`), :func:`model_step` from a plain model and loss; the swept weights are thrown away
(nothing of the sweep is kept but the plot and the suggestion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import SegzooError
from ..core.files import atomic_write
from ..core.settings import SETTINGS
from . import runtime as rtm
from .config import TrainConfig
from .run_folder import RunLock
from .step import Diverged, TrainStep
from .trainer import Trainer


@dataclass
class LRFind:
    """What a range test saw: the rates tried, the raw and smoothed losses, why it stopped, and the suggestion."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped: str = ""
    suggestion: float | None = None
    steepest: float | None = None  # the rate where the smoothed loss fell fastest (per decade of lr)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed, "stopped": self.stopped,
                "suggestion": self.suggestion, "steepest": self.steepest, "reason": self.reason}


def lr_range_test(step: Callable[[float], float], start: float = 1e-7, end: float = 1.0, steps: int = 100,
                  beta: float = 0.9, diverge: float = 4.0) -> LRFind:
    """Call ``step(lr)`` at ``steps`` rates growing exponentially from ``start`` to ``end``; see :class:`LRFind`.

    The loss is smoothed by an exponential moving average (``beta``, bias-corrected as fastai does); the sweep stops
    early when a loss is not finite or the smoothed loss exceeds ``diverge`` times its lowest value so far (the
    steps after that only measure the explosion). ``steps`` is capped at 1000: a range test is a few hundred steps.
    """
    if not (0 < start < end and math.isfinite(end)):
        raise SegzooError(f"the lr range must satisfy 0 < start < end, got {start:g} to {end:g}")
    SETTINGS["lr_find_steps"].check(steps)
    found = LRFind()
    ratio = (end / start) ** (1 / (steps - 1))
    avg, best = 0.0, math.inf
    for i in range(steps):
        lr = start * ratio**i
        loss = float(step(lr))
        if not math.isfinite(loss):
            found.stopped = f"the loss became {loss} at lr {lr:.3g}"
            break
        avg = beta * avg + (1 - beta) * loss
        smooth = avg / (1 - beta ** (i + 1))
        found.lrs.append(lr)
        found.losses.append(loss)
        found.smoothed.append(smooth)
        best = min(best, smooth)
        if smooth > diverge * best:
            found.stopped = f"the smoothed loss passed {diverge:g}x its lowest at lr {lr:.3g}"
            break
    else:
        found.stopped = f"the sweep reached lr {end:.3g} without diverging"
    suggest(found)
    return found


def suggest(found: LRFind) -> None:
    """Set ``found``'s suggestion: a tenth of the rate where the smoothed loss was lowest, with the steepest descent
    (before that lowest point) named beside it, and one line saying why.

    A tenth of the minimum is the rule that holds on noisy curves: the minimum is already on the edge of
    instability, and the steepest point alone jumps with the noise of a few steps. A curve that never fell gives no
    suggestion, only the reason.
    """
    s, lrs = found.smoothed, found.lrs
    if len(s) < 3:
        found.reason = f"too few steps to judge ({len(s)}; {found.stopped})"
        return
    low = min(range(len(s)), key=s.__getitem__)
    if low == 0 or s[low] >= s[0] * 0.99:
        found.reason = (f"the smoothed loss never fell below its start ({s[0]:.3g}) between lr {lrs[0]:.2g} and "
                        f"{lrs[-1]:.2g}; no suggestion: check the data and the loss, or widen the range")
        return
    slopes = [(s[i + 1] - s[i]) / math.log10(lrs[i + 1] / lrs[i]) for i in range(low)]
    found.steepest = lrs[min(range(len(slopes)), key=slopes.__getitem__)]
    found.suggestion = lrs[low] / 10
    found.reason = (f"suggested lr {found.suggestion:.2g}: a tenth of {lrs[low]:.2g}, where the smoothed loss was "
                    f"lowest ({s[low]:.3g}, from {s[0]:.3g}); it fell fastest at {found.steepest:.2g}; "
                    f"{found.stopped}")


def lr_stepper(optimizer: torch.optim.Optimizer, train_one: Callable[[Any], float],
               batches: Iterable[Any]) -> Callable[[float], float]:
    """``step(lr)`` for :func:`lr_range_test`: ``train_one(batch)`` (a whole training step, returning its loss) on
    the next batch (``batches`` cycled), every parameter group at ``lr`` times its ``lr_mult`` (segzoo's optimisers
    give biases their own multiple), so the sweep trains as the run would."""
    stream = _cycle(batches)

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return train_one(next(stream))

    return step


def model_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               loss_of: Callable[[torch.nn.Module, Any], torch.Tensor],
               batches: Iterable[Any]) -> Callable[[float], float]:
    """:func:`lr_stepper` for a plain model and loss (a user's own loop): ``loss_of(model, batch)`` is the loss; a
    non-finite one is returned without a step."""

    def train_one(batch: Any) -> float:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, batch)
        if torch.isfinite(loss.detach()):
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    return lr_stepper(optimizer, train_one, batches)


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """The batches again and again (a loader reshuffles at each pass); an empty one is an error, not a hang."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise SegzooError("the lr range test found no training batches; check --data and --train-split")


def plot(found: LRFind, path: str | Path, title: str = "learning-rate range test") -> Path:
    """Loss against lr (log scale), raw and smoothed, the suggestion marked, written to ``path`` as a PNG through a
    temporary file; an existing ``path`` is a FileExistsError, left as it was."""
    import matplotlib  # pyplot costs about a second to import: only a range test pays it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.plot(found.lrs, found.losses, color="0.75", lw=0.8, label="loss")
        ax.plot(found.lrs, found.smoothed, color="C0", lw=1.5, label="smoothed")
        if found.suggestion is not None:
            ax.axvline(found.suggestion, color="C3", ls="--", lw=1, label=f"suggested {found.suggestion:.2g}")
        if found.steepest is not None:
            ax.axvline(found.steepest, color="C2", ls=":", lw=1, label=f"steepest {found.steepest:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        if found.smoothed:  # the explosion at the end would flatten the part that matters
            top = max(found.smoothed[0], min(found.smoothed)) * 1.5
            ax.set_ylim(min(min(found.losses), min(found.smoothed)) * 0.9, top)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), overwrite=False)
    finally:
        plt.close(fig)


def find_lr(config: TrainConfig, log: Callable[[str], None] = print, steps: int = 100, start: float = 1e-7,
            end: float = 1.0) -> tuple[LRFind, Path]:
    """The range test on ``config``'s run as it would train: the run's parts (:func:`segzoo.train.setup.build_run`:
    model, data, augmentation, optimiser, loss, autocast) and its one training step (:class:`TrainStep`, without
    the schedule: the sweep sets the rate). The plot goes into the run folder (``lr_find.png``, ``lr_find-2.png``...
    never replacing one); returns the result and the plot's path. The swept weights are dropped: the folder holds
    no run afterwards, so the run itself can be started there.
    """
    rt = rtm.setup(config.device, config.amp, log)
    try:
        if rt.distributed:
            raise SegzooError("--lr-find runs in one process; run it without torchrun, then train with the lr it "
                              "suggests")
        trainer = Trainer(config, rt, None, log)
        with RunLock(trainer.out, notice=log):
            trainer.build()
            parts = trainer.parts
            parts.net.train()
            step = TrainStep(parts.net, parts.model, parts.criterion, parts.optimizer, rt)
            found = lr_range_test(lr_stepper(parts.optimizer, _loss_of(step),
                                             _Epochs(parts.data.loader, parts.data.sampler)), start, end, steps)
            path = _free_name(trainer.out, "lr_find", ".png")
            plot(found, path, f"{trainer.cfg.model}: lr range test ({len(found.lrs)} steps, batch "
                              f"{trainer.cfg.batch_size})")
    finally:
        rtm.teardown(rt)
    return found, path


def _loss_of(step: TrainStep) -> Callable[[dict[str, Any]], float]:
    """The step's mean loss on a batch; a diverged (non-finite) loss is returned, which ends the sweep."""

    def train_one(batch: dict[str, Any]) -> float:
        try:
            return step(batch).loss
        except Diverged as exc:
            return exc.value

    return train_one


class _Epochs:
    """The training loader, a new shuffle at each pass (as the trainer's epochs), batches of skipped samples left
    out."""

    def __init__(self, loader: Iterable[dict[str, Any]], sampler: Any):
        self.loader, self.sampler, self.epoch = loader, sampler, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return (b for b in self.loader if b["image"].numel())


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}{suffix}", n + 1
    return path
