"""A study's report: the spread over seeds, paired differences against a baseline, per-class IU, and the plots.

From one row per run (a variant trained with one seed) it writes ``results.md`` (the table, the
differences, per-class IU of every variant), ``results.csv`` (one line per variant), ``runs.csv`` (one
line per run), ``results.png`` (mean IU per variant, a point per seed and the spread) and ``curves.png``
(validation mean IU per epoch, averaged over seeds).

The difference in mean IU from the baseline is paired by seed: with ``d_s`` = variant minus baseline for
each seed ``s`` both have, its mean ± ``t(0.975, n-1) * sd(d) / sqrt(n)`` is the 95% confidence interval
(Student t), marked ``*`` where it excludes 0. Pairing takes out what a seed does to both (data order,
initialisation), which is most of the noise on a small dataset.

What is measured is said, not assumed: the tables name the epoch they report (the last, and beside it the
best one, which ``best.pt`` keeps, chosen on the validation split and so optimistic unless a test split
reports it), a class with IU 0 in every seed of a variant is flagged in the table, the plot and the log
(the variant never learned it), and the timing columns carry their spread over seeds (the raw values are
in ``results.json``): latency and training time are measured on the machine as loaded while the study ran.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_text
from ..core.table import format_table

METRICS = {"mean_iu": "mean IU", "boundary_iou": "boundary IoU", "pixel_acc": "pixel acc", "mean_acc": "mean acc",
           "fw_iu": "f.w. IU"}
# latency and peak memory are of inference at batch 1; the peak is what one forward adds to the memory
# resident before it (the weights), as segzoo.studies.bench measures it
COSTS = {"params_m": "params (M)", "gflops": "GFLOPs", "latency_ms": "latency (ms)",
         "infer_peak_mib": "infer peak (MiB)", "train_s": "train (s)"}
# measured, so they vary from run to run (with the load on the machine): shown with their spread over seeds
SPREAD = ("latency_ms", "infer_peak_mib", "train_s")

# t(0.975, df) for df = 1 .. 30 (two-sided 95%)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the table, then Cornish-Fisher)."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); no deviation from one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_difference(variant: dict[int, float], baseline: dict[int, float]) -> dict[str, Any] | None:
    """``variant - baseline`` over the seeds both have: mean, its 95% t interval (``lo``, ``hi``; None with one
    seed) and whether the interval excludes 0. None if they share no seed."""
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        return None
    diffs = [variant[s] - baseline[s] for s in seeds]
    mean, sd = mean_std(diffs)
    if sd is None:
        return {"n": 1, "mean": mean, "lo": None, "hi": None, "excludes_zero": False}
    half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    lo, hi = mean - half, mean + half
    return {"n": len(diffs), "mean": mean, "lo": lo, "hi": hi, "excludes_zero": lo > 0 or hi < 0}


def baseline_name(row: dict[str, Any], names: Sequence[str], baseline: str | None, first_head: str) -> str:
    """What ``row``'s variant is compared with: the variant it is paired with (one trained with image labels: the
    same without them), else ``baseline`` if it names a variant, else that head (or the first head) of the same
    backbone and staging, else the study's first variant."""
    if row.get("paired_with"):
        return row["paired_with"]
    if baseline is not None and baseline in names:
        return baseline
    name = f"{row['backbone']}-{baseline or first_head}" + ("-staged" if row.get("staged") else "")
    # a named model's row (unet-classic) has no such head on its backbone: it is compared with the first variant
    return name if name in names or not names else names[0]


def summarize(rows: list[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """One summary per variant (in the rows' order): per metric mean and std over seeds, per-class IU means,
    the costs, and the paired difference in mean IU from its baseline (None for the baseline itself)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    names = list(by_variant)
    first_head = rows[0]["head"] if rows else ""
    out = []
    for name, group in by_variant.items():
        first = group[0]
        s: dict[str, Any] = {k: first.get(k) for k in ("variant", "backbone", "head", "staged")}
        s["seeds"] = [r.get("seed", 0) for r in group]
        s["epochs"] = [r.get("epoch") for r in group]
        for key in (*METRICS, *COSTS):
            values = [r[key] for r in group if r.get(key) is not None]
            s[key], s[f"{key}_std"] = mean_std(values) if values else (None, None)
        for key in COSTS:
            s[f"{key}_values"] = [r.get(key) for r in group]
        s["zero_classes"] = zero_classes(group)
        s["boundary_px"] = first.get("boundary_px")
        classes = list(dict.fromkeys(c for r in group for c in r.get("per_class_iu", {})))
        s["per_class_iu"] = {}
        for c in classes:
            values = [r["per_class_iu"][c] for r in group if r.get("per_class_iu", {}).get(c) is not None]
            s["per_class_iu"][c] = sum(values) / len(values) if values else None
        base = baseline_name(first, names, baseline, first_head)
        s["baseline"] = base if base in by_variant else None
        s["delta"] = None
        if s["baseline"] and base != name:
            s["delta"] = paired_difference(_by_seed(group), _by_seed(by_variant[base]))
        s["history"] = _mean_history(group)
        out.append(s)
    return out


def zero_classes(group: list[dict[str, Any]]) -> list[str]:
    """The classes with IU 0 in every run of ``group`` (one variant's seeds): never learned by that variant.

    A class whose IU is undefined in a run (in neither the truth nor the prediction) does not count against
    it, but a class must have IU 0 in at least one run to be flagged."""
    classes = list(dict.fromkeys(c for r in group for c in r.get("per_class_iu") or {}))
    out = []
    for c in classes:
        values = [(r.get("per_class_iu") or {}).get(c) for r in group]
        known = [v for v in values if v is not None]
        if known and all(v == 0 for v in known):
            out.append(c)
    return out


def best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with each run's best-epoch metrics (``row["best"]``) in place of its last-epoch ones; a run
    without them (trained before they were recorded) keeps its last."""
    out = []
    for r in rows:
        best = r.get("best")
        out.append({**r, **best, "epoch": r.get("best_epoch")} if best else dict(r))
    return out


def _by_seed(group: list[dict[str, Any]]) -> dict[int, float]:
    return {r.get("seed", 0): r["mean_iu"] for r in group if r.get("mean_iu") is not None}


def _mean_history(group: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(epoch, mean over seeds of the validation mean IU) for the epochs every seed has."""
    per_seed = [{h["epoch"]: h["mean_iu"] for h in r.get("history", []) if "mean_iu" in h} for r in group]
    epochs = sorted(set.intersection(*(set(h) for h in per_seed))) if per_seed else []
    return [(e, sum(h[e] for h in per_seed) / len(per_seed)) for e in epochs]


# -- the table --------------------------------------------------------------------------------------------
def _value(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _delta(s: dict[str, Any]) -> str:
    d = s["delta"]
    if s["baseline"] == s["variant"]:
        return "baseline"
    if d is None:
        return "-"
    if d["lo"] is None:
        return f"{d['mean']:+.4f}"
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]" + (" *" if d["excludes_zero"] else "")


def _headers(summaries: list[dict[str, Any]]) -> list[str]:
    px = next((s["boundary_px"] for s in summaries if s.get("boundary_px")), None)
    labels = {**METRICS, "boundary_iou": f"boundary IoU ({px} px)" if px else "boundary IoU"}
    return ["variant", "seeds", "epoch", labels["mean_iu"], "Δ mean IU (95% CI)", "IU 0 in every seed",
            *(labels[k] for k in METRICS if k != "mean_iu"), *COSTS.values()]


def _epochs(s: dict[str, Any]) -> str:
    """The epochs the runs report: one number if they agree, else each run's."""
    epochs = [e for e in s.get("epochs") or [] if e is not None]
    if not epochs:
        return "-"
    return str(epochs[0]) if len(set(epochs)) == 1 else ",".join(map(str, epochs))


def _zero(s: dict[str, Any]) -> str:
    return "⚠ " + ", ".join(s["zero_classes"]) if s.get("zero_classes") else "-"


def _cells(summaries: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for s in summaries:
        rows.append([s["variant"], len(s["seeds"]), _epochs(s), _value(s["mean_iu"], s["mean_iu_std"]), _delta(s),
                     _zero(s), *(_value(s[k], s[f"{k}_std"]) for k in METRICS if k != "mean_iu"),
                     *(_value(s[k], s[f"{k}_std"] if k in SPREAD else None,
                              1 if k in ("latency_ms", "train_s", "infer_peak_mib") else 2) for k in COSTS)])
    return rows


def _footnote(summaries: list[dict[str, Any]]) -> str:
    n = max((len(s["seeds"]) for s in summaries), default=1)
    text = ("Metrics are the mean over seeds ± their standard deviation. Δ mean IU is each variant minus its "
            "baseline, paired by seed, with its 95% Student-t confidence interval; * where the interval excludes 0.")
    if n < 2:
        text += (" With one seed there is no spread and no interval: a difference may be seed noise "
                 "(--seeds 3 or more tells).")
    text += (" 'IU 0 in every seed' names the classes a variant never learned (IU 0 in each of its runs). Latency "
             "(inference, batch 1), peak memory and training time were measured while the study ran, on the machine "
             "as loaded then: ± is their spread over seeds, and results.json has each run's value.")
    if any(s.get("zero_classes") for s in summaries):
        flagged = "; ".join(f"{s['variant']}: {', '.join(s['zero_classes'])}" for s in summaries if s["zero_classes"])
        text += f" ⚠ Never learned: {flagged}; the mean IU of these variants averages in a 0."
    return text


def epoch_note(rows: list[dict[str, Any]]) -> str:
    """Which epoch the tables report, and on which split it was chosen and measured."""
    last = sorted({r["epoch"] for r in rows if r.get("epoch") is not None})
    split = next((r.get("split") for r in rows if r.get("split")), None) or "val"
    chosen = next((r.get("selected_on") for r in rows if r.get("selected_on")), None) or split
    which = f" ({', '.join(map(str, last))})" if last else ""
    text = f"Reported: the metrics of each run's last epoch{which} on split '{split}'."
    if any(r.get("best") for r in rows):
        text += (f" 'Best epoch' reports each run's epoch of highest mean IU on split '{chosen}' (what best.pt "
                 "keeps), measured on " + (f"split '{split}'." if split != chosen else
                                           "the same split, so it is optimistic: a --test-split reports it on data "
                                           "it was not chosen on."))
    return text


def results_table(rows: list[dict[str, Any]], baseline: str | None = None) -> str:
    """The tables as the terminal shows them (last epoch, and best epoch where the runs have it), with notes."""
    summaries = summarize(rows, baseline)
    text = (epoch_note(rows) + "\n\nlast epoch:\n" + format_table(_headers(summaries), _cells(summaries)))
    if any(r.get("best") for r in rows):
        best = summarize(best_rows(rows), baseline)
        text += "\n\nbest epoch:\n" + format_table(_headers(best), _cells(best))
    return text + "\n" + _footnote(summaries)


def per_class_table(summaries: list[dict[str, Any]], markdown: bool = False) -> str:
    """IU % of every class for every variant (mean over seeds), with the difference from the baseline."""
    classes = list(dict.fromkeys(c for s in summaries for c in s["per_class_iu"]))
    by_name = {s["variant"]: s for s in summaries}
    rows = []
    for s in summaries:
        base = by_name.get(s["baseline"]) if s["baseline"] != s["variant"] else None
        cells = []
        for c in classes:
            v = s["per_class_iu"].get(c)
            b = base["per_class_iu"].get(c) if base else None
            cells.append("-" if v is None else f"{100 * v:.1f}" + (f" ({100 * (v - b):+.1f})" if b is not None else "")
                         + (" ⚠" if c in s.get("zero_classes", ()) else ""))
        rows.append([s["variant"], *cells])
    return format_table(["variant", *classes], rows, markdown=markdown)


def write_report(rows: list[dict[str, Any]], out: Path, baseline: str | None = None) -> list[dict[str, Any]]:
    """results.md, results.csv, runs.csv, results.png and curves.png in ``out``; returns the summaries."""
    out = Path(out)
    summaries = summarize(rows, baseline)
    has_best = any(r.get("best") for r in rows)
    best = summarize(best_rows(rows), baseline) if has_best else []
    md = ["# Ablation results", "", epoch_note(rows), "", "## Last epoch", "",
          format_table(_headers(summaries), _cells(summaries), markdown=True), ""]
    if has_best:
        md += ["## Best epoch", "", format_table(_headers(best), _cells(best), markdown=True), ""]
    md += [_footnote(summaries), "", "## Per-class IU (%)", "",
           "Last epoch, mean over seeds; in brackets the difference from the variant's baseline; ⚠ marks a class "
           "with IU 0 in every seed.", "", per_class_table(summaries, markdown=True), ""]
    atomic_write_text("\n".join(md), out / "results.md")
    atomic_write_text(json.dumps({"last_epoch": _json_summaries(summaries), "best_epoch": _json_summaries(best)},
                                 indent=1) + "\n", out / "results.json")
    atomic_write_text(_csv(_summary_records(summaries)), out / "results.csv")
    run_keys = ["variant", "backbone", "head", "staged", "seed", "epoch", *METRICS, "boundary_px", *COSTS,
                "best_epoch", *(f"best_{k}" for k in METRICS)]
    rows = [{**r, **{f"best_{k}": (r.get("best") or {}).get(k) for k in METRICS}} for r in rows]
    atomic_write_text(_csv([{k: r.get(k) for k in run_keys} for r in rows]), out / "runs.csv")
    split = next((r.get("split") for r in rows if r.get("split")), None) or "val"
    _plot_bars(rows, summaries, out / "results.png", f"mean IU ({split}, last epoch)")
    _plot_curves(summaries, out / "curves.png")
    return summaries


def _json_summaries(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summaries as results.json keeps them (the mean curve left out; the raw cost values kept)."""
    return [{k: v for k, v in s.items() if k != "history"} for s in summaries]


def _summary_records(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = []
    for s in summaries:
        d = s["delta"] or {}
        records.append({
            "variant": s["variant"], "backbone": s["backbone"], "head": s["head"], "staged": s["staged"],
            "seeds": len(s["seeds"]),
            **{k: s[k] for key in METRICS for k in (key, f"{key}_std")},
            "baseline": s["baseline"], "delta_mean_iu": d.get("mean"), "delta_ci_low": d.get("lo"),
            "delta_ci_high": d.get("hi"), "delta_excludes_zero": d.get("excludes_zero"),
            "iu0_every_seed": ";".join(s["zero_classes"]),
            **{k: s[k] for k in COSTS}, **{f"{k}_std": s[f"{k}_std"] for k in SPREAD}})
    return records


def _csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    return buffer.getvalue()


# -- the plots --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _figure(path: Path, figsize: tuple[float, float], title: str, xlabel: str | None = None,
            ylabel: str = "mean IU (val)") -> Iterator[Any]:
    """An Agg figure with one axes, labelled, laid out and saved to ``path`` (through a temporary file) when the
    block ends. The legend goes to the right of the axes, off the data."""
    import matplotlib  # matplotlib.pyplot takes about 1.1 s to import here (-X importtime): only plots pay it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if xlabel:
            ax.set_xlabel(xlabel)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, dpi=120, format="png")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)


def _series(row: dict[str, Any]) -> str:
    """A variant's name within its backbone's group: its name less the backbone (the head, and whether it was
    staged, trained on a share of the masks, with image labels: ``fcn8s-staged``, ``fcn8s-px10-weak``)."""
    name = str(row.get("variant") or row["head"] + ("-staged" if row.get("staged") else ""))
    return name.removeprefix(f"{row['backbone']}-")


def _plot_bars(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], path: Path,
               ylabel: str = "mean IU (val)") -> None:
    """Mean IU per variant grouped by backbone: a bar at the mean over seeds, with the standard deviation as an
    error bar and a point per seed."""
    backbones = list(dict.fromkeys(s["backbone"] for s in summaries))
    series = list(dict.fromkeys(_series(s) for s in summaries))
    width = 0.8 / max(len(series), 1)
    seeds = max((len(s["seeds"]) for s in summaries), default=1)
    # 2.6 in. besides the groups: the legend, and the title's width with a single backbone
    with _figure(path, (2.6 + 0.45 * len(series) * len(backbones) + 0.6 * len(backbones), 3.6),
                 "mean IU per variant", ylabel=ylabel) as ax:
        if seeds > 1:
            ax.set_xlabel(f"{seeds} seeds: bar = mean, line = ± std, dot = a seed", fontsize=7)
        for i, name in enumerate(series):
            xs, ys, errs, zeros = [], [], [], []
            for g, backbone in enumerate(backbones):
                s = next((s for s in summaries if s["backbone"] == backbone and _series(s) == name), None)
                if s is None or s["mean_iu"] is None:
                    continue
                x = g + (i - (len(series) - 1) / 2) * width
                xs.append(x)
                ys.append(s["mean_iu"])
                errs.append(s["mean_iu_std"] or 0.0)
                zeros.append(s.get("zero_classes") or [])
                points = [r["mean_iu"] for r in rows if r["variant"] == s["variant"] and r.get("mean_iu") is not None]
                if len(points) > 1:
                    ax.plot([x] * len(points), points, "o", color="black", markersize=2.5, zorder=3)
            bars = ax.bar(xs, ys, width, label=name, yerr=errs if seeds > 1 else None, capsize=2)
            # a class never learned: named one per line above its bar, so neighbouring bars' names do not overlap
            ax.bar_label(bars, labels=[f"{y:.3f}" + ("\nIU 0:\n" + "\n".join(z) if z else "")
                                       for y, z in zip(ys, zeros)], fontsize=6, padding=2)
            for bar, z in zip(bars, zeros):
                if z:  # a variant that never learned a class: hatched, and named above the bar
                    bar.set_hatch("//")
                    bar.set_edgecolor("red")
        ax.set_xticks(range(len(backbones)), backbones)
        lines = max((len(s.get("zero_classes") or []) for s in summaries), default=0)
        ax.margins(y=0.15 + (0.1 * (lines + 1) if lines else 0))  # room for the labels above the bars


def _plot_curves(summaries: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    seeds = max((len(s["seeds"]) for s in summaries), default=1)
    title = "validation mean IU per epoch" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    with _figure(path, (7, 3.6), title, xlabel="epoch") as ax:
        for s in summaries:
            if s["history"]:
                ax.plot(*zip(*s["history"]), marker="o", markersize=3, label=s["variant"])
        # min_n_ticks=1: with a single epoch in view, one tick at it rather than fractional ones around it
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
