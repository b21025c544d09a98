"""Ablation studies: one table and two plots from a grid trained on the same data, resumable."""

import csv
import json
from pathlib import Path

import pytest
import yaml

import segzoo.train
from segzoo.studies.ablate import Study, plan, results_table, run_study, write_report
from tests.conftest import run_cli

REAL_TRAIN = segzoo.train.train  # before any test wraps it

TINY = {"epochs": 1, "batch_size": 4, "input_size": 64, "scale": [1.0, 1.0], "progress": False, "device": "cpu",
        "backbone_kwargs": {"fc_channels": 32}}


@pytest.fixture
def study(tmp_path, demo_data):
    return Study(backbones=["alexnet", "vgg16"], heads=["fcn32s", "fcn8s"], out=str(tmp_path / "study"),
                 train={**TINY, "data": str(demo_data)})


@pytest.mark.slow
def test_a_2x2_study_writes_every_row_table_and_plot(study, monkeypatch):
    calls = []
    real = segzoo.train.train
    monkeypatch.setattr(segzoo.train, "train", lambda cfg, **kw: calls.append(cfg) or real(cfg, **kw))
    rows = run_study(study, progress=False)
    assert [r["variant"] for r in rows] == ["alexnet-fcn32s", "alexnet-fcn8s", "vgg16-fcn32s", "vgg16-fcn8s"]
    # same data, seed, schedule and input size for every variant; only the model differs
    shared = [{k: v for k, v in c.to_dict().items() if k not in ("model", "out_dir")} for c in calls]
    assert all(s == shared[0] for s in shared) and len(calls) == 4
    out = study.out
    with open(f"{out}/results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for row in table:
        assert all(row[k] != "" for k in row), row  # every column filled
        assert 0 <= float(row["mean_iu"]) <= 1 and float(row["params_m"]) > 0 and float(row["latency_ms"]) > 0
    md = open(f"{out}/results.md").read()
    assert md.count("\n") == 6 and "mean IU" in md
    for png in ("results.png", "curves.png"):
        assert open(f"{out}/{png}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def spy_on_training(monkeypatch, stop=None):
    """Record each TrainConfig and the epochs each run trains; ``stop(cfg, record)`` may raise after an epoch."""
    calls, epochs = [], []

    def spy(cfg, on_epoch=None, **kw):
        calls.append(cfg)

        def record(r):
            epochs.append((cfg.model, r.epoch))
            if on_epoch:
                on_epoch(r)
            if stop:
                stop(cfg, r)

        return REAL_TRAIN(cfg, on_epoch=record, **kw)

    monkeypatch.setattr(segzoo.train, "train", spy)
    return calls, epochs


@pytest.mark.slow
def test_an_interrupted_variant_resumes_from_its_checkpoint_under_its_own_settings_only(tmp_path, demo_data,
                                                                                          monkeypatch):
    train = {**TINY, "epochs": 2, "data": str(demo_data), "backbone_kwargs": {"fc_channels": 16}}
    study = Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], out=str(tmp_path / "s"), train=train)

    class Interrupted(Exception):  # as Ctrl-C would, without stopping pytest if the test goes wrong
        pass

    def interrupt_after_epoch_1_of_fcn8s(cfg, record):
        if cfg.model == "alexnet-fcn8s" and record.epoch == 1:
            raise Interrupted

    spy_on_training(monkeypatch, stop=interrupt_after_epoch_1_of_fcn8s)
    with pytest.raises(Interrupted):
        run_study(study, progress=False)
    fcn8s = tmp_path / "s" / "alexnet-fcn8s"
    assert (fcn8s / "last.pt").exists() and not (fcn8s / "result.json").exists()
    finished = json.loads((tmp_path / "s" / "alexnet-fcn32s" / "result.json").read_text())

    # not under other settings: the interrupted variant would go on with another schedule
    calls, epochs = spy_on_training(monkeypatch)
    other = Study(backbones=study.backbones, heads=study.heads, out=study.out, train={**train, "epochs": 3})
    with pytest.raises(segzoo.SegzooError, match=r"alexnet-fcn8s\): epochs 2 then, 3 now.*new --out.*--restart"):
        run_study(other, progress=False)
    assert calls == []

    rows = run_study(study, progress=False)
    assert [c.model for c in calls] == ["alexnet-fcn8s"] and calls[0].resume is True  # finished one not retrained
    assert epochs == [("alexnet-fcn8s", 2)]  # from the checkpoint of epoch 1: only epoch 2 is trained
    assert [h["epoch"] for h in rows[1]["history"]] == [1, 2]
    assert rows[0] == finished and all("mean_iu" in r for r in rows)


@pytest.mark.slow
def test_a_rerun_with_other_settings_stops_and_restart_trains_every_variant_again(tmp_path, demo_data,
                                                                                    monkeypatch):
    train = {**TINY, "data": str(demo_data), "backbone_kwargs": {"fc_channels": 16}}
    study = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train=train)
    run_study(study, progress=False)
    recorded = (tmp_path / "s" / "study.json").read_text()
    calls, epochs = spy_on_training(monkeypatch)
    study.train = {**train, "epochs": 2, "seed": 1}
    with pytest.raises(segzoo.SegzooError, match=r"epochs 1 then, 2 now; seed 0 then, 1 now.*new --out.*--restart"):
        run_study(study, progress=False)
    assert calls == [] and (tmp_path / "s" / "study.json").read_text() == recorded  # nothing mixed, nothing moved
    rows = run_study(study, progress=False, restart=True)
    assert [(c.model, c.resume) for c in calls] == [("alexnet-fcn32s", False)]
    assert [h["epoch"] for h in rows[0]["history"]] == [1, 2]
    settings = json.loads((tmp_path / "s" / "alexnet-fcn32s" / "settings.json").read_text())
    assert (settings["epochs"], settings["seed"]) == (2, 1)
    assert run_study(study, progress=False) == rows  # the same settings again: nothing to do


def test_variants_from_before_settings_json_are_checked_against_their_run_config(tmp_path):
    from segzoo.studies.ablate import check_settings, shared_settings
    from segzoo.train import TrainConfig

    study = Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], out=str(tmp_path), train={"epochs": 2})
    for head in study.heads:  # finished variants with only the trainer's config.json
        (tmp_path / f"alexnet-{head}").mkdir()
        (tmp_path / f"alexnet-{head}" / "result.json").write_text("{}")
    (tmp_path / "alexnet-fcn32s" / "config.json").write_text(json.dumps(TrainConfig(epochs=2).resolved().to_dict()))
    (tmp_path / "alexnet-fcn8s" / "config.json").write_text(json.dumps(TrainConfig(epochs=1).resolved().to_dict()))
    with pytest.raises(segzoo.SegzooError, match=r"\(alexnet-fcn8s\): epochs 1 then, 2 now \(in alexnet-fcn8s/config"):
        check_settings(study, plan(study))
    (tmp_path / "alexnet-fcn8s" / "config.json").unlink()
    with pytest.raises(segzoo.SegzooError, match="alexnet-fcn8s has no record of its settings.*--restart"):
        check_settings(study, plan(study))
    (tmp_path / "alexnet-fcn8s" / "settings.json").write_text(json.dumps(shared_settings(study)))
    check_settings(study, plan(study))  # both agree with the study now


def test_staged_plan_goes_coarse_to_fine_per_backbone():
    s = Study(backbones=["vgg16", "alexnet"], heads=["fcn8s", "fcn32s", "fcn16s"], staged=True)
    variants = plan(s)
    assert [v.name for v in variants[:3]] == ["vgg16-fcn32s-staged", "vgg16-fcn16s-staged", "vgg16-fcn8s-staged"]
    assert [v.init_from for v in variants[:3]] == [None, "vgg16-fcn32s-staged", "vgg16-fcn16s-staged"]
    assert variants[3].init_from is None  # each backbone starts its own chain
    at_once = plan(Study(backbones=["vgg16"], heads=["fcn8s", "fcn32s"]))
    assert all(v.init_from is None for v in at_once)


@pytest.mark.slow
def test_a_staged_study_initialises_16s_from_the_final_32s_checkpoint(tmp_path, demo_data, monkeypatch):
    import torch

    import segzoo.train.trainer as trainer
    from segzoo.io.checkpoint import read_state_dict

    out = tmp_path / "s"
    train = {**TINY, "data": str(demo_data), "backbone_kwargs": {"fc_channels": 16}}
    study = Study(backbones=["alexnet"], heads=["fcn16s", "fcn32s"], staged=True, out=str(out), train=train)
    inits, real_init = [], trainer.init_from_checkpoint

    def spy_init(model, path):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        got = real_init(model, path)
        source, now = read_state_dict(path), model.state_dict()
        inits.append({"path": Path(path), "got": got,
                      "copied_exactly": all(torch.equal(now[k], source[k]) for k in got["copied"]),
                      "changed": [k for k in got["copied"] if not torch.equal(before[k], now[k])]})
        return got

    monkeypatch.setattr(trainer, "init_from_checkpoint", spy_init)
    calls, epochs = spy_on_training(monkeypatch)
    rows = run_study(study, progress=False)
    assert [r["variant"] for r in rows] == ["alexnet-fcn32s-staged", "alexnet-fcn16s-staged"]  # coarse first
    assert [c.init_from for c in calls] == [None, str(out / "alexnet-fcn32s-staged" / "last.pt")]
    assert epochs == [("alexnet-fcn32s", 1), ("alexnet-fcn16s", 1)]
    [init] = inits  # only 16s is initialised from a checkpoint, 32s starts from the backbone
    assert init["path"] == out / "alexnet-fcn32s-staged" / "last.pt" and init["copied_exactly"]
    assert any(k.startswith("backbone.") for k in init["changed"])  # the trained 32s weights, not a fresh init
    assert any(k.startswith("head.score_skip") for k in init["got"]["kept"])  # 16s's new skip layer stays zero


def test_unknown_names_fail_before_training(tmp_path):
    with pytest.raises(segzoo.UnknownNameError, match="fcn8s"):
        plan(Study(backbones=["vgg16"], heads=["fcn8"], out=str(tmp_path)))


def test_study_file_is_checked(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump({"backbones": ["vgg16"], "heads": ["fcn8s"], "epochs": 3}))
    with pytest.raises(segzoo.SegzooError, match="unknown keys: \\['epochs'\\]"):
        Study.from_yaml(bad)


@pytest.mark.slow
def test_cli_runs_a_study_file_and_prints_the_table(tmp_path, demo_data):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({"backbones": ["alexnet"], "heads": ["fcn32s"], "out": str(tmp_path / "o"),
                                    "train": {**TINY, "data": str(demo_data)}}))
    r = run_cli("ablate", str(spec), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "alexnet-fcn32s" in r.stdout and "mean IU" in r.stdout
    assert json.loads((tmp_path / "o" / "alexnet-fcn32s" / "result.json").read_text())["variant"] == "alexnet-fcn32s"


def fake_rows(backbones=("alexnet",), heads=("fcn32s", "fcn8s"), epochs=1):
    """Rows as run_variant returns them, without training anything."""
    return [{"variant": f"{b}-{h}", "backbone": b, "head": h, "mean_iu": 0.1 + 0.1 * i, "pixel_acc": 0.5,
             "mean_acc": 0.2, "fw_iu": 0.3, "params_m": 1.5, "gflops": 0.2, "latency_ms": 3.0,
             "infer_peak_mib": 12.0, "train_s": 4.0,
             "history": [{"epoch": e, "train_loss": 1.0, "mean_iu": 0.1 * e} for e in range(1, epochs + 1)]}
            for b in backbones for i, h in enumerate(heads)]


def test_the_peak_memory_column_says_it_is_the_inference_peak(tmp_path):
    write_report(fake_rows(), tmp_path)
    with open(tmp_path / "results.csv") as f:
        header = next(csv.reader(f))
    assert "infer_peak_mib" in header and not any("peak_mem" in h for h in header)
    md_header = (tmp_path / "results.md").read_text().splitlines()[0]
    assert "infer peak (MiB)" in md_header and "peak mem" not in md_header
    assert "infer peak (MiB)" in results_table(fake_rows())


def test_plots_of_one_backbone_and_one_epoch_keep_the_title_whole_and_ticks_integer(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to look at after they are saved
    write_report(fake_rows(backbones=("alexnet",), epochs=1), tmp_path)
    try:
        assert len(figures) == 2
        for fig in figures:
            title = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
            assert title.x0 >= 0 and title.x1 <= fig.bbox.x1, fig.axes[0].get_title()  # not cut off
        curves = figures[1].axes[0]
        lo, hi = curves.get_xlim()
        ticks = [t for t in curves.get_xticks() if lo <= t <= hi]
        assert ticks == [1]  # one epoch: one integer tick, not 0.96 ... 1.04
    finally:
        for fig in figures:
            close(fig)


@pytest.mark.slow
@pytest.mark.parametrize("progress, in_train, shown", [(True, False, True), (None, None, False), (False, True, False)])
def test_progress_shows_a_study_bar_and_a_variant_bar_or_neither(tmp_path, demo_data, capsys, progress, in_train,
                                                                    shown):
    """run_study(progress=...) wins over the study's train.progress; None (and no train.progress): stderr's tty."""
    train = {**TINY, "data": str(demo_data), "backbone_kwargs": {"fc_channels": 16}, "progress": in_train}
    if in_train is None:
        del train["progress"]
    run_study(Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train=train), progress=progress)
    err = capsys.readouterr().err
    bars = {"study": "study:", "variant (epochs)": "alexnet-fcn32s:", "the epoch's batches": "epoch 1/1:"}
    assert {name: text in err for name, text in bars.items()} == dict.fromkeys(bars, shown), err


@pytest.mark.slow
def test_cli_flags_run_a_study_and_a_rerun_with_other_flags_is_refused(tmp_path, demo_data, capsys):
    from segzoo.cli import main

    out = tmp_path / "o"

    def flags(epochs):
        return ["ablate", "--backbones", "alexnet", "--heads", "fcn32s", "--seed", "3", "--data", str(demo_data),
                "--epochs", epochs, "--out", str(out), "--batch-size", "4", "--input-size", "64", "--fc-channels", "16"]

    assert main(flags("1")) == 0
    printed = capsys.readouterr().out
    assert "alexnet-fcn32s" in printed and "mean IU" in printed and "infer peak (MiB)" in printed
    study = json.loads((out / "study.json").read_text())
    assert (study["backbones"], study["heads"], study["staged"]) == (["alexnet"], ["fcn32s"], False)
    assert study["train"] == {"data": str(demo_data), "epochs": 1, "seed": 3, "batch_size": 4, "input_size": 64,
                              "backbone_kwargs": {"fc_channels": 16}}
    settings = json.loads((out / "alexnet-fcn32s" / "settings.json").read_text())
    assert {k: settings[k] for k in study["train"]} == study["train"]  # what the variant was trained with
    assert json.loads((out / "alexnet-fcn32s" / "result.json").read_text())["variant"] == "alexnet-fcn32s"

    assert main(flags("2")) == 2  # into the same --out
    err = capsys.readouterr().err
    assert "segzoo: error:" in err and "epochs 1 then, 2 now" in err and "--restart" in err
