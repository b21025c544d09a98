"""The one training step: a loader batch in, forward under autocast, the loss, backward and (at the end of an
accumulation group) the optimiser step. The trainer's loop and ``segzoo bench --mode train`` both run it.

It knows nothing of epochs, checkpoints or logs (the loop's business), and nothing of which model it trains:
it reads only ``model.output_window`` to crop the labels to where the model's scores lie
(:mod:`segzoo.core.batch`), and hands every loss the scores and a :class:`~segzoo.core.batch.Batch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.batch import Batch, Window
from ..core.errors import TrainingError
from ..core.model import IGNORE_INDEX
from .loss import loss_norms, loss_terms
from .runtime import Runtime, all_reduce_sum


def output_window(model: torch.nn.Module, height: int, width: int) -> Window:
    """Where ``model``'s scores lie on an input of ``height`` x ``width``: its declared window, else all of it."""
    declare = getattr(model, "output_window", None)
    return declare(height, width) if callable(declare) else Window.full(height, width)


def to_batch(batch: dict[str, Any], rt: Runtime, model: torch.nn.Module) -> tuple[torch.Tensor, Batch]:
    """A loader batch on the run's device: the input (channels-last where the runtime wants it) and the
    :class:`Batch` a loss and the metrics see, its masks cropped to the model's output window."""
    x = batch["image"].to(rt.device, non_blocking=True)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, targets_of(batch, model, rt.device)


def targets_of(batch: dict[str, Any], model: torch.nn.Module, device: torch.device) -> Batch:
    """A loader batch's :class:`Batch` on ``device``, its masks cropped to the model's output window."""
    mask = batch["mask"].to(device, non_blocking=True)
    height, width = batch["image"].shape[-2:]
    window = output_window(model, height, width)
    if not window.is_full(height, width):
        mask = window.crop(mask).contiguous()
    has_mask = batch.get("has_mask")
    has_mask = (torch.ones(mask.shape[0], dtype=torch.bool) if has_mask is None else has_mask).to(device)
    labels = batch.get("image_labels")
    return Batch(mask, has_mask, None if labels is None else labels.to(device, non_blocking=True))


def accumulation_group(batches_done: int, accumulate: int, batches_per_epoch: int) -> tuple[int, bool]:
    """The size of the accumulation group the next batch belongs to, and whether it is that group's last.

    Groups of ``accumulate`` batches from the start of each epoch; the epoch's last group may be smaller. A loss
    term whose norm is known (:func:`~segzoo.train.loss.loss_norms`) is weighed by each batch's share of it
    over the group; any other is divided by the group's size, a mean over its batches.
    """
    start = batches_done - batches_done % accumulate
    size = min(accumulate, batches_per_epoch - start)
    return max(size, 1), batches_done + 1 >= start + size


class Diverged(TrainingError):
    """The loss was not finite on some rank; the loop says where, and which checkpoint to resume from."""

    def __init__(self, value: float):
        super().__init__(f"the loss became {value}")
        self.value = value


@dataclass
class StepResult:
    """One batch's outcome, summed over ranks: mean loss, images trained on (by kind), bad samples skipped."""

    loss: float
    images: int
    skipped: int
    stepped: bool  # the optimiser stepped (the batch closed an accumulation group)
    kinds: dict[str, int] = field(default_factory=dict)  # Batch.counts(): pixel-masked and image-labelled samples


class TrainStep:
    """Forward, loss, backward and (per accumulation group) the optimiser step, for one loader batch.

    ``net`` is what runs forward (the model, or its DDP wrapper); ``model`` is the model itself (its output
    window and input shape). ``scheduler`` may be None (bench). Callable as ``step(batch, group, last, totals)``.

    Each loss term that says what it is a mean over (:func:`~segzoo.train.loss.loss_norms`: the cross-entropy's
    valid pixels, the image-level loss's image-labelled samples) is weighed by this batch's share of that over
    the whole optimiser step, ``totals`` (:meth:`group_totals` of the step's batches, every rank): so a step
    over K micro-batches on R ranks has the gradient of one batch of all their samples, however the two kinds
    fall into micro-batches and ranks, and a micro-batch without a kind adds 0 for it (never 0/0). ``totals``
    may be left out for a one-batch group (this batch's, over the ranks, are used); other terms, and every
    term of a longer group without ``totals``, are divided by ``group`` and averaged over ranks.
    """

    def __init__(self, net: torch.nn.Module, model: torch.nn.Module, criterion: Callable[[torch.Tensor, Batch],
                 torch.Tensor], optimizer: torch.optim.Optimizer, rt: Runtime, scheduler: Any = None,
                 scaler: torch.amp.GradScaler | None = None, void_input: tuple[int, int, int] | None = None):
        self.net, self.model, self.criterion, self.optimizer, self.rt = net, model, criterion, optimizer, rt
        self.scheduler = scheduler
        self.scaler = scaler if scaler is not None else rt.grad_scaler()
        self.void_input = void_input  # C x H x W of a stand-in for an all-skipped batch (DDP); else learnt

    def __call__(self, batch: dict[str, Any], group: int = 1, last: bool = True,
                 totals: list[float | None] | None = None) -> StepResult:
        rt = self.rt
        if batch["image"].numel() == 0:  # every sample of this batch was skipped as bad
            if not rt.distributed:
                stepped = self.finish_group(last)
                return StepResult(0.0, 0, int(batch["skipped"]), stepped)
            batch = {**self.void_batch(), "skipped": batch["skipped"]}  # keeps the ranks' all-reduces in step
        elif self.void_input is None:
            self.void_input = tuple(batch["image"].shape[1:])
        weights = self.term_weights(batch, group, totals)
        x, targets = to_batch(batch, rt, self.model)
        # DDP all-reduces gradients at every backward; while they accumulate, only the group's last one must
        no_sync = rt.distributed and not last and hasattr(self.net, "no_sync")
        with self.net.no_sync() if no_sync else contextlib.nullcontext():
            stats = self.forward_backward(x, targets, batch, group, weights)
        stepped = self.finish_group(last)
        total = float(stats[1])
        kinds = {"mask": int(stats[4]), "image": int(stats[5])}
        return StepResult(float(stats[0]) / total if total else 0.0, int(total), int(stats[3]), stepped, kinds)

    def norms(self, batch: dict[str, Any]) -> list[float | None]:
        """What each loss term of a loader batch is a mean over (:func:`~segzoo.train.loss.loss_norms`), read where
        its masks are (the loader's: the CPU), in the model's output window (an all-skipped batch: 0)."""
        if batch["image"].numel() == 0:
            batch = self.void_batch()
        return loss_norms(self.criterion, targets_of(batch, self.model, batch["mask"].device))

    def group_totals(self, batches: list[dict[str, Any]]) -> list[float | None]:
        """:meth:`norms` summed over an optimiser step's batches and (one all-reduce, when any term has a norm)
        over the ranks: what to pass as ``totals`` with each of them. Every rank calls it at the same point."""
        totals: list[float | None] = []
        for i, norms in enumerate(self.norms(b) for b in batches):
            totals = norms if i == 0 else [None if t is None or n is None else t + n for t, n in zip(totals, norms)]
        known = [i for i, t in enumerate(totals) if t is not None]
        if self.rt.distributed and known:
            summed = torch.tensor([totals[i] for i in known], dtype=torch.float64, device=self.rt.device)
            all_reduce_sum(summed, self.rt)
            for i, value in zip(known, summed.tolist()):
                totals[i] = value
        return totals

    def term_weights(self, batch: dict[str, Any], group: int, totals: list[float | None] | None
                     ) -> list[float] | None:
        """The factor on each loss term's gradient: this batch's share of the term's norm over the step, times the
        world size (DDP averages gradients over ranks), 0 when the step has none of it; 1/group for a term
        without a norm. None (the whole loss divided by ``group``) without ``totals`` in one process: a one-batch
        step's shares are all 1 (a term the batch has none of is 0 already), a longer group's are unknown."""
        if totals is None and (group > 1 or not self.rt.distributed):
            return None
        norms = self.norms(batch)
        if totals is None:
            totals = self.group_totals([batch])
        if len(totals) != len(norms):
            raise ValueError(f"totals has {len(totals)} terms, the loss {len(norms)}: pass group_totals()'s")
        world = self.rt.world_size if self.rt.distributed else 1
        return [1.0 / group if n is None or t is None else (world * n / t if t > 0 else 0.0)
                for n, t in zip(norms, totals)]

    def forward_backward(self, x: torch.Tensor, targets: Batch, batch: dict[str, Any], group: int = 1,
                         weights: list[float] | None = None) -> torch.Tensor:
        """The loss, checked for divergence on every rank together, and its gradient: each term times its weight
        (:meth:`term_weights`), or with no weights the loss divided by the group size.

        Returns the rank-summed [loss x images, images, non-finite flag, skipped, masked, image-labelled]."""
        with self.rt.autocast():
            scores = self.net(x)
        if weights is None:
            terms = [self.criterion(scores, targets)]
        else:
            terms = loss_terms(self.criterion, scores, targets)
            if len(terms) != len(weights):
                raise TrainingError(f"the loss gave {len(terms)} terms but declared norms for {len(weights)}; its "
                                    "terms() and norms() must match")
        loss = sum(terms[1:], terms[0])
        real = batch["index"] >= 0  # a DDP stand-in batch has index -1
        n = int(real.sum())
        kinds = targets.counts() if n else {"mask": 0, "image": 0}
        dev = loss.device
        stats = torch.stack([loss.detach().float() * n, torch.tensor(float(n), device=dev),
                             (~torch.isfinite(loss.detach())).float(),
                             torch.tensor(float(batch["skipped"]), device=dev),
                             torch.tensor(float(kinds["mask"]), device=dev),
                             torch.tensor(float(kinds["image"]), device=dev)])
        all_reduce_sum(stats, self.rt)
        if stats[2] > 0:
            raise Diverged(loss.item())
        if weights is None:
            weighted = loss / group if group > 1 else loss
        else:
            parts = [term if w == 1.0 else term * w for term, w in zip(terms, weights)]
            weighted = sum(parts[1:], parts[0])
        self.scaler.scale(weighted).backward()
        return stats

    def finish_group(self, last: bool) -> bool:
        """At a group's last batch: step (if any gradient arrived: a group of skipped batches has none), then
        clear the gradients. Returns whether the group ended."""
        if not last:
            return False
        if any(p.grad is not None for g in self.optimizer.param_groups for p in g["params"]):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def void_batch(self) -> dict[str, Any]:
        """A one-sample, all-void batch of the run's input shape: a zero-gradient stand-in for a rank whose whole
        batch was skipped, so the other ranks' all-reduces still have a partner."""
        c, h, w = self.void_input or (3, 64, 64)
        return {"image": torch.zeros(1, c, h, w), "mask": torch.full((1, h, w), IGNORE_INDEX, dtype=torch.long),
                "index": torch.tensor([-1]), "skipped": 0}
