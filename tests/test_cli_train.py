"""The commands: data demo/check, train (and --resume), eval, predict; errors as one line and exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.cli import main
from segzoo.data import read_mask, write_mask

TRAIN = ["train", "--model", "alexnet-fcn8s", "--fc-channels", "16", "--batch-size", "4", "--input-size", "64",
         "--scale", "1,1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data):
    """One short run through the CLI, shared by the eval and predict tests."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--data", str(demo_data), "--epochs", "1", "--out", str(run)]) == 0
    return run


def test_data_demo_writes_a_voc_folder(tmp_path, capsys):
    assert main(["data", "demo", "--out", str(tmp_path / "d"), "--train", "3", "--val", "2", "--size", "48"]) == 0
    assert "VOC layout" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "JPEGImages").glob("*.jpg"))) == 5
    with Image.open(tmp_path / "d" / "SegmentationClass" / "train_00000.png") as im:
        assert im.mode == "P" and im.size == (48, 48)
    assert main(["data", "check", str(tmp_path / "d"), "--split", "val"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_train_prints_final_metrics_and_refuses_to_overwrite(trained, demo_data, capsys):
    assert {"last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "config.json"} <= {p.name for p in trained.iterdir()}
    assert main([*TRAIN, "--data", str(demo_data), "--out", str(trained)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_train_resume_through_the_cli(tmp_path, demo_data, capsys):
    """A finished 1-epoch run extended to 3 epochs goes on training on the 3-epoch schedule (lr > 0)."""
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(demo_data), "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    first = torch.load(run / "last.pt", weights_only=True)
    assert first["history"][-1]["lr"] == 0.0  # the 1-epoch poly schedule ran out
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3", "--lr", "5"]) == 0
    out = capsys.readouterr().out
    assert "--lr ignored" in out and "resuming" in out and "final validation metrics (epoch 3)" in out
    assert "mean IU" in out and "disc" in out  # the four metrics and the per-class table
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[1]["lr"] == pytest.approx(1e-4 * (1 - 4 / 6) ** 0.9)  # adamw, 3-epoch schedule at step 4
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["config"]["epochs"] == 3
    changed = [k for k, v in first["state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, last["state_dict"][k])]
    assert "head.score_fr.weight" in changed and "backbone.features.0.weight" in changed
    assert main(["train", "--resume"]) == 2


def test_val_split_none_trains_without_validation(tmp_path, demo_data, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(demo_data), "--epochs", "1", "--val-split", "none", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["val_split"] is None
    assert "val" not in json.loads((run / "metrics.jsonl").read_text())
    assert "before training" not in out and "final validation metrics" not in out and not (run / "best.pt").exists()


def test_class_weights_of_the_wrong_length_are_a_one_line_error(tmp_path, demo_data, capsys):
    args = [*TRAIN, "--data", str(demo_data), "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main([*args, "--class-weights", "1,2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segzoo: error: --class-weights has 2 values but the dataset has 6 classes") and \
        err.count("\n") == 1
    assert "one weight per class" in err and "background, disc" in err
    assert main([*args, "--class-weights", "1,1,1,-1,1,1"]) == 2
    assert "must be finite and >= 0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_save_every_options_reach_the_config(tmp_path, demo_data, capsys):
    from segzoo.cli import build_parser
    from segzoo.cli.train import build_config

    parser, _ = build_parser()
    args = [*TRAIN, "--data", str(demo_data), "--out", str(tmp_path / "run")]
    cfg = build_config(parser.parse_args([*args, "--save-every-epochs", "2", "--save-every-steps", "5"]))
    assert (cfg.save_every_epochs, cfg.save_every_steps) == (2, 5)
    assert build_config(parser.parse_args(args)).save_every_epochs == 1
    assert main([*args, "--save-every-epochs", "-1"]) == 2
    assert "--save-every-epochs must be an integer from 0 to" in capsys.readouterr().err
    assert build_config(parser.parse_args([*args, "--save-every-minutes", "0.5"])).save_every_minutes == 0.5
    for bad in ("-1", "nan"):
        assert main([*args, "--save-every-minutes", bad]) == 2
        assert "--save-every-minutes must be a finite number >= 0" in capsys.readouterr().err


def test_resume_auto_needs_its_out_and_starts_or_continues_by_what_is_there(trained, demo_data, tmp_path, capsys):
    from segzoo.cli import build_parser
    from segzoo.cli.train import build_config

    parser, _ = build_parser()
    args = [*TRAIN, "--data", str(demo_data), "--resume", "auto"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume auto continues the run in its folder, so it needs one: --out RUN_DIR" in err
    assert len(err.strip().splitlines()) == 1
    assert build_config(parser.parse_args([*args, "--out", str(tmp_path / "new")])).resume is False
    resumed = build_config(parser.parse_args([*args, "--out", str(trained), "--epochs", "3"]))
    assert resumed.resume == str(trained / "last.pt") and resumed.epochs == 3


def test_eval_prints_the_four_metrics_and_writes_json(trained, demo_data, capsys):
    assert main(["eval", "--checkpoint", str(trained / "best.pt"), "--data", str(demo_data), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for label in ("pixel accuracy", "mean accuracy", "mean IU", "f.w. IU", "boundary IoU (2 px)", "triangle"):
        assert label in out
    report = json.loads((trained / "eval-val.json").read_text())
    assert 0 <= report["mean_iu"] <= 1 and set(report["per_class_iu"]) >= {"background", "ring"}
    assert 0 <= report["boundary_iou"] <= 1 and report["boundary_px"] == 2
    assert set(report["per_class_boundary_iou"]) == set(report["per_class_iu"])
    assert main(["eval", "--checkpoint", str(trained / "best.pt"), "--data", str(demo_data), "--device", "cpu",
                 "--boundary-px", "3"]) == 0
    assert "boundary IoU (3 px)" in capsys.readouterr().out
    assert json.loads((trained / "eval-val.json").read_text())["boundary_px"] == 3


def test_eval_of_bad_data_is_one_line_naming_the_file(trained, demo_data, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(demo_data, bad)
    path = bad / "SegmentationClass" / "val_00001.png"
    mask = read_mask(path)
    mask[0, 0] = 7
    write_mask(mask, path)
    args = ["eval", "--checkpoint", str(trained / "last.pt"), "--data", str(bad), "--device", "cpu",
            "--json", str(tmp_path / "e.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("segzoo: error: mask") and "val_00001.png" in err and err.count("\n") == 1
    assert main([*args, "--workers", "1"]) == 2  # raised in a loader worker process: the same one line
    assert capsys.readouterr().err == err
    assert main([*args, "--skip-bad"]) == 0
    assert "1 skipped" in capsys.readouterr().out


def test_bad_data_in_a_loader_worker_is_the_same_one_line_error(demo_data, tmp_path, capsys):
    import shutil

    bad = shutil.copytree(demo_data, tmp_path / "bad")
    path = bad / "SegmentationClass" / "train_00002.png"
    mask = read_mask(path)
    mask[3, 3] = 9
    write_mask(mask, path)
    errors = []
    for workers in ("0", "1"):
        args = [*TRAIN, "--data", str(bad), "--epochs", "1", "--val-split", "none", "--workers", workers,
                "--out", str(tmp_path / f"run{workers}")]
        assert main(args) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0].startswith("segzoo: error: mask") and "train_00002.png has label values [9]" in errors[0]
    assert errors[1] == errors[0] and errors[1].count("\n") == 1


def test_predict_writes_palette_masks_overlays_and_probabilities(trained, voc_photo, tmp_path, capsys):
    image = voc_photo / "JPEGImages" / "2007_000001.jpg"
    small = tmp_path / "small.png"
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(small)  # below AlexNet's minimum: padded
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(trained / "last.pt"), str(image), str(small), "--out", str(out),
                 "--probs", "--device", "cpu"]) == 0
    with Image.open(out / "2007_000001.png") as im:
        assert im.mode == "P" and im.size == (500, 375)
        assert np.asarray(im).max() < 6
    with Image.open(out / "2007_000001_overlay.png") as im:
        assert im.size == (1000, 375)
    probs = np.load(out / "2007_000001_probs.npy")
    assert probs.shape == (6, 375, 500) and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert np.array_equal(probs.argmax(0), read_mask(out / "2007_000001.png"))
    with Image.open(out / "small.png") as im:
        assert im.size == (30, 20)


def test_train_on_the_demo_gets_the_library_demo_settings_and_prints_them(tmp_path, capsys):
    from segzoo.cli import build_parser
    from segzoo.cli.train import build_config
    from segzoo.train.demo import DEMO_BACKBONE_OPTIONS, DEMO_SETTINGS

    parser, _ = build_parser()
    cfg = build_config(parser.parse_args(["train", "--out", str(tmp_path / "r")]))
    assert (cfg.epochs, cfg.batch_size, cfg.input_size, tuple(cfg.scale), cfg.lr) == tuple(
        DEMO_SETTINGS[k] for k in ("epochs", "batch_size", "input_size", "scale", "lr"))
    assert cfg.backbone_kwargs == DEMO_BACKBONE_OPTIONS
    assert "demo defaults --epochs 8 --batch-size 4" in capsys.readouterr().out
    cfg = build_config(parser.parse_args(["train", "--model", "timm-resnet18-fcn8s", "--epochs", "2",
                                          "--out", str(tmp_path / "t")]))
    assert cfg.epochs == 2 and cfg.backbone_kwargs == {}  # given wins; timm's factory does not take fc_channels
    assert "--fc-channels" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_resume_auto_is_one_command_that_survives_requeues(tmp_path):
    """The same command started 3 times, as a requeued job is: fresh and stopped by SIGTERM before its first
    checkpoint, started again (its leftovers removed) and killed by SIGKILL after one, then resumed to the end."""
    from segzoo.data import write_demo_dataset

    data = write_demo_dataset(tmp_path / "data", train=24, val=2, size=64, seed=0)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "segzoo", *TRAIN, "--batch-size", "1", "--data", str(data), "--epochs", "1",
               "--save-every-steps", "5", "--resume", "auto", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def start(n: int) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"start{n}.txt"
        return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env), log

    def wait_for(path: Path, proc: subprocess.Popen) -> None:
        end = time.monotonic() + 120
        while not path.exists():
            assert proc.poll() is None, f"ended ({proc.returncode}) before {path.name} was written"
            assert time.monotonic() < end, f"no {path.name} within 120 s"
            time.sleep(0.02)

    proc, log = start(1)  # 1: a fresh run, stopped after it wrote config.json, before its first checkpoint
    wait_for(out / "config.json", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()
    assert "no checkpoint was written yet" in log.read_text() and not (out / "last.pt").exists()

    proc, log = start(2)  # 2: the leftovers go, the run starts again; killed outright once it has a checkpoint
    wait_for(out / "last.pt", proc)
    proc.kill()
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert "stopped before its first checkpoint (config.json" in log.read_text()
    killed_at = torch.load(out / "last.pt", weights_only=True)["step"]
    assert 5 <= killed_at < 24

    proc, log = start(3)  # 3: continues that checkpoint to the end
    assert proc.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert f"resuming {out / 'last.pt'} at epoch" in text and "took over the lock" in text
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 24)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1]


def test_print_config_on_real_data_shows_the_resolved_optimizer_defaults_and_no_demo_block(demo_data, capsys):
    import yaml

    assert main(["train", "--data", str(demo_data), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["optimizer"], printed["lr"], printed["weight_decay"], printed["batch_size"]) == (
        "adamw", 1e-4, 1e-4, 8)
    assert "demo" not in printed and "momentum" in printed and printed["momentum"] is None  # AdamW has none
    assert main(["train", "--data", str(demo_data), "--optimizer", "sgd-poly", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["lr"], printed["momentum"], printed["weight_decay"]) == (1e-2, 0.9, 5e-4)
    assert main(["train", "--print-config"]) == 0  # the demo: its block and its lr
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["demo"]["train"] == 160 and printed["lr"] == 1e-3


def fake_train(monkeypatch, stopped=False):
    """segzoo.train.train replaced: it writes what a finished run does (both checkpoints), or stops at once."""
    from types import SimpleNamespace

    import segzoo.train

    calls = []

    def train(config, **kw):
        from pathlib import Path

        calls.append(config)
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
            (out / name).write_text("{}")
        return SimpleNamespace(stopped_early=stopped, rank=0, out_dir=out, best_checkpoint=out / "best.pt",
                               final_metrics=None, history=[])

    monkeypatch.setattr(segzoo.train, "train", train)
    return calls


def test_restart_clears_a_run_that_stopped_before_its_first_checkpoint_and_nothing_else(tmp_path, demo_data,
                                                                                         monkeypatch, capsys):
    calls = fake_train(monkeypatch, stopped=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "alexnet-fcn8s", "epochs": 1, "out_dir": str(run)}))
    (run / "metrics.jsonl").write_text("")
    (run / "notes.txt").write_text("mine")
    args = [*TRAIN, "--data", str(demo_data), "--out", str(run)]
    assert main(args) == 2 and "already holds part of a run" in capsys.readouterr().err and calls == []
    assert main([*args, "--restart"]) == 0 and len(calls) == 1
    assert "--restart: removed config.json, metrics.jsonl" in capsys.readouterr().out
    assert (run / "notes.txt").read_text() == "mine"  # not segzoo's: kept
    # a folder with a checkpoint is never cleared
    assert main([*args, "--restart"]) == 2
    err = capsys.readouterr().err
    assert "holds last.pt, best.pt; continue it with --resume" in err and (run / "last.pt").exists()
    assert main([*args, "--restart", "--resume"]) == 2


@pytest.mark.parametrize("keep, left", [("best", {"best.pt"}), ("last", {"last.pt"}),
                                        ("both", {"best.pt", "last.pt"})])
def test_keep_removes_the_other_checkpoint_of_a_finished_run(tmp_path, demo_data, monkeypatch, capsys, keep, left):
    fake_train(monkeypatch)
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(demo_data), "--out", str(run), "--keep", keep]) == 0
    assert {p.name for p in run.glob("*.pt")} == left
    out = capsys.readouterr().out
    assert ("removed" in out) == (keep != "both")


def test_amp_takes_force_or_nothing_and_no_amp_turns_it_off(capsys):
    import yaml

    for flags, want in ((["--amp", "force"], "force"), (["--amp"], True), (["--no-amp"], False), ([], None)):
        assert main(["train", "--model", "alexnet-fcn8s", *flags, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["amp"] == want
    assert main(["train", "--model", "alexnet-fcn8s", "--amp", "always", "--print-config"]) == 2
    assert "'force'" in capsys.readouterr().err
