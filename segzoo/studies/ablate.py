"""Ablation studies: train a grid of backbones x heads on the same data, and compare them at a glance.

Every variant gets the same data, split, seed, schedule and input size (one shared ``TrainConfig``
with only the model changed). A finished variant leaves ``result.json`` and is never trained again;
an interrupted one resumes from its own ``last.pt``. Each variant records the settings it is trained
with (``settings.json``); a rerun into the same folder with other settings stops with an error rather
than mixing two schedules in one table (``restart=True`` trains every variant again). ``staged=True``
trains the heads coarse to fine per backbone, each initialised from the previous one's final
checkpoint, as in the paper (32s → 16s → 8s → 4s); the default trains every variant at once from the
backbone."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import SegzooError, UnknownNameError
from ..core.table import format_table
from ..train.records import EpochRecord

# latency and peak memory are of inference at batch 1; the peak is what one forward adds to the memory
# resident before it (the weights), as segzoo.studies.bench measures it
COLUMNS = ["variant", "backbone", "head", "mean_iu", "pixel_acc", "mean_acc", "fw_iu", "params_m", "gflops",
           "latency_ms", "infer_peak_mib", "train_s"]
HEADERS = ["variant", "backbone", "head", "mean IU", "pixel acc", "mean acc", "f.w. IU", "params (M)", "GFLOPs",
           "latency (ms)", "infer peak (MiB)", "train (s)"]

# TrainConfig fields that are not part of what a variant learns, or that differ per variant by design
_NOT_SHARED = ("model", "out_dir", "init_from", "resume", "progress", "workers", "save_every_steps")


@dataclass
class Study:
    """The grid and the settings every variant shares (``train``: any ``TrainConfig`` field)."""

    backbones: list[str]
    heads: list[str]
    out: str = "runs/ablation"
    staged: bool = False
    train: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Study:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SegzooError(f"cannot read study file {path}: {exc}") from exc
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown or not isinstance(data.get("backbones"), list) or not isinstance(data.get("heads"), list):
            raise SegzooError(
                f"{path}: a study needs lists 'backbones' and 'heads' and may set 'out', 'staged' and 'train' "
                f"(unknown keys: {sorted(unknown)})")
        if not isinstance(data.get("train") or {}, dict):
            raise SegzooError(f"{path}: 'train' must be a mapping of training settings, e.g. 'train: {{epochs: 2}}'")
        study = cls(**{**data, "train": data.get("train") or {}})
        try:
            study.check()
        except SegzooError as exc:
            raise SegzooError(f"{path}: {exc}") from exc
        return study

    def check(self) -> None:
        """The shared training settings are ones a run has (a misspelt key is an error naming the closest),
        and a ``preset`` among them is a known one."""
        from ..train import TrainConfig

        try:
            TrainConfig.from_dict(self.train).resolved(per_model=False)
        except UnknownNameError as exc:
            raise SegzooError(f"train: {exc}") from exc


@dataclass
class Variant:
    name: str
    backbone: str
    head: str
    init_from: str | None = None  # the variant whose final checkpoint initialises this one (staged)


def plan(study: Study, strides_of: Any = None) -> list[Variant]:
    """The variants in training order; staged studies go coarse to fine within each backbone."""
    from ..api import get_registry

    registry = get_registry()
    for b in study.backbones:
        registry.backbone_factory(b)  # unknown names fail before any training starts
    for h in study.heads:
        registry.head(h)
    if not study.staged:
        return [Variant(f"{b}-{h}", b, h) for b in study.backbones for h in study.heads]
    strides_of = strides_of or (lambda h: registry.head(h).strides)
    variants = []
    for b in study.backbones:
        previous = None
        for h in sorted(study.heads, key=lambda h: len(strides_of(h))):
            name = f"{b}-{h}-staged"
            variants.append(Variant(name, b, h, previous))
            previous = name
    return variants


def run_study(study: Study, progress: bool | None = None, restart: bool = False) -> list[dict[str, Any]]:
    """Train and measure every variant not yet finished; write results.{csv,md,png} and curves.png.

    ``progress`` (None: ``train.progress`` of the study, else whether stderr is a terminal) shows one
    bar for the study (variants) and one for the running variant (epochs, with the trainer's bar of
    the current epoch's batches under it); False shows none. Variants found in ``study.out`` that were
    trained (or began training) with other settings stop the study before anything is trained, unless
    ``restart``, which deletes this study's variant folders and trains every variant afresh.
    """
    from tqdm.auto import tqdm

    from ..train import TrainConfig

    study.check()  # before anything is planned or trained
    out = Path(study.out)
    variants = plan(study)
    for v in variants:  # e.g. a preset without a learning rate for one of the heads
        TrainConfig.from_dict({**study.train, "model": f"{v.backbone}-{v.head}"}).resolved()
    if restart:
        for v in variants:
            shutil.rmtree(out / v.name, ignore_errors=True)
    else:
        check_settings(study, variants)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(dataclasses.asdict(study), indent=2))
    show = _show_progress(study, progress)
    rows = []
    with tqdm(total=len(variants), desc="study", unit="variant", disable=not show, position=0,
              dynamic_ncols=True) as bar:
        for v in variants:
            bar.set_postfix_str(v.name)
            rows.append(run_variant(study, v, out, progress=show))
            bar.update()
    write_report(rows, out)
    return rows


def shared_settings(study: Study) -> dict[str, Any]:
    """The training settings every variant of the study shares, defaults (and a preset's values but its
    per-model learning rate) filled in, as JSON stores them."""
    from ..train import TrainConfig

    config = TrainConfig.from_dict(study.train).resolved(per_model=False).to_dict()
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _NOT_SHARED}))


def check_settings(study: Study, variants: list[Variant]) -> None:
    """Stop if a variant in ``study.out`` finished or began training with settings other than the study's."""
    settings, out = shared_settings(study), Path(study.out)
    stale = {}
    for v in variants:
        vdir = out / v.name
        if (vdir / "result.json").exists() or (vdir / "last.pt").exists():
            recorded, source = _recorded_settings(vdir, settings)
            if recorded is None or _differ(recorded, settings):
                stale[v.name] = recorded, source
    if not stale:
        return
    name, (recorded, source) = next(iter(stale.items()))
    if recorded is None:
        what = f"{name} has no record of its settings"
    else:
        what = "; ".join(f"{k} {json.dumps(recorded.get(k))} then, {json.dumps(settings.get(k))} now"
                         for k in _differ(recorded, settings))
        what = f"{what} (in {name}/{source})"
    raise SegzooError(
        f"{out} holds variants trained with other settings than this study's ({', '.join(stale)}): {what}. "
        "One study never mixes two sets of settings: write to a new --out, or pass --restart (restart=True) "
        "to train every variant again with the new ones")


def _differ(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The settings that differ; one missing from a record is None (unset), as for a record written before
    the setting existed."""
    return [k for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]


def _recorded_settings(vdir: Path, like: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The settings a variant was trained with and the file that says so: its settings.json, else (folders
    written before there was one) the config.json of its training run, else (None, None)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((vdir / "settings.json").read_text()), "settings.json"
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((vdir / "config.json").read_text())
        return json.loads(json.dumps({k: config.get(k) for k in like})), "config.json"
    return None, None


def _show_progress(study: Study, progress: bool | None) -> bool:
    if progress is None:
        progress = study.train.get("progress")
    return sys.stderr.isatty() if progress is None else bool(progress)


def run_variant(study: Study, v: Variant, out: Path, progress: bool = False) -> dict[str, Any]:
    """One variant: skipped if it finished before, resumed if it was interrupted."""
    from ..io.checkpoint import atomic_write_text

    vdir = out / v.name
    done = vdir / "result.json"
    if done.exists():
        row = json.loads(done.read_text())
        if "peak_mem_mib" in row:  # written before the column said what it measures
            row["infer_peak_mib"] = row.pop("peak_mem_mib")
        return row
    vdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(shared_settings(study), indent=1), vdir / "settings.json")
    result = _train(study, v, vdir, out, progress)
    final = result.final_metrics or {}
    history = [{"epoch": h.epoch, "train_loss": h.train_loss, "mean_iu": h.val["mean_iu"]}
               for h in result.history if h.val is not None]
    row = {"variant": v.name, "backbone": v.backbone, "head": v.head,
           **{k: float(final[k]) for k in ("mean_iu", "pixel_acc", "mean_acc", "fw_iu") if k in final},
           # summed per epoch, so a resumed variant counts the time of both of its runs
           "train_s": sum(h.time_s for h in result.history), "history": history}
    row.update(_measure(result.last_checkpoint, study))
    atomic_write_text(json.dumps(row, indent=1), done)  # written last: its presence means "finished"
    return row


def _train(study: Study, v: Variant, vdir: Path, out: Path, progress: bool = False) -> Any:
    from tqdm.auto import tqdm

    from ..train import TrainConfig, train

    settings = {**study.train, "model": f"{v.backbone}-{v.head}", "out_dir": str(vdir), "progress": progress}
    if v.init_from:
        settings["init_from"] = str(out / v.init_from / "last.pt")
    resume = (vdir / "last.pt").exists()
    if resume:
        settings["resume"] = True
    config = TrainConfig.from_dict(settings)
    with tqdm(total=config.epochs, initial=_epochs_done(vdir) if resume else 0, desc=v.name, unit="epoch",
              disable=not progress, position=1, leave=False, dynamic_ncols=True) as bar:

        def on_epoch(record: EpochRecord) -> None:
            bar.update(record.epoch - bar.n)
            if record.val is not None:
                bar.set_postfix(mean_iu=f"{record.val['mean_iu']:.4f}")

        # the trainer's lines go above the bars rather than through them
        return train(config, on_epoch=on_epoch, log=tqdm.write if progress else print)


def _epochs_done(vdir: Path) -> int:
    """Epochs an interrupted variant has finished (the lines of its metrics.jsonl), for its bar."""
    try:
        return sum(1 for line in (vdir / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _measure(checkpoint: Path, study: Study) -> dict[str, float]:
    """Size and speed of the trained net at the study's input size (inference, batch 1).

    ``infer_peak_mib`` is the peak of one forward over the memory resident before it (the weights).
    """
    from ..api import load_model
    from .bench import benchmark
    from .summary import summarize

    model = load_model(checkpoint)
    side = int(study.train.get("input_size", 320))
    s = summarize(model, (1, 3, side, side))
    b = benchmark(model, (3, side, side), batch_size=1, mode="infer", warmup=1, iters=3, measure_peak=False)
    return {"params_m": s.params / 1e6, "gflops": s.gflops, "latency_ms": b.ms_median,
            "infer_peak_mib": b.peak_memory_mib}


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    """results.csv, results.md, results.png (mean IU by backbone) and curves.png (val mean IU per epoch)."""
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(format_table(HEADERS, _cells(rows), markdown=True) + "\n")
    _plot_bars(rows, out / "results.png")
    _plot_curves(rows, out / "curves.png")


def results_table(rows: list[dict[str, Any]]) -> str:
    return format_table(HEADERS, _cells(rows))


def _cells(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[round(v, 4) if isinstance(v, float) else v for v in (r.get(c) for c in COLUMNS)] for r in rows]


@contextlib.contextmanager
def _figure(path: Path, figsize: tuple[float, float], title: str, xlabel: str | None = None) -> Iterator[Any]:
    """An Agg figure with one axes, labelled, laid out and saved to ``path`` when the block ends.

    The legend goes to the right of the axes, off the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        ax.set_ylabel("mean IU (val)")
        ax.set_title(title)
        if xlabel:
            ax.set_xlabel(xlabel)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _plot_bars(rows: list[dict[str, Any]], path: Path) -> None:
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    width = 0.8 / max(len(heads), 1)
    # 2.6 in. besides the groups: the legend, and the title's width with a single backbone
    with _figure(path, (2.6 + 1.6 * len(backbones), 3.6), "mean IU per variant, grouped by backbone") as ax:
        for i, head in enumerate(heads):
            xs = [b + (i - (len(heads) - 1) / 2) * width for b in range(len(backbones))]
            ys = [next((r.get("mean_iu", 0) for r in rows if r["backbone"] == bb and r["head"] == head), 0)
                  for bb in backbones]
            ax.bar_label(ax.bar(xs, ys, width, label=head), fmt="%.3f", fontsize=7)
        ax.set_xticks(range(len(backbones)), backbones)
        ax.margins(y=0.12)  # room for the value labels above the bars


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    with _figure(path, (7, 3.6), "validation mean IU per epoch", xlabel="epoch") as ax:
        for r in rows:
            points = [(h["epoch"], h["mean_iu"]) for h in r.get("history", []) if "mean_iu" in h]
            if points:
                ax.plot(*zip(*points), marker="o", label=r["variant"])
        # min_n_ticks=1: with a single epoch in view, one tick at it rather than fractional ones around it
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
