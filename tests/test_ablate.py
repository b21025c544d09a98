"""Running a study: demo settings, options by backbone, seeds and staged runs, resuming, refusing bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import segzoo
import segzoo.data.demo
import segzoo.studies.ablate as ablate
import segzoo.train
from segzoo.cli import build_parser, main
from segzoo.studies.ablate import run_study
from segzoo.studies.study import Study
from segzoo.train.records import EpochRecord

REAL_TRAIN = segzoo.train.train  # before any test wraps it

TINY = {"epochs": 1, "batch_size": 4, "input_size": 64, "scale": [1.0, 1.0], "progress": False, "device": "cpu",
        "backbone_kwargs": {"fc_channels": 16}}


class Interrupted(Exception):  # as Ctrl-C would, without stopping pytest if the test goes wrong
    pass


@pytest.fixture
def fake(monkeypatch):
    """Training and measuring replaced by fakes: ``fake.calls`` holds each TrainConfig; ``fake.stop(cfg)`` may
    interrupt a run; mean IU is a function of head and seed, so differences are known."""
    state = SimpleNamespace(calls=[], stop=None, demo=[])
    build_parser()  # every command module imported first: one bound to the fake would keep it after the test

    def train(cfg, on_epoch=None, log=print):
        state.calls.append(cfg)
        if state.stop and state.stop(cfg):
            raise Interrupted
        fine = {"fcn32s": 0.0, "fcn16s": 0.02, "fcn8s": 0.05, "fcn4s": 0.05}.get(cfg.model.split("-")[-1], 0.03)
        miou = 0.4 + fine + 0.01 * cfg.seed
        final = {"mean_iu": miou, "pixel_acc": 0.8, "mean_acc": 0.5, "fw_iu": 0.7, "boundary_iou": miou / 2,
                 "boundary_px": 2, "per_class_iu": {"background": 0.9, "disc": miou}}
        history = []
        for epoch in range(1, cfg.epochs + 1):
            history.append(EpochRecord(epoch=epoch, step=epoch, train_loss=1.0, lr=0.1, images_per_s=1.0, time_s=0.5,
                                       images=1, val=final))
            if on_epoch:
                on_epoch(history[-1])
        Path(cfg.out_dir, "last.pt").write_text("fake")
        best = {**final, "mean_iu": miou + 0.1, "epoch": 1}  # the best epoch is the first, 0.1 better
        return SimpleNamespace(final_metrics=final, history=history, last_checkpoint=Path(cfg.out_dir, "last.pt"),
                               best_metrics=best, best_epoch=1, best_checkpoint=None, model=None)

    monkeypatch.setattr(segzoo.train, "train", train)
    monkeypatch.setattr(ablate, "_measure", lambda checkpoint, side: {"params_m": 1.0, "gflops": 0.1,
                                                                      "latency_ms": 2.0, "infer_peak_mib": 3.0})
    def write_demo(out, **kw):  # an empty folder: the fake training reads nothing
        state.demo.append(kw)
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)

    monkeypatch.setattr(segzoo.data.demo, "write_demo_dataset", write_demo)
    return state


def test_a_study_on_the_demo_gets_its_settings_and_options_only_where_a_backbone_takes_them(tmp_path, fake):
    logs = []
    study = Study(backbones=["vgg16", "timm-resnet18"], heads=["fcn32s"], out=str(tmp_path / "s"),
                  train={"epochs": 2})
    run_study(study, progress=False, log=logs.append)
    vgg, timm = fake.calls
    assert (vgg.epochs, vgg.batch_size, vgg.input_size, tuple(vgg.scale), vgg.lr) == (2, 4, 64, (0.75, 1.25), 1e-3)
    assert vgg.backbone_kwargs == {"fc_channels": 512} and timm.backbone_kwargs == {}  # no unexpected keyword
    assert vgg.data == timm.data == str(tmp_path / "s" / "demo-data") and len(fake.demo) == 1  # written once
    assert logs[0] == ("demo dataset (no data given): demo settings --batch-size 4 --input-size 64 --scale 0.75,1.25 "
                       "--lr 0.001 --fc-channels 512 (give any of them to change it)")  # --epochs 2 was given
    assert any(line.startswith("note: timm-resnet18 does not take fc_channels") for line in logs)
    assert any(line.startswith("first epoch took") and "2 runs still to train" in line for line in logs)
    recorded = json.loads((tmp_path / "s" / "vgg16-fcn32s" / "seed-0" / "settings.json").read_text())
    assert recorded["backbone_kwargs"] == {"fc_channels": 512} and recorded["data"] is None
    study_json = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study_json["train"]["input_size"] == 64 and study_json["backbones"] == ["vgg16", "timm-resnet18"]


def test_given_data_gets_no_demo_settings(tmp_path, fake):
    run_study(Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"),
                    train={"data": str(tmp_path), "num_classes": 3}), progress=False, log=lambda _: None)
    [cfg] = fake.calls
    assert (cfg.epochs, cfg.input_size, cfg.backbone_kwargs, cfg.num_classes) == (10, 320, {}, 3)
    assert fake.demo == []


def test_seeds_and_the_staged_axis_resume_seed_by_seed(tmp_path, fake):
    out = tmp_path / "s"
    study = Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], staged=[False, True], seeds=2, out=str(out))
    fake.stop = lambda cfg: cfg.seed == 1 and cfg.init_from is not None  # staged 8s of the second seed
    with pytest.raises(Interrupted):
        run_study(study, progress=False, log=lambda _: None)
    assert [(c.model, c.seed, c.init_from) for c in fake.calls] == [
        ("alexnet-fcn32s", 0, None), ("alexnet-fcn8s", 0, None), ("alexnet-fcn32s", 0, None),
        ("alexnet-fcn8s", 0, str(out / "alexnet-fcn32s-staged" / "seed-0" / "last.pt")),
        ("alexnet-fcn32s", 1, None), ("alexnet-fcn8s", 1, None), ("alexnet-fcn32s", 1, None),
        ("alexnet-fcn8s", 1, str(out / "alexnet-fcn32s-staged" / "seed-1" / "last.pt"))]
    fake.calls.clear()
    fake.stop = None
    rows = run_study(study, progress=False, log=lambda _: None)
    assert [(c.model, c.seed) for c in fake.calls] == [("alexnet-fcn8s", 1)]  # the finished seven are read back
    assert len(rows) == 8 and {r["seed"] for r in rows} == {0, 1}
    md = (out / "results.md").read_text()
    # fcn8s is 0.05 above fcn32s for both seeds: no spread in the difference, a zero-width interval, marked
    line = next(line for line in md.splitlines() if line.startswith("| alexnet-fcn8s-staged "))
    assert [c.strip() for c in line.split("|")[2:6]] == ["2", "8", "0.4550 ± 0.0071", "+0.0500 [+0.0500, +0.0500] *"]
    assert md.count("baseline") >= 2 and "## Per-class IU" in md and "45.5 (+5.0)" in md


def test_a_rerun_with_other_settings_stops_and_restart_trains_every_run_again(tmp_path, fake):
    study = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train={"epochs": 1})
    run_study(study, progress=False, log=lambda _: None)
    recorded = (tmp_path / "s" / "study.json").read_text()
    fake.calls.clear()
    study.train = {"epochs": 2, "seed": 1}
    study.seeds = 1
    changed = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train={"epochs": 2})
    with pytest.raises(segzoo.SegzooError, match=r"\(alexnet-fcn32s/seed-0\): epochs 1 then, 2 now.*--restart"):
        run_study(changed, progress=False, log=lambda _: None)
    assert fake.calls == [] and (tmp_path / "s" / "study.json").read_text() == recorded  # nothing mixed or moved
    rows = run_study(changed, progress=False, restart=True, log=lambda _: None)
    assert [(c.model, c.epochs) for c in fake.calls] == [("alexnet-fcn32s", 2)] and len(rows[0]["history"]) == 2
    fake.calls.clear()
    assert run_study(changed, progress=False, log=lambda _: None) == rows and fake.calls == []  # nothing to do
    # more seeds later: only the new ones train
    changed.seeds = 2
    run_study(changed, progress=False, log=lambda _: None)
    assert [(c.model, c.seed) for c in fake.calls] == [("alexnet-fcn32s", 1)]


def test_boundary_iou_at_another_width_is_measured_again(tmp_path, fake, monkeypatch):
    seen = []
    monkeypatch.setattr(ablate, "_evaluate", lambda model, config, px, split=None: seen.append(px) or {
        "mean_iu": 0.5, "pixel_acc": 0.8, "mean_acc": 0.5, "fw_iu": 0.7, "boundary_iou": 0.1, "boundary_px": px,
        "per_class_iu": {}})
    [row] = run_study(Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), boundary_px=4),
                      progress=False, log=lambda _: None)
    assert seen == [4] and (row["boundary_iou"], row["boundary_px"]) == (0.1, 4)
    assert "boundary_iou" not in row["best"]  # no best.pt to measure at 4 px: not shown at the trainer's 2 px


def test_results_say_which_epoch_and_show_the_best_beside_the_last(tmp_path, fake):
    out = tmp_path / "s"
    rows = run_study(Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], seeds=2, out=str(out),
                           train={"epochs": 3}), progress=False, log=lambda _: None)
    assert [(r["epoch"], r["best_epoch"], r["split"], r["selected_on"]) for r in rows] == [(3, 1, "val", "val")] * 4
    assert rows[0]["best"]["mean_iu"] == pytest.approx(rows[0]["mean_iu"] + 0.1)
    md = (out / "results.md").read_text()
    assert "each run's last epoch (3) on split 'val'" in md and "so it is optimistic" in md
    last, best = md.split("## Last epoch")[1].split("## Best epoch")
    line = next(x for x in best.splitlines() if x.startswith("| alexnet-fcn8s "))
    assert [c.strip() for c in line.split("|")[3:5]] == ["1", "0.5550 ± 0.0071"]  # epoch 1, 0.1 above the last
    line = next(x for x in last.splitlines() if x.startswith("| alexnet-fcn8s "))
    assert [c.strip() for c in line.split("|")[3:5]] == ["3", "0.4550 ± 0.0071"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["best_epoch"][1]["mean_iu"] == pytest.approx(0.555)


def test_a_test_split_reports_last_and_best_on_it_and_chooses_on_val(tmp_path, fake, monkeypatch):
    measured = []

    def evaluate(model, config, px, split=None):
        measured.append((model, split))
        return {"mean_iu": 0.3 if model == "best.pt" else 0.2, "pixel_acc": 0.8, "mean_acc": 0.5, "fw_iu": 0.7,
                "per_class_iu": {}}

    monkeypatch.setattr(ablate, "_evaluate", evaluate)
    monkeypatch.setattr(ablate, "load_model", lambda path: Path(path).name)
    train = segzoo.train.train

    def with_best(cfg, **kw):  # as the trainer does: a best.pt beside last.pt
        result = train(cfg, **kw)
        result.best_checkpoint = Path(cfg.out_dir, "best.pt")
        result.best_checkpoint.write_text("fake")
        result.model = "last model"
        return result

    monkeypatch.setattr(segzoo.train, "train", with_best)
    out = tmp_path / "s"
    [row] = run_study(Study(backbones=["alexnet"], heads=["fcn32s"], out=str(out), test_split="test"),
                      progress=False, log=lambda _: None)
    assert measured == [("last model", "test"), ("best.pt", "test")]
    assert (row["mean_iu"], row["best"]["mean_iu"], row["split"], row["selected_on"]) == (0.2, 0.3, "test", "val")
    assert "on split 'val' (what best.pt keeps), measured on split 'test'." in (out / "results.md").read_text()
    with pytest.raises(segzoo.SegzooError, match="is the split the best epoch is chosen on"):
        Study(backbones=["alexnet"], heads=["fcn32s"], test_split="val").check()


def ablate_cli(*args):
    return main(["ablate", *args])


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "--seeds must be an integer from 1 to 1000, got 0"),
    (["--backbones", ""], "'backbones' is empty: nothing to train"),
    (["--heads", ",,"], "'heads' is empty"),
    (["--baseline", "fcn16s", "--heads", "fcn32s,fcn8s"], "baseline 'fcn16s' is not in the study"),
    (["--staged", "maybe"], "--staged takes true, false or both"),
    (["--boundary-px", "0"], "--boundary-px must be an integer from 1 to 1024"),
    (["--epochs", "0"], "--epochs must be an integer from 1 to"),
])
def test_bad_input_is_one_line_exit_2_nothing_trained_and_out_untouched(tmp_path, fake, capsys, args, message):
    out = tmp_path / "o"
    assert ablate_cli(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(("segzoo: error:", "segzoo ablate: error:")) and message in err and err.count("\n") == 1, err
    assert fake.calls == [] and not out.exists()


@pytest.mark.parametrize("content, message", [
    ({"backbones": [], "heads": ["fcn8s"]}, "'backbones' is empty"),
    ({"backbones": ["vgg16"], "heads": []}, "'heads' is empty"),
    ({"backbones": ["vgg16"], "heads": "fcn8s"}, "'heads' must be a list of names"),
    ({"backbones": ["vgg16"], "heads": ["fcn8s"], "staged": "sometimes"}, "'staged' must be true, false"),
    ({"backbones": ["vgg16"], "heads": ["fcn8s"], "seeds": "3"}, "'seeds' must be an integer from 1 to 1000"),
])
def test_a_bad_study_file_is_one_line_and_touches_nothing(tmp_path, fake, capsys, content, message):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({**content, "out": str(out)}))
    assert ablate_cli(str(spec)) == 2
    err = capsys.readouterr().err
    assert message in err and str(spec) in err and err.count("\n") == 1
    assert fake.calls == [] and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_flags_build_the_study_and_print_the_table(tmp_path, fake, capsys):
    out = tmp_path / "o"
    assert ablate_cli("--backbones", "alexnet", "--heads", "fcn32s,fcn8s", "--staged", "false,true", "--seeds", "2",
                      "--baseline", "fcn8s", "--num-classes", "6", "--fc-channels", "16", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "alexnet-fcn8s-staged" in printed and "Δ mean IU (95% CI)" in printed and "-0.0500" in printed
    study = json.loads((out / "study.json").read_text())
    assert (study["staged"], study["seeds"], study["baseline"]) == ([False, True], 2, "fcn8s")
    assert study["train"]["num_classes"] == 6 and study["train"]["backbone_kwargs"] == {"fc_channels": 16}
    assert len(fake.calls) == 8 and all(c.num_classes == 6 for c in fake.calls)
    assert {c.backbone_kwargs["fc_channels"] for c in fake.calls} == {16}  # given: the demo's 512 is not used
    from segzoo.cli import build_parser
    from segzoo.cli.ablate import build_study

    args = build_parser()[0].parse_args(["ablate", "--staged"])
    assert build_study(args).staged is True and build_study(args).heads[-1] == "fcn4s"
    assert build_study(build_parser()[0].parse_args(["ablate", "--test-split", "test"])).test_split == "test"
    assert "results.json" in printed and "best epoch:" in printed and "last epoch (8)" in printed


def test_a_named_model_is_one_more_row_compared_with_the_first_variant(tmp_path, fake, capsys):
    """--models adds a recipe (unet-classic-16: its own backbone, no fcn8s beside it) as a row of the same study."""
    out = tmp_path / "o"
    assert ablate_cli("--backbones", "alexnet", "--heads", "fcn8s,unet", "--models", "unet-classic-16", "--seeds",
                      "2", "--num-classes", "6", "--out", str(out)) == 0
    assert [c.model for c in fake.calls] == ["alexnet-fcn8s", "alexnet-unet", "unet-classic-16"] * 2
    assert "fc_channels" not in fake.calls[2].backbone_kwargs  # the option goes only where a backbone takes it
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("unet-classic-16"))
    assert "-0.0200" in row  # 0.43 - 0.45 against alexnet-fcn8s, the first variant, paired by seed
    assert json.loads((out / "study.json").read_text())["models"] == ["unet-classic-16"]
    assert ablate_cli("--heads", "fcn8s", "--models", "no-such-model", "--out", str(tmp_path / "x")) == 2


# -- real training, small ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_real_study_writes_every_row_table_and_plot(tmp_path, demo_data):
    study = Study(backbones=["alexnet"], heads=["fcn8s"], out=str(tmp_path / "s"),
                  train={**TINY, "data": str(demo_data)})
    rows = run_study(study, progress=False, log=lambda _: None)
    assert [r["variant"] for r in rows] == ["alexnet-fcn8s"]
    for r in rows:
        assert 0 <= r["mean_iu"] <= 1 and 0 <= r["boundary_iou"] <= 1 and r["params_m"] > 0 and r["latency_ms"] > 0
        assert set(r["per_class_iu"]) == {"background", "disc", "square", "triangle", "ring", "cross"}
    md = (tmp_path / "s" / "results.md").read_text()
    assert "boundary IoU (2 px)" in md and "| alexnet-fcn8s " in md.split("## Per-class IU")[1]
    for png in ("results.png", "curves.png"):
        assert (tmp_path / "s" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_staged_study_initialises_16s_from_the_final_32s_checkpoint_of_its_seed(tmp_path, demo_data, monkeypatch):
    import torch

    import segzoo.train.setup as train_setup
    from segzoo.io.checkpoint import read_state_dict

    out = tmp_path / "s"
    study = Study(backbones=["alexnet"], heads=["fcn16s", "fcn32s"], staged=True, out=str(out),
                  train={**TINY, "data": str(demo_data)})
    inits, real_init = [], train_setup.init_from_checkpoint

    def spy_init(model, path):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        got = real_init(model, path)
        source, now = read_state_dict(path), model.state_dict()
        inits.append({"path": Path(path), "got": got,
                      "copied_exactly": all(torch.equal(now[k], source[k]) for k in got["copied"]),
                      "changed": [k for k in got["copied"] if not torch.equal(before[k], now[k])]})
        return got

    monkeypatch.setattr(train_setup, "init_from_checkpoint", spy_init)
    rows = run_study(study, progress=False, log=lambda _: None)
    assert [r["variant"] for r in rows] == ["alexnet-fcn32s-staged", "alexnet-fcn16s-staged"]  # coarse first
    [init] = inits  # only 16s is initialised from a checkpoint, 32s starts from the backbone
    assert init["path"] == out / "alexnet-fcn32s-staged" / "seed-0" / "last.pt" and init["copied_exactly"]
    assert any(k.startswith("backbone.") for k in init["changed"])  # the trained 32s weights, not a fresh init
    assert any(k.startswith("head.score_skip") for k in init["got"]["kept"])  # 16s's new skip layer stays zero


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, demo_data, monkeypatch):
    train = {**TINY, "epochs": 2, "data": str(demo_data)}
    study = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train=train)
    epochs = []

    def spy(cfg, on_epoch=None, **kw):
        def record(r):
            epochs.append((cfg.resume, r.epoch))
            on_epoch(r)
            if r.epoch == 1 and not cfg.resume:
                raise Interrupted

        return REAL_TRAIN(cfg, on_epoch=record, **kw)

    monkeypatch.setattr(segzoo.train, "train", spy)
    with pytest.raises(Interrupted):
        run_study(study, progress=False, log=lambda _: None)
    [row] = run_study(study, progress=False, log=lambda _: None)
    assert epochs == [(False, 1), (True, 2)]  # from the checkpoint of epoch 1: only epoch 2 is trained
    assert [h["epoch"] for h in row["history"]] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("progress, in_train, shown", [(True, False, True), (False, True, False)])
def test_progress_shows_a_study_bar_and_a_variant_bar_or_neither(tmp_path, demo_data, capsys, progress, in_train,
                                                                    shown):
    """run_study(progress=...) wins over the study's train.progress."""
    train = {**TINY, "data": str(demo_data), "progress": in_train}
    run_study(Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train=train), progress=progress,
              log=lambda _: None)
    err = capsys.readouterr().err
    bars = {"study": "study:", "variant (epochs)": "alexnet-fcn32s/seed-0:", "the epoch's batches": "epoch 1/1:"}
    assert {name: text in err for name, text in bars.items()} == dict.fromkeys(bars, shown), err


# -- the data a study trains on, by content --------------------------------------------------------------
def folder_data(root: Path) -> Path:
    (root / "masks").mkdir(parents=True)
    for name in ("a", "b"):
        (root / "masks" / f"{name}.png").write_bytes(name.encode() * 10)
    return root


def test_a_dataset_edited_between_seeds_stops_the_study_in_one_line(tmp_path, fake):
    data = folder_data(tmp_path / "d")
    study = Study(backbones=["alexnet"], heads=["fcn32s"], seeds=3, out=str(tmp_path / "s"),
                  train={"data": str(data), "num_classes": 3})
    fake.stop = lambda cfg: cfg.seed == 0 and (data / "masks" / "a.png").write_bytes(b"edited") and False
    with pytest.raises(segzoo.SegzooError, match=r"d changed while the study ran, before alexnet-fcn32s/seed-1 "
                                                 r"\(changed masks/a.png\).*--restart"):
        run_study(study, progress=False, log=lambda _: None)
    assert [c.seed for c in fake.calls] == [0]  # seed 1 never trained on the edited data
    # resumed later over the edited data: refused too, by what changed, until --restart
    with pytest.raises(segzoo.SegzooError, match=r"trained on other data than .* holds now \(changed masks/a.png\)"):
        run_study(study, progress=False, log=lambda _: None)
    fake.stop = None
    assert len(run_study(study, progress=False, restart=True, log=lambda _: None)) == 3


def test_the_same_files_elsewhere_are_the_same_data_and_settings_compare_by_content(tmp_path, fake):
    import shutil

    data = folder_data(tmp_path / "d")
    study = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"),
                  train={"data": str(data), "num_classes": 3})
    [row] = run_study(study, progress=False, log=lambda _: None)
    recorded = json.loads((tmp_path / "s" / "data.json").read_text())
    assert recorded["count"] == 2 and row["data_digest"] == recorded["digest"] and recorded["digest"].startswith("sha")
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)  # new times, same bytes
    study.train = {**study.train, "data": str(moved)}
    study.seeds = 2
    fake.calls.clear()
    run_study(study, progress=False, log=lambda _: None)
    assert [c.seed for c in fake.calls] == [1]  # seed 0 is read back: same content, other path
    (moved / "masks" / "b.png").unlink()
    study.seeds = 3
    with pytest.raises(segzoo.SegzooError, match=r"other data .*removed masks/b.png"):
        run_study(study, progress=False, log=lambda _: None)


def test_a_variant_that_never_learns_a_class_is_flagged_in_the_log(tmp_path, fake, monkeypatch):
    train = segzoo.train.train

    def no_disc(cfg, **kw):
        result = train(cfg, **kw)
        if cfg.model.endswith("fcn32s"):
            result.final_metrics = {**result.final_metrics, "per_class_iu": {"background": 0.9, "disc": 0.0}}
        return result

    monkeypatch.setattr(segzoo.train, "train", no_disc)
    logs = []
    run_study(Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], seeds=2, out=str(tmp_path / "s")),
              progress=False, log=logs.append)
    warned = [line for line in logs if line.startswith("warning:")]
    assert warned == [warned[0]] and warned[0].startswith("warning: alexnet-fcn32s never learned disc (IU 0 in all 2")
    md = (tmp_path / "s" / "results.md").read_text()
    assert "⚠ disc" in md and "Never learned: alexnet-fcn32s: disc" in md


def test_the_image_label_axes_give_each_run_its_fraction_and_weight_and_the_gain_paired_by_seed(tmp_path, fake,
                                                                                                 capsys):
    out = tmp_path / "o"
    assert ablate_cli("--backbones", "alexnet", "--heads", "fcn8s", "--pixel-fraction", "0.25,1", "--weak",
                      "false,true", "--seeds", "2", "--weak-weight", "0.5", "--out", str(out)) == 0
    got = [(Path(c.out_dir).parent.name, c.seed, c.pixel_fraction, c.weak_weight) for c in fake.calls]
    assert got == [("alexnet-fcn8s-px25", 0, 0.25, 0.0), ("alexnet-fcn8s-px25-weak", 0, 0.25, 0.5),
                   ("alexnet-fcn8s-px100", 0, 1.0, 0.0), ("alexnet-fcn8s-px25", 1, 0.25, 0.0),
                   ("alexnet-fcn8s-px25-weak", 1, 0.25, 0.5), ("alexnet-fcn8s-px100", 1, 1.0, 0.0)]
    printed = capsys.readouterr().out
    weak_line = next(ln for ln in printed.splitlines() if "px25-weak" in ln)
    assert "+0.0000" in weak_line or "0.0000" in weak_line  # the fake's mean IU ignores image labels: no gain
    assert "alexnet-fcn8s-px25" in json.loads((out / "alexnet-fcn8s-px25-weak" / "seed-0" / "result.json"
                                               ).read_text())["paired_with"]


def test_a_valid_convolution_row_is_measured_at_the_input_that_covers_the_study_size(tmp_path):
    """unet-classic takes nothing under 188 px: a study at 64 px trained it on crops mirrored out to 188+ (its output
    window covering the crop), and measures it there too; the 64-px forward failed after training every seed."""
    from segzoo.cli import main

    ckpt = tmp_path / "u.pt"
    assert main(["build", "unet-classic-16", "--num-classes", "3", "--out", str(ckpt)]) == 0
    cost = ablate._measure(ckpt, 64)
    model = segzoo.load_model(ckpt)
    from segzoo.studies.summary import summarize

    assert model.output_window(252, 252).size == (68, 68)  # sides 188 + 16k: 252 is the first to cover 64 px
    assert cost["gflops"] == pytest.approx(summarize(model, (1, 3, 252, 252)).gflops)
    assert cost["latency_ms"] > 0
