"""A study's report: mean ± std over seeds, paired t intervals against a baseline, per-class IU, plots with spread."""

from __future__ import annotations

import csv
import math

import pytest

from segzoo.studies.report import (
    mean_std,
    paired_difference,
    per_class_table,
    results_table,
    summarize,
    t975,
    write_report,
)


def row(variant, seed, mean_iu, head=None, backbone="alexnet", staged=False, classes=None, epochs=1):
    """A row as segzoo.studies.ablate.run_one writes it, without training anything."""
    head = head or variant.split("-")[1]
    return {"variant": variant, "backbone": backbone, "head": head, "staged": staged, "seed": seed,
            "mean_iu": mean_iu, "pixel_acc": 0.8, "mean_acc": 0.5, "fw_iu": 0.7, "boundary_iou": mean_iu / 2,
            "boundary_px": 2, "per_class_iu": classes or {"background": 0.9, "disc": mean_iu},
            "params_m": 1.5, "gflops": 0.2, "latency_ms": 3.0, "infer_peak_mib": 12.0, "train_s": 4.0,
            "history": [{"epoch": e, "train_loss": 1.0, "mean_iu": mean_iu * e / epochs} for e in range(1, epochs + 1)]}


def test_t_quantiles_are_the_table_and_continue_past_it():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert 2.02 < t975(40) < t975(31) < 2.042 and t975(10_000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_paired_difference_and_its_interval_against_hand_computed_values():
    assert mean_std([0.40, 0.44, 0.42]) == (pytest.approx(0.42), pytest.approx(0.02))
    assert mean_std([0.5]) == (0.5, None)
    base = {0: 0.40, 1: 0.44, 2: 0.42}
    # d = 0.05, 0.06, 0.07: mean 0.06, sd 0.01, half-width 4.303 * 0.01 / sqrt(3) = 0.024843
    d = paired_difference({0: 0.45, 1: 0.50, 2: 0.49}, base)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.06)
    assert (d["lo"], d["hi"]) == (pytest.approx(0.035157, abs=1e-6), pytest.approx(0.084843, abs=1e-6))
    assert d["excludes_zero"]
    # d = 0.05, 0.03, 0.08: mean 0.053333, sd 0.025166, half-width 0.062523: the interval holds 0
    d = paired_difference({0: 0.45, 1: 0.47, 2: 0.50}, base)
    assert d["mean"] == pytest.approx(0.053333, abs=1e-6)
    # squared deviations sum to 0.0038 / 3, so sd = sqrt(0.0038 / 6)
    assert d["hi"] - d["mean"] == pytest.approx(4.303 * math.sqrt(0.0038 / 6) / math.sqrt(3))
    assert (d["lo"], d["hi"]) == (pytest.approx(-0.009188, abs=1e-5), pytest.approx(0.115855, abs=1e-5))
    assert not d["excludes_zero"]
    # unpaired values do not pair: only seed 1 is in both, and one difference has no interval
    one = paired_difference({0: 0.9, 1: 0.5}, {1: 0.4, 2: 0.1})
    assert one == {"n": 1, "mean": pytest.approx(0.1), "lo": None, "hi": None, "excludes_zero": False}
    assert paired_difference({0: 0.5}, {1: 0.4}) is None


def three_seeds():
    ious = {"alexnet-fcn32s": (0.40, 0.44, 0.42), "alexnet-fcn8s": (0.45, 0.50, 0.49)}
    return [row(v, s, ious[v][s]) for s in range(3) for v in ious]


def test_summaries_give_mean_and_std_per_metric_and_compare_with_the_first_head():
    fcn32s, fcn8s = summarize(three_seeds())
    assert fcn8s["seeds"] == [0, 1, 2] and fcn8s["mean_iu"] == pytest.approx(0.48)
    assert fcn8s["mean_iu_std"] == pytest.approx(mean_std([0.45, 0.50, 0.49])[1])
    assert fcn8s["boundary_iou"] == pytest.approx(0.24) and fcn8s["pixel_acc_std"] == pytest.approx(0.0)
    assert fcn8s["per_class_iu"]["disc"] == pytest.approx(0.48)
    assert fcn32s["baseline"] == "alexnet-fcn32s" and fcn32s["delta"] is None
    assert fcn8s["baseline"] == "alexnet-fcn32s" and fcn8s["delta"]["excludes_zero"]
    # --baseline NAME: a head (per backbone) or one variant for all
    assert summarize(three_seeds(), "fcn8s")[0]["delta"]["mean"] == pytest.approx(-0.06)
    assert summarize(three_seeds(), "alexnet-fcn8s")[0]["baseline"] == "alexnet-fcn8s"


def test_staged_variants_are_compared_within_their_staging():
    rows = [row("vgg16-fcn32s", 0, 0.3, backbone="vgg16"), row("vgg16-fcn8s", 0, 0.4, backbone="vgg16"),
            row("vgg16-fcn32s-staged", 0, 0.3, "fcn32s", "vgg16", True),
            row("vgg16-fcn8s-staged", 0, 0.5, "fcn8s", "vgg16", True)]
    assert [s["baseline"] for s in summarize(rows)] == ["vgg16-fcn32s"] * 2 + ["vgg16-fcn32s-staged"] * 2
    assert summarize(rows)[3]["delta"]["mean"] == pytest.approx(0.2)


def test_the_table_marks_intervals_that_exclude_zero_and_says_when_one_seed_cannot_tell():
    table = results_table(three_seeds())
    assert "0.4200 ± 0.0200" in table and "+0.0600 [+0.0352, +0.0848] *" in table and "baseline" in table
    assert "boundary IoU (2 px)" in table and "no interval" not in table
    single = results_table([row("alexnet-fcn32s", 0, 0.4), row("alexnet-fcn8s", 0, 0.5)])
    assert "+0.1000" in single and "±" not in single.splitlines()[2] and "no interval" in single


def test_report_files_list_per_class_iu_of_every_variant_and_one_line_per_run(tmp_path):
    rows = three_seeds()
    rows[1]["per_class_iu"] = {"background": 0.9, "disc": 0.45, "ring": None}
    write_report(rows, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "## Per-class IU" in md and "| alexnet-fcn8s " in md.split("## Per-class IU")[1]
    classes = per_class_table(summarize(rows))
    assert "48.0 (+6.0)" in classes and "90.0 (+0.0)" in classes  # disc improved, background did not
    with open(tmp_path / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 6 and {r["seed"] for r in runs} == {"0", "1", "2"}
    with open(tmp_path / "results.csv") as f:
        summary = list(csv.DictReader(f))
    assert [s["variant"] for s in summary] == ["alexnet-fcn32s", "alexnet-fcn8s"]
    assert summary[1]["delta_excludes_zero"] == "True" and float(summary[1]["mean_iu_std"]) > 0
    for png in ("results.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files, none left


def test_the_bar_plot_shows_a_point_per_seed_and_keeps_its_title_whole(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to look at after they are saved
    write_report(three_seeds(), tmp_path)
    try:
        bars, curves = figures
        ax = bars.axes[0]
        dots = [line for line in ax.lines if line.get_marker() == "o"]
        assert sorted(len(d.get_ydata()) for d in dots) == [3, 3]  # three seeds of each variant
        assert sorted(y for d in dots for y in d.get_ydata()) == sorted([0.40, 0.44, 0.42, 0.45, 0.50, 0.49])
        for fig in figures:
            title = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
            assert title.x0 >= 0 and title.x1 <= fig.bbox.x1, fig.axes[0].get_title()  # not cut off
        lo, hi = curves.axes[0].get_xlim()
        assert [t for t in curves.axes[0].get_xticks() if lo <= t <= hi] == [1]  # one epoch: one integer tick
    finally:
        for fig in figures:
            close(fig)


def test_variants_of_one_head_each_get_their_bar(tmp_path, monkeypatch):
    """A study over --pixel-fraction and --weak trains one head several ways: one bar per variant, labelled with
    what differs (the plot drew all of them as one 'fcn8s' bar, the first variant's)."""
    import matplotlib.pyplot as plt

    ious = {"vgg16-fcn8s-px10": 0.13, "vgg16-fcn8s-px10-weak": 0.2, "vgg16-fcn8s-px100": 0.8}
    rows = [row(v, s, iou + s / 100, head="fcn8s", backbone="vgg16") for s in range(2) for v, iou in ious.items()]
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    write_report(rows, tmp_path)
    try:
        ax = figures[0].axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fcn8s-px10", "fcn8s-px10-weak", "fcn8s-px100"]
        heights = sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height() > 0)
        assert heights == [0.135, 0.205, 0.805]
    finally:
        for fig in figures:
            close(fig)


def test_a_class_at_iu_0_in_every_seed_is_flagged_in_table_csv_and_plot(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    rows = three_seeds()
    for r in rows:
        if r["variant"] == "alexnet-fcn32s":
            r["per_class_iu"] = {"background": 0.9, "disc": 0.0, "ring": None}
    rows[0]["per_class_iu"]["ring"] = 0.0  # ring: 0 once, undefined otherwise: never learned either
    rows[1]["per_class_iu"]["disc"] = 0.0  # fcn8s misses disc in one seed only: not flagged
    fcn32s, fcn8s = summarize(rows)
    assert fcn32s["zero_classes"] == ["disc", "ring"] and fcn8s["zero_classes"] == []
    table = results_table(rows)
    assert "⚠ disc, ring" in table and "Never learned: alexnet-fcn32s: disc, ring" in table
    assert "0.0 (+0.0) ⚠" not in per_class_table(summarize(rows)) and "0.0 ⚠" in per_class_table(summarize(rows))
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    write_report(rows, tmp_path)
    try:
        ax = figures[0].axes[0]
        labels = [t.get_text() for t in ax.texts]
        assert "0.420\nIU 0:\ndisc\nring" in labels and "0.480" in labels
        assert [p.get_hatch() for p in ax.patches] == ["//", None]
    finally:
        for fig in figures:
            close(fig)
    with open(tmp_path / "results.csv") as f:
        assert [r["iu0_every_seed"] for r in csv.DictReader(f)] == ["disc;ring", ""]


def test_timing_columns_carry_their_spread_and_results_json_the_raw_values(tmp_path):
    import json

    rows = three_seeds()
    for r, ms in zip(rows[::2], (1127.0, 51.0, 447.0)):  # the three seeds of fcn32s, as measured under load
        r["latency_ms"] = ms
    table = results_table(rows)
    assert "541.7 ± 544.2" in table and "± is their spread over seeds" in table
    write_report(rows, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["last_epoch"][0]["latency_ms_values"] == [1127.0, 51.0, 447.0]
    assert saved["best_epoch"] == []  # rows without best-epoch metrics: no best table
    assert "## Best epoch" not in (tmp_path / "results.md").read_text()
