"""Running an ablation study: every run of :func:`segzoo.studies.study.runs`, then the report.

Every run gets the same data, split, schedule and input size (one set of training settings; only the
model, the seed and, staged, the starting checkpoint differ). On the demo dataset the demo's CPU-sized
settings fill the ones not given, and a backbone option (``fc_channels``) goes only to the backbones whose
factory takes it. A finished run leaves ``result.json`` and is never trained again; an interrupted one
resumes from its own ``last.pt``. Each run records the settings it is trained with (``settings.json``): a
rerun into the same folder with other settings stops with an error rather than mixing two schedules in one
table (``restart=True`` trains every run again). Settings are compared by content: the dataset by its
fingerprint (:mod:`segzoo.data.fingerprint`, kept in ``data.json``), checked again before every run, so a
dataset edited in place between seeds, or a resumed study over other data, stops the study in one line;
another path to the same files is the same data. The runs share the decoded images, and after the first
epoch the study says how long it expects to take.

Each run reports its last epoch and its best one (highest validation mean IU, what ``best.pt`` keeps);
with ``study.test_split`` both are measured on that split, the best epoch still chosen on validation.
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
from ..core.files import atomic_write_text, read_json_file, read_text_file
from ..core.window import cover_side
from ..data import SegmentationDataset, eval_transform, find_pairs, window_transform
from ..data import demo as demo_data  # likewise write_demo_dataset
from ..data.dataset import shared_decoding
from ..data.fingerprint import differences, file_digest, fingerprint
from ..train import TrainConfig, evaluate
from ..train.demo import DEMO_STUDY_SETTINGS, demo_defaults, describe, options_for
from ..train.metrics import BOUNDARY_PX
from ..train.records import EpochRecord
from ..train.run_folder import run_files
from ..train.runtime import setup
from ..train.setup import eval_loader
from .bench import benchmark
from .report import write_report, zero_classes
from .study import Run, Study, json_ready, runs
from .summary import summarize

# TrainConfig fields that are not part of what a run learns, or that differ per run by design
_NOT_RECORDED = ("out_dir", "init_from", "resume", "progress", "workers", "save_every_steps")
WEAK_WEIGHT = 1.0  # the image-level loss weight of a study's weak variants unless train: weak_weight says
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
    settings = {**train, "model": v.model or f"{v.backbone}-{v.head}", "seed": run.seed, "backbone_kwargs": kwargs}
    if v.pixel_fraction < 1:  # the image-label axes (see study.label_variants)
        settings["pixel_fraction"] = v.pixel_fraction
    if v.weak or "weak_weight" in train:  # train: weak_weight is the weak variants' weight, none for the others
        settings["weak_weight"] = float(train.get("weak_weight") or WEAK_WEIGHT) if v.weak else 0.0
    return settings


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
    check_study_folder(out)
    data_print = None
    if train.get("data") is not None:  # the given data, by content, before anything is written
        data_print = check_data(out, str(train["data"]), recorded, restart)
    for r in todo:
        recorded[r].update(content_digests(settings[r]))
        if data_print is not None:
            recorded[r]["data_digest"] = data_print["digest"]
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
    if data_print is None:  # the demo, which the study wrote itself
        data_print = check_data(out, data, recorded, restart)
        for r in todo:
            recorded[r]["data_digest"] = data_print["digest"]
    atomic_write_text(json.dumps(data_print, indent=1) + "\n", out / "data.json")
    show = _show_progress(study, progress)
    clock = _Clock(todo, out, train)
    rows = []
    with shared_decoding(_decoding_budget()), tqdm(total=len(todo), desc="study", unit="run", disable=not show,
                                                       position=0, dynamic_ncols=True) as bar:
        for r in todo:
            bar.set_postfix_str(r.folder)
            if not (out / r.folder / "result.json").exists():
                data_print = same_data(data, data_print, r.folder)
            rows.append(run_one(study, r, settings[r], recorded[r], out, data, progress=show, clock=clock, log=log))
            bar.update()
    write_report(rows, out, study.baseline or study.heads[0])
    for line in never_learned(rows):
        log(line)
    return rows


def never_learned(rows: list[dict[str, Any]]) -> list[str]:
    """One warning per variant with a class at IU 0 in every seed (at its last epoch)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    return [f"warning: {v} never learned {', '.join(zero)} (IU 0 in all {len(group)} seed(s) at the last epoch); "
            "its mean IU averages in a 0: train longer, with another --lr, or with --class-weights auto"
            for v, group in by_variant.items() if (zero := zero_classes(group))]


def check_data(out: Path, data: str, recorded: dict[Run, dict[str, Any]], restart: bool) -> dict[str, Any]:
    """The data's fingerprint now; a :class:`SegzooError` if ``out`` holds runs trained on other data."""
    before = _read_json(out / "data.json")
    now = fingerprint(data, before, exclude=out)
    if restart or before is None or before.get("digest") == now["digest"]:
        return now
    begun = [r.folder for r in recorded
             if (out / r.folder / "result.json").exists() or (out / r.folder / "last.pt").exists()]
    if not begun:
        return now
    raise SegzooError(
        f"{out} holds runs ({', '.join(begun[:3])}{' ...' if len(begun) > 3 else ''}) trained on other data than "
        f"{data} holds now ({_changes(before, now)}); one study never mixes runs on different data: write to a new "
        "--out, or pass --restart to train every run again on this data")


def same_data(data: str, before: dict[str, Any], folder: str) -> dict[str, Any]:
    """Stop if the data changed since the study began (checked before each run): the runs would differ in it."""
    now = fingerprint(data, before, exclude=before.get("exclude"))
    if now["digest"] != before["digest"]:
        raise SegzooError(
            f"{data} changed while the study ran, before {folder} ({_changes(before, now)}); the runs so far were "
            "trained on the old data: restore it and run the study again to go on, or pass --restart to train "
            "every run on the new data")
    return now


def _changes(before: dict[str, Any], now: dict[str, Any]) -> str:
    found = differences(before, now)
    return (", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")) or "files differ"


def content_digests(settings: dict[str, Any]) -> dict[str, str]:
    """The settings that name a file (label map, a stats file), as digests of its bytes: compared by content."""
    out = {}
    for key in ("label_map", "normalization", "backbone_weights"):
        value = settings.get(key)
        if isinstance(value, str) and Path(value).is_file():
            out[f"{key}_digest"] = file_digest(value)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        value = json.loads(read_text_file(path, "study record"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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


def check_study_folder(out: Path) -> None:
    """``--out`` is new, empty, or an earlier study's (its study.json): ablate writes results.md, results.csv and
    the variant folders there, and never over files it did not write (the user's own results.md)."""
    if out.exists() and not out.is_dir():
        raise SegzooError(f"--out {out} is a file; name a folder for the study")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / "study.json"
    try:
        ours = "train" in read_json_file(marker, "study file")
    except SegzooError:
        ours = False
    if not ours:
        found = sorted(p.name for p in out.iterdir())[:5]
        raise SegzooError(f"--out {out} holds files a segzoo study did not write ({', '.join(found)}) and no "
                          "study.json of its own; ablate would replace them: choose a new or empty folder")


def check_settings(out: Path, recorded: dict[Run, dict[str, Any]]) -> None:
    """Stop if a run in ``out`` finished or began training with settings other than the study's for it."""
    stale = {}
    for r, settings in recorded.items():
        folder = out / r.folder
        if (folder / "result.json").exists() or (folder / "last.pt").exists():
            try:
                before = read_json_file(folder / "settings.json", "run settings")
            except SegzooError:
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
    """The settings that differ; a path recorded with its content's digest on both sides compares by digest."""
    keys = set(before) | set(now)
    for key in ("data", "label_map", "normalization", "backbone_weights"):
        if f"{key}_digest" in before and f"{key}_digest" in now:
            keys.discard(key)
        elif f"{key}_digest" in before or f"{key}_digest" in now:
            keys.discard(f"{key}_digest")  # a record written before digests: its path is all there is
    # a record written before the optimizer's defaults were resolved into the settings has None for them
    resolved_later = {k for k in ("lr", "weight_decay", "momentum") if before.get(k) is None}
    return [k for k in sorted(keys) if before.get(k) != now.get(k) and k not in resolved_later]


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
        return read_result(done)
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
    final, best = _reported(study, result, config)
    history = [{"epoch": h.epoch, "train_loss": h.train_loss, "mean_iu": h.val["mean_iu"]}
               for h in result.history if h.val is not None]
    v = r.variant
    row = {"variant": v.name, "backbone": v.backbone, "head": v.head, "staged": v.staged, "seed": r.seed,
           **({"pixel_fraction": v.pixel_fraction, "weak": v.weak, "paired_with": v.paired_with}
              if v.pixel_fraction < 1 or v.weak else {}),
           "epoch": result.history[-1].epoch if result.history else None,
           "split": study.test_split or config.get("val_split") or "val",
           "selected_on": config.get("val_split") or "val",
           **_metrics(final),
           "best_epoch": getattr(result, "best_epoch", None), "best": _metrics(best) if best else None,
           # summed per epoch, so a resumed run counts the time of both of its parts
           "train_s": sum(h.time_s for h in result.history), "history": history,
           "data_digest": recorded.get("data_digest")}
    row.update(_measure(result.last_checkpoint, int(settings.get("input_size") or 320)))
    atomic_write_text(json.dumps(row, indent=1) + "\n", done)  # written last: its presence means "finished"
    return row


def _metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The metrics a row keeps from an evaluation's."""
    return {**{k: float(m[k]) for k in ("mean_iu", "pixel_acc", "mean_acc", "fw_iu") if k in m},
            **({"boundary_iou": float(m["boundary_iou"]), "boundary_px": m["boundary_px"]}
               if m.get("boundary_iou") is not None else {}),
            "per_class_iu": m.get("per_class_iu", {})}


def _reported(study: Study, result: Any, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The last epoch's and the best epoch's metrics on the split the study reports (the validation split unless
    ``test_split``) at its boundary width; measured again only where the trainer's validation does not say."""
    final = result.final_metrics or {}
    best = getattr(result, "best_metrics", None)
    split = study.test_split
    if not final or (split is None and study.boundary_px == BOUNDARY_PX):
        return final, best
    final = _evaluate(result.model, config, study.boundary_px, split)
    best_path = getattr(result, "best_checkpoint", None)
    if best is not None and best_path is not None and Path(best_path).is_file():
        best = _evaluate(load_model(best_path), config, study.boundary_px, split)
    elif best is not None:  # no best.pt to measure again: on validation, without the boundary at the trainer's width
        best = None if split else {k: v for k, v in best.items() if not k.startswith(("boundary", "per_class_b"))}
    return final, best


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


def read_result(path: Path) -> dict[str, Any]:
    """A finished run's result.json, checked for what the report reads; a damaged one is one line saying how to
    train that run again (remove the file)."""
    row = read_json_file(path, "run result")
    numbers = ("mean_iu", "pixel_acc", "mean_acc", "fw_iu", "train_s")
    ok = (isinstance(row.get("variant"), str) and type(row.get("seed")) is int
          and all(type(row.get(k)) in (int, float) for k in numbers if k in row)
          and isinstance(row.get("per_class_iu", {}), dict) and isinstance(row.get("history", []), list))
    if not ok:
        raise SegzooError(f"run result {path} is damaged (not the variant, seed and metrics a study writes); remove "
                          "it and run the study again to retrain that run")
    return row


def _epochs_done(folder: Path) -> int:
    """Epochs an interrupted run has finished (the lines of its metrics.jsonl), for its bar."""
    try:
        text = read_text_file(folder / "metrics.jsonl", "metrics.jsonl")
    except SegzooError:
        return 0
    return sum(1 for line in text.splitlines() if line.strip())


def _evaluate(model: Any, config: dict[str, Any], px: int, split: str | None = None) -> dict[str, Any]:
    """Metrics on ``split`` (default the validation split) with boundary IoU at ``px`` (the trainer's
    validation uses the default width)."""
    rt = setup(config.get("device") or "auto", config.get("amp"))
    pairs = find_pairs(config["data"], split or config.get("val_split") or "val", bool(config.get("skip_bad")))
    window = window_transform(model)  # a valid-convolution model sees each image mirrored out to its window
    dataset = SegmentationDataset(pairs, model.num_classes, eval_transform(model.normalization, window))
    loader = eval_loader(dataset, rt, int(config.get("batch_size") or 1))
    return evaluate(model.to(rt.device), loader, rt, model.num_classes, model.recipe.class_names, boundary_px=px)


def _measure(checkpoint: Path, side: int) -> dict[str, float | None]:
    """Size and speed of the trained net at the study's input size (inference, batch 1); a valid-convolution net
    (unet-classic) at the input whose output window covers that size, as it trained and predicts.

    ``infer_peak_mib`` is the peak of one forward over the memory resident before it (the weights).
    """
    model = load_model(checkpoint)
    side = cover_side(model.output_window, side, 0, int(model.backbone.min_input_size))
    s = summarize(model, (1, 3, side, side))
    b = benchmark(model, (3, side, side), batch_size=1, mode="infer", warmup=1, iters=3, measure_peak=False)
    return {"params_m": s.params / 1e6, "gflops": s.gflops, "latency_ms": b.ms_median,
            "infer_peak_mib": b.peak_memory_mib}
