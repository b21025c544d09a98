"""Running an ablation study: every run of :func:`segzoo.studies.study.runs`, then the report.

Every run gets the same data, split, schedule and input size (one set of training settings; only the
model, the seed and, staged, the starting checkpoint differ). On the demo dataset the demo's CPU-sized
settings fill the ones not given, and a backbone option (``fc_channels``) goes only to the backbones whose
factory takes it. A finished run leaves ``result.json`` and is never trained again; an interrupted one
resumes from its own ``last.pt``. Each run records the settings it is trained with (``settings.json``): a
rerun into the same folder with other settings stops with an error rather than mixing two schedules in one
table (``restart=True`` trains every run again). The runs share the decoded images, and after the first
epoch the study says how long it expects to take.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import train as training  # looked up at each call: tests replace segzoo.train.train
from ..api import load_model
from ..core.errors import SegzooError
from ..core.files import atomic_write_text
from ..data import SegmentationDataset, eval_transform, find_pairs
from ..data import demo as demo_data  # likewise write_demo_dataset
from ..data.dataset import shared_decoding
from ..train import TrainConfig, evaluate
from ..train.demo import DEMO_STUDY_SETTINGS, demo_defaults, describe, options_for
from ..train.metrics import BOUNDARY_PX
from ..train.records import EpochRecord
from ..train.run_folder import run_files
from ..train.runtime import setup
from ..train.setup import eval_loader
from .bench import benchmark
from .report import write_report
from .study import Run, Study, json_ready, runs
from .summary import summarize

# TrainConfig fields that are not part of what a run learns, or that differ per run by design
_NOT_RECORDED = ("out_dir", "init_from", "resume", "progress", "workers", "save_every_steps")
SHARED_DECODING_BYTES = 2 << 30  # at most, decoded images the runs of a study keep in memory for each other


def effective_train(study: Study) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study's training settings with, on the demo dataset, the demo's filling those not given; and the
    ones it filled (to print)."""
    train = json_ready(dict(study.train))
    if train.get("data") is not None:
        return train, {}
    applied = demo_defaults(train, study.backbones, train.get("preset"), DEMO_STUDY_SETTINGS)
    options = applied.get("backbone_kwargs", {})
    train.update({k: v for k, v in applied.items() if k != "backbone_kwargs"})
    if options:
        train["backbone_kwargs"] = {**options, **(train.get("backbone_kwargs") or {})}
    return json_ready(train), applied


def run_settings(run: Run, train: dict[str, Any]) -> dict[str, Any]:
    """The training settings of one run: the shared ones, its model and seed, and only the backbone options its
    backbone's factory takes."""
    v = run.variant
    kwargs, _ = options_for(v.backbone, train.get("backbone_kwargs") or {})
    return {**train, "model": f"{v.backbone}-{v.head}", "seed": run.seed, "backbone_kwargs": kwargs}


def recorded_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What ``settings.json`` holds: the resolved settings (a preset's values filled in), as JSON stores them."""
    config = TrainConfig.from_dict(settings).resolved().to_dict()
    return json_ready({k: v for k, v in config.items() if k not in _NOT_RECORDED})


def dropped_options(study: Study, train: dict[str, Any]) -> dict[str, list[str]]:
    """Backbone -> the backbone options it does not take (and so is not given)."""
    dropped = {b: options_for(b, train.get("backbone_kwargs") or {})[1] for b in study.backbones}
    return {b: d for b, d in dropped.items() if d}


def run_study(study: Study, progress: bool | None = None, restart: bool = False,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train and measure every run not yet finished; write the report (results.md, .csv, .png, curves.png).

    Returns one row per run (seed). ``progress`` (None: ``train.progress``, else whether stderr is a
    terminal) shows a bar for the study (runs) and one for the running variant (epochs). Runs in
    ``study.out`` trained (or begun) with other settings stop the study before anything is trained, unless
    ``restart``, which deletes this study's variant folders and trains every run afresh.
    """
    study.check()  # before anything is planned, trained or written
    train, applied = effective_train(study)
    todo = runs(study)
    settings = {r: run_settings(r, train) for r in todo}
    recorded = {r: recorded_settings(s) for r, s in settings.items()}  # a preset without this model's lr fails here
    out = Path(study.out)
    if not restart:
        check_settings(out, recorded)
    if applied:
        log(f"demo dataset (no data given): demo settings {describe(applied)} (give any of them to change it)")
    for backbone, names in dropped_options(study, train).items():
        log(f"note: {backbone} does not take {', '.join(names)} (its factory has no such parameter): not given to it")
    if restart:
        for v in {r.variant.name for r in todo}:
            shutil.rmtree(out / v, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**study.to_dict(), "train": train}, indent=2) + "\n", out / "study.json")
    data = _data_folder(out, train)
    show = _show_progress(study, progress)
    clock = _Clock(todo, out, train)
    rows = []
    with shared_decoding(_decoding_budget()), tqdm(total=len(todo), desc="study", unit="run", disable=not show,
                                                       position=0, dynamic_ncols=True) as bar:
        for r in todo:
            bar.set_postfix_str(r.folder)
            rows.append(run_one(study, r, settings[r], recorded[r], out, data, progress=show, clock=clock, log=log))
            bar.update()
    write_report(rows, out, study.baseline or study.heads[0])
    return rows


def _decoding_budget() -> int:
    """Bytes of decoded images to keep for the runs: a quarter of the memory free now, at most 2 GiB."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on every platform
        free = 0
    return min(SHARED_DECODING_BYTES, free // 4) if free else SHARED_DECODING_BYTES // 8


def _data_folder(out: Path, train: dict[str, Any]) -> str:
    """The dataset the runs train on: the given one, or the demo written once into ``out/demo-data``."""
    if train.get("data") is not None:
        return str(train["data"])
    return str(demo_data.write_demo_dataset(out / "demo-data", **(train.get("demo") or TrainConfig().demo)))


def check_settings(out: Path, recorded: dict[Run, dict[str, Any]]) -> None:
    """Stop if a run in ``out`` finished or began training with settings other than the study's for it."""
    stale = {}
    for r, settings in recorded.items():
        folder = out / r.folder
        if (folder / "result.json").exists() or (folder / "last.pt").exists():
            try:
                before = json.loads((folder / "settings.json").read_text())
            except (OSError, ValueError):
                before = None
            if before is None or _differ(before, settings):
                stale[r.folder] = before, settings
    if not stale:
        return
    name, (before, settings) = next(iter(stale.items()))
    if before is None:
        what = f"{name} has no record of its settings"
    else:
        what = "; ".join(f"{k} {json.dumps(before.get(k))} then, {json.dumps(settings.get(k))} now"
                         for k in _differ(before, settings))
        what = f"{what} (in {name}/settings.json)"
    shown = ", ".join(list(stale)[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
    raise SegzooError(
        f"{out} holds runs trained with other settings than this study's ({shown}): {what}. One study never "
        "mixes two sets of settings: write to a new --out, or pass --restart (restart=True) to train every "
        "run again with the new ones")


def _differ(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def _show_progress(study: Study, progress: bool | None) -> bool:
    if progress is None:
        progress = study.train.get("progress")
    return sys.stderr.isatty() if progress is None else bool(progress)


class _Clock:
    """Says, once the first epoch of the first run trained now is done, how long the study should take."""

    def __init__(self, todo: list[Run], out: Path, train: dict[str, Any]):
        self.left = [r for r in todo if not (out / r.folder / "result.json").exists()]
        self.epochs = int(train.get("epochs") or 10)
        self.said = False

    def run_started(self) -> None:
        self.run_start = time.perf_counter()

    def epoch_done(self, record: EpochRecord, log: Callable[[str], None]) -> None:
        if self.said:
            return
        self.said = True
        first = time.perf_counter() - self.run_start  # set-up, the first validation and the epoch
        epochs = self.epochs - record.epoch + 1
        total = first * epochs * len(self.left)
        log(f"first epoch took {first:.0f} s: expect about {_duration(total)} for the {len(self.left)} runs "
                 f"still to train ({epochs} epochs each; other backbones go at their own pace)")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def run_one(study: Study, r: Run, settings: dict[str, Any], recorded: dict[str, Any], out: Path, data: str,
            progress: bool = False, clock: _Clock | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run: read back if it finished before, resumed if it was interrupted, else trained."""
    folder = out / r.folder
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(recorded, indent=1) + "\n", folder / "settings.json")
    config = {**settings, "data": data, "out_dir": str(folder), "progress": progress}
    if r.variant.init_from:
        config["init_from"] = str(out / r.variant.init_from / f"seed-{r.seed}" / "last.pt")
    if (folder / "last.pt").exists():
        config["resume"] = True
    else:  # stopped before its first checkpoint: the files it wrote are this study's own, and it starts over
        for name in run_files(folder):
            (folder / name).unlink()
    if clock is not None:
        clock.run_started()
    result = _train(config, r, progress, clock, log)
    final = result.final_metrics or {}
    if final and study.boundary_px != BOUNDARY_PX:
        final = _evaluate(result.model, config, study.boundary_px)
    history = [{"epoch": h.epoch, "train_loss": h.train_loss, "mean_iu": h.val["mean_iu"]}
               for h in result.history if h.val is not None]
    v = r.variant
    row = {"variant": v.name, "backbone": v.backbone, "head": v.head, "staged": v.staged, "seed": r.seed,
           **{k: float(final[k]) for k in ("mean_iu", "pixel_acc", "mean_acc", "fw_iu") if k in final},
           **({"boundary_iou": float(final["boundary_iou"]), "boundary_px": final["boundary_px"]}
              if final.get("boundary_iou") is not None else {}),
           "per_class_iu": final.get("per_class_iu", {}),
           # summed per epoch, so a resumed run counts the time of both of its parts
           "train_s": sum(h.time_s for h in result.history), "history": history}
    row.update(_measure(result.last_checkpoint, int(settings.get("input_size") or 320)))
    atomic_write_text(json.dumps(row, indent=1) + "\n", done)  # written last: its presence means "finished"
    return row


def _train(config: dict[str, Any], r: Run, progress: bool, clock: _Clock | None, log: Callable[[str], None]) -> Any:
    cfg = TrainConfig.from_dict(config)
    folder = Path(cfg.out_dir)
    with tqdm(total=cfg.epochs, initial=_epochs_done(folder) if cfg.resume else 0, desc=r.folder, unit="epoch",
              disable=not progress, position=1, leave=False, dynamic_ncols=True) as bar:
        write = tqdm.write if progress and log is print else log  # lines above the bars rather than through them

        def on_epoch(record: EpochRecord) -> None:
            bar.update(record.epoch - bar.n)
            if record.val is not None:
                bar.set_postfix(mean_iu=f"{record.val['mean_iu']:.4f}")
            if clock is not None:
                clock.epoch_done(record, write)

        return training.train(cfg, on_epoch=on_epoch, log=write)


def _epochs_done(folder: Path) -> int:
    """Epochs an interrupted run has finished (the lines of its metrics.jsonl), for its bar."""
    try:
        return sum(1 for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _evaluate(model: Any, config: dict[str, Any], px: int) -> dict[str, Any]:
    """The final metrics again with boundary IoU at ``px`` (the trainer's validation uses the default)."""
    rt = setup(config.get("device") or "auto", config.get("amp"))
    pairs = find_pairs(config["data"], config.get("val_split") or "val", bool(config.get("skip_bad")))
    dataset = SegmentationDataset(pairs, model.num_classes, eval_transform(model.normalization))
    loader = eval_loader(dataset, rt, int(config.get("batch_size") or 1))
    return evaluate(model.to(rt.device), loader, rt, model.num_classes, model.recipe.class_names, boundary_px=px)


def _measure(checkpoint: Path, side: int) -> dict[str, float | None]:
    """Size and speed of the trained net at the study's input size (inference, batch 1).

    ``infer_peak_mib`` is the peak of one forward over the memory resident before it (the weights).
    """
    model = load_model(checkpoint)
    s = summarize(model, (1, 3, side, side))
    b = benchmark(model, (3, side, side), batch_size=1, mode="infer", warmup=1, iters=3, measure_peak=False)
    return {"params_m": s.params / 1e6, "gflops": s.gflops, "latency_ms": b.ms_median,
            "infer_peak_mib": b.peak_memory_mib}
