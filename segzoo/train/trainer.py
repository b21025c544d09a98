"""The one trainer for every network: pixel-wise cross-entropy, any model ``segzoo.create_model`` builds.

It only calls ``model(x)`` and reads ``model.recipe``/``model.normalization``, so it never knows which
backbone or head it trains. ``train(config)`` runs (or resumes) a run in ``config.out_dir``:
``last.pt`` (which also holds the optimiser, scheduler, scaler, epoch and RNG state, to resume) and
``best.pt`` (by validation mean IU) are ``segzoo.load_model``-readable checkpoints; ``metrics.jsonl`` and
``metrics.csv`` log every epoch that ``last.pt`` holds (they are rewritten with each ``last.pt``, so they never
claim an epoch a resume would train again). Under ``torchrun`` it runs DDP and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core.errors import CheckpointError, SegzooError, TrainingError
from ..core.files import atomic_write_text
from ..io.checkpoint import save_model
from . import runtime as rtm
from .autosave import SaveClock
from .config import TrainConfig
from .early_stop import EarlyStopping
from .evaluate import evaluate
from .logs import write_logs
from .metrics import summary_line
from .optim import optimizer_defaults
from .records import EpochRecord, TrainResult
from .run_folder import RunLock, auto_resume, check_new_run, check_resume_target
from .setup import build_run, default_run_folder
from .state import (
    check_epochs_left,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from .step import Diverged, StepResult, accumulation_group, output_window
from .tensorboard_log import TensorBoardLog


def train(config: TrainConfig, on_epoch: Callable[[EpochRecord], None] | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Run (or, with ``config.resume``, continue) one training run; ``on_epoch`` gets each epoch's record."""
    owned = not torch.distributed.is_initialized()
    rt = rtm.setup(config.device, config.amp, log)
    try:
        config = auto_resume(config, main=rt.is_main, notice=log)  # resume="auto": decided once the rank is known
        return Trainer(config, rt, on_epoch, log).run()
    finally:
        if owned:
            rtm.teardown(rt)


class Trainer:
    def __init__(self, config: TrainConfig, rt: rtm.Runtime, on_epoch: Callable | None, log: Callable[[str], None]):
        self.rt, self.on_epoch = rt, on_epoch
        self.log = log if rt.is_main else (lambda *_: None)
        self.ckpt = None
        if config.resume:
            path = Path(config.out_dir) / "last.pt" if config.resume is True else Path(config.resume)
            self.ckpt, self.ckpt_path = load_training_checkpoint(path), path
            config = config.resumed_from(self.ckpt["config"])
            self.log(f"resuming {path} at epoch {self.ckpt['epoch'] + 1}, step {self.ckpt['step']}")
        if not config.model:
            raise SegzooError("no model to train: give one, e.g. --model <backbone>-<head> (segzoo list shows them)")
        config = config.resolved()  # the preset's values in the unset settings; a stored config is already resolved
        config.check()
        if not config.out_dir:
            config = dataclasses.replace(config, out_dir=str(default_run_folder(config.model)))
        if self.ckpt is not None:
            check_epochs_left(config.epochs, self.ckpt, self.ckpt_path)
        self.cfg = config
        self.out = Path(config.out_dir)
        self.written: set[Path] = set()
        self.progress = sys.stderr.isatty() if config.progress is None else config.progress

    # -- set-up ---------------------------------------------------------------------------------
    def build(self) -> None:
        """The run's parts (segzoo.train.setup.build_run): model, data, optimiser, loss and the training step."""
        self.parts = build_run(self.cfg, self.rt, self.out, resuming=self.ckpt is not None, log=self.log)

    def restore(self) -> None:
        """Put back everything a checkpoint holds, so the run continues exactly where it stopped."""
        self.epoch, self.step, self.batches_done = 0, 0, 0
        self.compiled = False  # --compile: whether the first (compiling) step has run
        self.history: list[EpochRecord] = []
        self.logged = 0  # epochs in metrics.jsonl/csv as this run last wrote them
        self.best: dict[str, Any] | None = None
        self.partial = self._new_partial()
        self.initial_metrics = None
        self.good_checkpoint: Path | None = None  # the newest checkpoint of this run, to resume from
        self.stopper = EarlyStopping(self.cfg.early_stop, self.cfg.min_delta)
        self.stop_reason: str | None = None
        self.save_clock = SaveClock(self.cfg.save_every_minutes)
        if self.ckpt is None:
            return
        self.good_checkpoint = self.ckpt_path
        c, parts = self.ckpt, self.parts
        parts.model.load_state_dict(c["state_dict"])
        for what, load, state in (("optimizer", parts.optimizer.load_state_dict, c["optimizer"]),
                                  ("scheduler", parts.scheduler.load_state_dict, c["scheduler"]),
                                  ("scaler", parts.step.scaler.load_state_dict, c.get("scaler"))):
            if what == "scaler" and not state:
                continue
            try:
                load(state)
            except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
                raise CheckpointError(f"{self.ckpt_path}: its {what} state does not fit this run "
                                      f"({type(exc).__name__}: {str(exc)[:100]}); the checkpoint is damaged or was "
                                      "not written by segzoo: resume from another one") from None
        self.epoch, self.step, self.batches_done = c["epoch"], c["step"], c["batches_done"]
        self.history, self.best = [EpochRecord.from_dict(r) for r in c["history"]], c.get("best")
        self.partial = {**self._new_partial(), **c["partial"]}
        self.initial_metrics = c.get("initial_metrics")
        self.stopper.load(c.get("early_stop"))
        set_rng_state(c["rng"])

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """The run, holding its folder's lock throughout (rank 0: the one that writes)."""
        try:
            if not self.rt.is_main:
                return self._run()
            with RunLock(self.out, notice=self.log):
                if self.ckpt is None:
                    check_new_run(self.out)
                else:
                    check_resume_target(self.out, self.ckpt_path, self.ckpt.get("config"))
                return self._run()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as the CLI raises it: say how to go on
            exc.segzoo_message = self.resume_hint()  # type: ignore[attr-defined]
            raise

    def _run(self) -> TrainResult:
        self.build()
        self.restore()
        cfg = self.cfg
        if self.rt.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.written.add(atomic_write_text(json.dumps(cfg.to_dict(), indent=1) + "\n", self.out / "config.json"))
            if self.ckpt is not None:  # the logs of the checkpoint resumed from: any later rows go
                self.save_logs(always=True)
        self.tb: TensorBoardLog | None = None
        if cfg.tensorboard and self.rt.is_main:  # a resumed run hides the events of the epochs it trains again
            self.tb = TensorBoardLog(self.out / "tensorboard", purge_step=self.epoch + 1 if self.ckpt else None)
        try:
            return self._train()
        finally:
            if self.tb is not None:
                self.tb.close()

    def _train(self) -> TrainResult:
        cfg, model = self.cfg, self.parts.model
        self.log(f"training {model.recipe.name} ({sum(p.numel() for p in model.parameters()):,} "
                 f"parameters) on {len(self.parts.data.train_set)} images of {cfg.data or 'the demo dataset'}, "
                 f"{self.parts.steps_per_epoch(cfg.accumulate)} steps/epoch x {cfg.epochs} epochs, device "
                 f"{self.rt.device}"
                 + (f", gradients of {cfg.accumulate} batches of {cfg.batch_size} per step" if cfg.accumulate > 1
                    else "")
                 + (f" x {self.rt.world_size} processes" if self.rt.distributed else "")
                 + (f", amp {str(self.rt.amp_dtype).removeprefix('torch.')}" if self.rt.amp_dtype else ""))
        # the settings as resolved, preset or not: the real-data defaults (AdamW, lr 1e-4, poly) are said, not implied
        self.log(f"{f'preset {cfg.preset}' if cfg.preset else 'settings'}: {self.settings_line()}")
        if self.ckpt is None and self.parts.data.val_loader is not None:
            self.initial_metrics = self.validate()
            self.log(f"before training: {summary_line(self.initial_metrics)}")
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            if self.stopper.should_stop:  # also a resumed run whose patience had run out
                self.stop_reason = self.stopper.reason(self.epoch)
                self.log(self.stop_reason)
                break
            stopped = self.train_epoch()
            if not stopped:
                self.end_epoch()
        return self.result(stopped)

    def resume_hint(self) -> str:
        """Where an interrupted run stands and the command that continues it."""
        where = (f"stopped in epoch {self.epoch + 1} at step {self.step}" if hasattr(self, "step")
                 else "stopped before training began")
        good = getattr(self, "good_checkpoint", None) or (self.ckpt_path if self.ckpt is not None else None)
        if good is None or not Path(good).is_file():
            return f"{where}; no checkpoint was written yet, so there is nothing to resume: start again"
        if Path(good).resolve() == (self.out / "last.pt").resolve():
            how = f"segzoo train --resume --out {self.out}"
        else:
            how = f"segzoo train --resume {good} --out {self.out}"
        return f"{where}; the last good checkpoint is {good}: continue with '{how}'"

    def settings_line(self) -> str:
        """The run's batch, loss, optimiser and model settings as resolved (what a preset set, overrides included)."""
        cfg, groups = self.cfg, self.parts.optimizer.param_groups
        opt = f"{type(self.parts.optimizer).__name__} lr {groups[0]['lr']:g}"
        if "momentum" in groups[0]:
            opt += f" momentum {groups[0]['momentum']:g}"
        opt += f" weight decay {groups[0]['weight_decay']:g}"
        if len(groups) > 1:
            opt += f" (biases: lr x{groups[1]['lr_mult']:g}, weight decay {groups[1]['weight_decay']:g})"
        head = ", ".join(f"{k}={v}" for k, v in sorted(cfg.head_kwargs.items()))
        schedule = optimizer_defaults(cfg.optimizer)["schedule"]
        return (f"batch {cfg.batch_size}, loss {cfg.loss_reduction}, {opt}, {schedule} lr, geometry "
                f"{self.parts.model.recipe.geometry}, head {head or 'defaults'}")

    def train_epoch(self) -> bool:
        """One pass over this rank's shard; True if the run stopped early (``stop_at_step``)."""
        cfg, rt, data = self.cfg, self.rt, self.parts.data
        data.sampler.set_epoch(self.epoch, skip=self.batches_done * cfg.batch_size)
        self.parts.net.train()
        batches = data.loader
        bar = None
        if self.progress and rt.is_main:
            bar = batches = tqdm(data.loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                                 dynamic_ncols=True, initial=self.batches_done, total=data.steps_per_epoch)
        start = time.perf_counter() - self.partial["time_s"]
        for group in self.groups(batches):
            # one step's batches are read before the first of them trains: the step weighs each batch's loss by
            # its share of the valid pixels and image-labelled samples of the whole step (TrainStep)
            totals = self.parts.step.group_totals(group) if len(group) > 1 else None
            for batch in group:
                done = self.train_step(batch, totals)
                self.partial["loss_sum"] += done.loss * done.images
                self.partial["images"] += done.images
                self.partial["skipped"] += done.skipped
                for kind, n in done.kinds.items():
                    self.partial[f"{kind}_samples"] = self.partial.get(f"{kind}_samples", 0) + n
                self.batches_done += 1
                self.partial["time_s"] = time.perf_counter() - start
                if bar is not None:
                    bar.set_postfix({"loss": f"{done.loss:.4f}",
                                     "img/s": f"{self.partial['images'] / max(self.partial['time_s'], 1e-9):.1f}"})
                if not done.stepped:  # gradients accumulating: no step, so nothing to save or stop at
                    continue
                self.step += 1
                if self.step_save_due() and self.batches_done < data.steps_per_epoch:  # else end_epoch saves
                    self.save("last.pt")
                if cfg.stop_at_step and self.step >= cfg.stop_at_step:
                    self.save("last.pt")
                    self.log(f"stopped at step {self.step} (stop_at_step); resume with --resume")
                    return True
        return False

    def groups(self, batches: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """The epoch's batches, one optimiser step's (accumulation group's) at a time, from ``batches_done``."""
        it, done = iter(batches), self.batches_done
        while True:
            size, _ = accumulation_group(done, self.cfg.accumulate, self.parts.data.steps_per_epoch)
            group = list(itertools.islice(it, size - done % self.cfg.accumulate))
            if not group:
                return
            done += len(group)
            yield group

    def train_step(self, batch: dict[str, Any], totals: list[float | None] | None = None) -> StepResult:
        """The run's one step (segzoo.train.step) on a batch, in its accumulation group (``totals``: the group's,
        TrainStep.group_totals); a diverged loss names the epoch, the step and the checkpoint to resume from."""
        group, last = accumulation_group(self.batches_done, self.cfg.accumulate, self.parts.data.steps_per_epoch)
        first = self.cfg.compile and not self.compiled
        start = time.perf_counter()
        try:
            done = self.parts.step(batch, group, last, totals)
            if first:
                self.compiled = True
                self.log(f"--compile: the first step took {time.perf_counter() - start:.1f} s (torch.compile "
                         "compiling); the epoch's img/s includes it")
            return done
        except Diverged as exc:
            where = f"{exc} at epoch {self.epoch + 1}, step {self.step + 1}: the run diverged"
            if self.good_checkpoint is None:
                raise TrainingError(
                    f"{where} and stopped; no checkpoint was written yet, so there is nothing to resume: start "
                    "again with a lower --lr (or another --optimizer), or check the data") from None
            raise TrainingError(
                f"{where} and stopped. The last good checkpoint is {self.good_checkpoint}; resume from it with a "
                "lower --lr (or another --optimizer), or check the data") from None

    def step_save_due(self) -> bool:
        """A checkpoint due by the step count (save_every_steps) or by the clock (save_every_minutes)."""
        by_steps = bool(self.cfg.save_every_steps) and self.step % self.cfg.save_every_steps == 0
        return by_steps or self.save_clock.due()

    @staticmethod
    def _new_partial() -> dict[str, Any]:
        """The running sums of the epoch in progress (saved in mid-epoch checkpoints)."""
        return {"loss_sum": 0.0, "images": 0, "skipped": 0, "time_s": 0.0}

    def end_epoch(self) -> None:
        cfg = self.cfg
        images, secs = self.partial["images"], self.partial["time_s"]
        record = EpochRecord(
            epoch=self.epoch + 1, step=self.step,
            train_loss=self.partial["loss_sum"] / images if images else float("nan"),
            lr=self.parts.optimizer.param_groups[0]["lr"], images_per_s=images / secs if secs else 0.0, time_s=secs,
            images=images, skipped=self.partial["skipped"], mask_samples=self.partial.get("mask_samples", 0),
            image_samples=self.partial.get("image_samples", 0))
        last_epoch = self.epoch + 1 == cfg.epochs
        if self.parts.data.val_loader is not None and ((self.epoch + 1) % cfg.eval_every == 0 or last_epoch):
            record.val = self.validate()
        self.epoch, self.batches_done = self.epoch + 1, 0
        self.partial = self._new_partial()
        self.history.append(record)
        is_best = record.val is not None and (self.best is None or record.val["mean_iu"] > self.best["mean_iu"])
        if is_best:
            self.best = {**record.val, "epoch": record.epoch}
        if record.val is not None:
            self.stopper.update(record.val["mean_iu"], record.epoch)
        self.log(f"epoch {record.epoch}/{cfg.epochs}  loss {record.train_loss:.4f}  "
                 f"{record.images_per_s:.1f} img/s  {record.time_s:.0f}s"
                 + (f"  {record.skipped} skipped (bad samples)" if record.skipped else "")
                 + (f"  samples: {record.mask_samples} with masks, {record.image_samples} image-labelled"
                    if record.image_samples else "")
                 + (f"  val: {summary_line(record.val)}" + ("  (best)" if is_best else "") if record.val is not None
                    else ""))
        # the logs are written with last.pt (save), so they hold the epochs it holds: with --save-every-epochs N an
        # epoch's row waits for the checkpoint that covers it, and a stop in between leaves no row a resume redoes
        if self.epoch == cfg.epochs or self.step_save_due() or self.stopper.should_stop or (
                cfg.save_every_epochs and self.epoch % cfg.save_every_epochs == 0):
            self.save("last.pt")
        if is_best:
            self.save("best.pt")
        if self.tb is not None:
            self.tb.epoch(record)
            if record.val is not None:
                self.tb.predictions(record.epoch, self.sample_predictions())
        if self.on_epoch is not None:
            self.on_epoch(record)

    @torch.no_grad()
    def sample_predictions(self, count: int = 3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(image, label, prediction) of the first few validation images, for the TensorBoard log."""
        model, val_set = self.parts.model, self.parts.data.val_set
        was_training = model.training
        model.eval()
        out = []
        for i in range(min(count, len(val_set))):
            sample = val_set[i]
            if sample is None:  # a bad pair skipped with --skip-bad
                continue
            image, label = val_set.load(i)
            with self.rt.autocast():
                scores = model(sample["image"][None].to(self.rt.device))
            rows, cols = output_window(model, *sample["image"].shape[-2:]).slices  # a valid-convolution model's
            image, label = image[rows, cols], label[rows, cols]
            pred = scores.argmax(1)[0].cpu().numpy().astype(np.uint8)
            out.append((image, label, pred[: label.shape[0], : label.shape[1]]))
        model.train(was_training)
        return out

    def validate(self) -> dict[str, Any]:
        parts = self.parts
        return evaluate(parts.model, parts.data.val_loader, self.rt, parts.model.num_classes, parts.class_names,
                        progress=self.progress and self.rt.is_main)

    # -- writing (rank 0 only) ------------------------------------------------------------------
    def save(self, name: str) -> None:
        """``last.pt``: all it takes to resume. ``best.pt``: weights, recipe and metrics only (a third the size)."""
        if name == "last.pt":
            self.good_checkpoint = self.out / name  # on every rank: each one reports it if the loss diverges
            self.save_clock.saved()
        if not self.rt.is_main:
            return
        if name == "best.pt":
            path = save_model(self.parts.model, self.out / name, kind="best", config=self.cfg.to_dict(),
                              epoch=self.epoch, best=self.best)
            self.written.add(path)
            return
        parts = self.parts
        scaler = parts.step.scaler
        path = save_training_checkpoint(
            self.out / name, parts.model, config=self.cfg.to_dict(), optimizer=parts.optimizer.state_dict(),
            scheduler=parts.scheduler.state_dict(), scaler=scaler.state_dict() if scaler.is_enabled() else {},
            epoch=self.epoch, step=self.step, batches_done=self.batches_done, partial=dict(self.partial),
            history=[r.to_dict() for r in self.history], best=self.best, initial_metrics=self.initial_metrics,
            rng=rng_state(), early_stop=self.stopper.state())
        self.written.add(path)
        self.save_logs()  # after the checkpoint: a save that fails (a full disk) leaves the logs behind, never ahead

    def save_logs(self, always: bool = False) -> None:
        """metrics.jsonl and metrics.csv for the epochs of ``history``, which last.pt on disk holds (rank 0);
        skipped, unless ``always``, when they already hold them all (a mid-epoch checkpoint adds no epoch)."""
        if always or len(self.history) != self.logged:
            self.written.update(write_logs(self.out, self.history))
            self.logged = len(self.history)

    def result(self, stopped: bool) -> TrainResult:
        last_val = next((r.val for r in reversed(self.history) if r.val is not None), None)
        best_path = self.out / "best.pt"
        return TrainResult(
            out_dir=self.out, history=self.history, final_metrics=last_val, best_metrics=self.best,
            best_epoch=self.best["epoch"] if self.best else None, last_checkpoint=self.out / "last.pt",
            best_checkpoint=best_path if self.best else None, initial_metrics=self.initial_metrics,
            stopped_early=stopped, files_written=sorted(self.written), model=self.parts.model, rank=self.rt.rank,
            stop_reason=self.stop_reason)
