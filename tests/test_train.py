"""The trainer: the FCN loss, optimiser presets, overfitting a batch, exact resume, checkpoints, staged init."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segzoo
from segzoo.core.errors import CheckpointError, SegzooError, TrainingError
from segzoo.train import TrainConfig, cross_entropy, init_from_checkpoint, make_optimizer, make_scheduler, train
from segzoo.train import setup as train_setup
from segzoo.train import trainer as trainer_module

TINY = {"model": "alexnet-fcn8s", "backbone_kwargs": {"fc_channels": 32}, "input_size": 64, "batch_size": 4,
        "scale": (1.0, 1.0), "progress": False, "device": "cpu"}


def tiny(tmp_path, demo_data, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": str(demo_data), "out_dir": str(tmp_path / "run"), **kw})


# -- loss --------------------------------------------------------------------------------------------
def test_loss_is_log_softmax_plus_nll_with_void_ignored():
    torch.manual_seed(0)
    scores = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    nll = nn.NLLLoss(ignore_index=255)
    assert torch.allclose(cross_entropy(scores, target), nll(nn.LogSoftmax(1)(scores), target))
    w = torch.tensor([0.5, 1.0, 2.0, 3.0])
    assert torch.allclose(cross_entropy(scores, target, w), nn.NLLLoss(w, ignore_index=255)(F.log_softmax(scores, 1),
                                                                                             target))
    summed = nn.NLLLoss(ignore_index=255, reduction="sum")(F.log_softmax(scores, 1), target)
    assert torch.allclose(cross_entropy(scores, target, reduction="sum"), summed)
    assert torch.allclose(summed / (target != 255).sum(), cross_entropy(scores, target))


def test_a_batch_of_only_void_gives_zero_not_nan():
    scores = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = cross_entropy(scores, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros_like(scores))


# -- optimisers --------------------------------------------------------------------------------------
def test_paper_preset_sgd_with_bias_lr_twice_and_no_bias_decay():
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 8},
                                head_kwargs={"learnable_upsampling": False})
    opt = make_optimizer(model, "paper")
    assert isinstance(opt, torch.optim.SGD)
    weights, biases = opt.param_groups
    assert (weights["lr"], weights["weight_decay"], weights["momentum"]) == (1e-4, 5e-4, 0.9)
    assert (biases["lr"], biases["weight_decay"]) == (2e-4, 0.0)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for g in opt.param_groups for p in g["params"]}
    sched = make_scheduler(opt, "paper", 100)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_modern_optimizers_decay_polynomially():
    model = nn.Conv2d(3, 2, 1)
    for name, cls in (("adamw", torch.optim.AdamW), ("sgd-poly", torch.optim.SGD)):
        opt = make_optimizer(model, name, lr=0.1)
        assert isinstance(opt, cls)
        sched = make_scheduler(opt, name, 10)
        for _ in range(5):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 0.9)
    with pytest.raises(segzoo.UnknownNameError, match="unknown optimizer"):
        make_optimizer(model, "adam")


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("paper", torch.optim.SGD)])
def test_presets_take_the_fused_step_where_pytorch_has_one(name, cls):
    from segzoo.core.accel import fused_kwargs

    opt = make_optimizer(nn.Conv2d(3, 2, 1), name)
    assert bool(opt.defaults.get("fused")) is bool(fused_kwargs(cls, "cpu"))


def test_a_loaded_schedule_takes_its_total_from_the_config_not_the_checkpoint():
    """A run extended from 4 to 12 steps continues the 12-step schedule at step 4, not the finished 4-step one."""
    model = nn.Conv2d(3, 2, 1)
    opt = make_optimizer(model, "sgd-poly", lr=0.1)
    sched = make_scheduler(opt, "sgd-poly", 4)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt2 = make_optimizer(model, "sgd-poly", lr=0.1)
    sched2 = make_scheduler(opt2, "sgd-poly", 12)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    expected = 0.1 * (1 - 4 / 12) ** 0.9
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([expected, 2 * expected])  # before the next step
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 5 / 12) ** 0.9)
    # the same total: loading changes nothing, so a resumed run repeats an uninterrupted one
    opt3 = make_optimizer(model, "sgd-poly", lr=0.1)
    sched3 = make_scheduler(opt3, "sgd-poly", 4)
    opt3.load_state_dict(state["optimizer"])
    sched3.load_state_dict(state["scheduler"])
    assert opt3.param_groups[0]["lr"] == 0.0 and sched3.last_epoch == 4


# -- training ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_overfits_a_tiny_batch(tmp_path, demo_data):
    """8 images, no augmentation, validated on the same images: loss falls, pixel accuracy passes 90%."""
    # 100 epochs: at 50 the net reached 0.87 pixel accuracy, at 100 0.96 (measured, seed 0).
    cfg = tiny(tmp_path, demo_data, val_split="train", flip=False, batch_size=8, epochs=100, lr=1e-3, eval_every=100)
    result = train(cfg, log=lambda _: None)
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.initial_metrics["pixel_acc"] < 0.85
    assert result.final_metrics["pixel_acc"] > 0.90
    assert result.final_metrics["mean_iu"] > result.initial_metrics["mean_iu"] + 0.2


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path, demo_data):
    """Dropout is random: only a restored RNG state (and per-sample augmentation seeds) makes these equal."""
    kw = {"epochs": 2, "val_split": None, "scale": (0.7, 1.3), "backbone_kwargs": {"fc_channels": 32, "dropout": 0.5}}
    whole = train(tiny(tmp_path / "a", demo_data, **kw), log=lambda _: None)
    first = train(tiny(tmp_path / "b", demo_data, stop_at_step=3, **kw), log=lambda _: None)
    assert first.stopped_early and len(first.history) == 1
    resumed = train(tiny(tmp_path / "b", demo_data, resume=True, **kw), log=lambda _: None)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert [r.train_loss for r in whole.history] == pytest.approx([r.train_loss for r in resumed.history])
    ckpt = torch.load(resumed.last_checkpoint, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4 and ckpt["format"] == "segzoo-model"


def test_data_loading_workers_do_not_change_the_run(tmp_path, demo_data):
    """Persistent worker processes see each epoch's augmentation as the main process does.

    Not bit-identical: a worker runs torch on one thread, which rounds the bilinear rescale of an
    image differently in the last bit (~2e-7); masks, order and crops are the same.
    """
    kw = {"epochs": 2, "val_split": None, "input_size": 48, "scale": (0.7, 1.3)}
    runs = [train(tiny(tmp_path / str(w), demo_data, workers=w, **kw), log=lambda _: None) for w in (0, 2)]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert [r.train_loss for r in runs[0].history] == pytest.approx([r.train_loss for r in runs[1].history],
                                                                        rel=1e-5)


def test_the_progress_bar_shows_loss_and_throughput(tmp_path, demo_data, capsys):
    import re

    train(tiny(tmp_path, demo_data, epochs=1, val_split=None, progress=True), log=lambda _: None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err
    assert re.search(r"loss=\d+\.\d{4}", err) and re.search(r"img/s=\d+\.\d", err)


def test_checkpoints_logs_and_the_demo_default(tmp_path):
    """With data=None the demo dataset is written beside the run; the run's files are what it promises."""
    records = []
    cfg = TrainConfig(**{**TINY, "out_dir": str(tmp_path / "runs" / "r1"), "epochs": 2,
                         "demo": {"train": 4, "val": 2, "size": 64, "seed": 0}})
    result = train(cfg, on_epoch=records.append, log=lambda _: None)
    assert (tmp_path / "runs" / "demo-data" / "ImageSets" / "Segmentation" / "val.txt").is_file()
    assert {p.name for p in result.files_written} == {"config.json", "metrics.jsonl", "metrics.csv", "last.pt",
                                                       "best.pt"}
    lines = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] == [r.epoch for r in records]
    assert set(lines[0]["val"]) >= {"pixel_acc", "mean_acc", "mean_iu", "fw_iu", "per_class_iu"}
    assert (result.out_dir / "metrics.csv").read_text().startswith("epoch,step,train_loss")
    model = segzoo.load_model(result.best_checkpoint)  # a training checkpoint is a model checkpoint too
    assert model.recipe.class_names[:2] == ("background", "disc") and model.num_classes == 6
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert {"optimizer", "scheduler", "rng", "config", "history", "epoch"} <= set(ckpt)


def test_samples_skipped_in_training_are_counted_per_epoch(tmp_path, demo_data):
    import shutil

    from segzoo.data import read_mask, write_mask

    bad = shutil.copytree(demo_data, tmp_path / "bad")
    path = bad / "SegmentationClass" / "train_00003.png"
    mask = read_mask(path)
    mask[5, 5] = 40  # a label above the 6 classes
    write_mask(mask, path)
    lines: list[str] = []
    result = train(tiny(tmp_path, bad, epochs=2, val_split=None, skip_bad=True), log=lines.append)
    assert [r.skipped for r in result.history] == [1, 1]
    logged = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in logged] == [1, 1]
    assert sum("1 skipped" in line and line.startswith("epoch ") for line in lines) == 2
    assert [r.images for r in result.history] == [7, 7]
    csv = (result.out_dir / "metrics.csv").read_text().splitlines()
    assert csv[0].endswith(",skipped") and csv[1].endswith(",1")


@pytest.mark.parametrize("every, expected", [
    ({}, [(2, 0), (4, 0), (6, 0)]),  # the default: the end of every epoch
    ({"save_every_epochs": 2, "save_every_steps": 3}, [(3, 1), (4, 0), (6, 0)]),  # and always the last epoch
    ({"save_every_epochs": 0}, [(6, 0)]),  # the end of the run only
])
def test_checkpoint_every_n_steps_and_epochs(tmp_path, demo_data, monkeypatch, every, expected):
    """(step, batches done in the epoch) of each last.pt; 2 steps an epoch, 3 epochs."""
    saved = []
    save = trainer_module.Trainer.save

    def spy(self, name):
        if name == "last.pt":
            saved.append((self.step, self.batches_done))
        save(self, name)

    monkeypatch.setattr(trainer_module.Trainer, "save", spy)
    train(tiny(tmp_path, demo_data, epochs=3, val_split=None, **every), log=lambda _: None)
    assert saved == expected
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (ckpt["step"], ckpt["epoch"]) == (6, 3)


def test_checkpoint_every_m_minutes_on_a_fake_clock(tmp_path, demo_data, monkeypatch):
    """Each batch takes 25 s of a fake clock; with save_every_minutes=1 last.pt is written at step 3 (75 s, mid-epoch)
    and at the end (6), and the clock counts from that checkpoint, not from the start (step 5 is 125 s in)."""
    from segzoo.train import autosave

    now, saved = [0.0], []
    monkeypatch.setattr(autosave, "clock", lambda: now[0])
    step, save = trainer_module.Trainer.train_step, trainer_module.Trainer.save

    def slow_step(self, batch, totals=None):
        now[0] += 25.0
        return step(self, batch, totals)

    def spy(self, name):
        if name == "last.pt":
            saved.append((self.step, self.batches_done))
        save(self, name)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", slow_step)
    monkeypatch.setattr(trainer_module.Trainer, "save", spy)
    train(tiny(tmp_path, demo_data, epochs=3, val_split=None, save_every_epochs=0, save_every_minutes=1.0),
          log=lambda _: None)
    assert saved == [(3, 1), (6, 0)]


def _logged(run) -> list[list[str]]:
    """metrics.csv without its timings (images/s, seconds), which differ from run to run; metrics.jsonl's epochs."""
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in ("images_per_s", "time_s")]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [int(row[0]) for row in rows[1:]]
    return [[row[i] for i in keep] for row in rows]


def test_the_logs_never_run_ahead_of_last_pt_and_a_resume_logs_as_an_unbroken_run(tmp_path, demo_data):
    """With --save-every-epochs 2 a stop after epoch 3 finds last.pt at epoch 2: metrics.csv/jsonl end there too
    (epoch 3's row waited for a checkpoint that never came), and the resumed run logs what an unbroken one does."""
    kw = {"epochs": 4, "save_every_epochs": 2}
    whole = train(tiny(tmp_path / "a", demo_data, **kw), log=lambda _: None).out_dir

    def stop_after_3(record):
        if record.epoch == 3:
            raise KeyboardInterrupt  # what Ctrl-C or the CLI's SIGTERM raises, after epoch 3 is done

    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "b", demo_data, **kw), on_epoch=stop_after_3, log=lambda _: None)
    run = tmp_path / "b" / "run"
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    assert [row[0] for row in _logged(run)[1:]] == ["1", "2"]
    train(tiny(tmp_path / "b", demo_data, resume=True, **kw), log=lambda _: None)
    assert _logged(run) == _logged(whole) and len(_logged(run)) == 5


def test_resume_auto_in_python_starts_then_continues(tmp_path, demo_data):
    first = train(tiny(tmp_path, demo_data, epochs=1, val_split=None, resume="auto"), log=lambda _: None)
    again = train(tiny(tmp_path, demo_data, epochs=2, val_split=None, resume="auto"), log=lambda _: None)
    assert [r.epoch for r in first.history] == [1] and [r.epoch for r in again.history] == [1, 2]
    assert again.history[0].train_loss == first.history[0].train_loss  # the first epoch was kept, not redone


def test_checkpoint_intervals_must_not_be_negative(tmp_path, demo_data):
    with pytest.raises(SegzooError, match="--save-every-epochs must be an integer from 0 to .*, got -1"):
        train(tiny(tmp_path, demo_data, save_every_epochs=-1), log=lambda _: None)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, demo_data, monkeypatch):
    cfg = tiny(tmp_path, demo_data, epochs=1, val_split=None)
    train(cfg, log=lambda _: None)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    monkeypatch.setattr(train_setup, "make_loss", lambda *a, **k: lambda s, b: torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2.*last\.pt.*lower --lr"):
        train(tiny(tmp_path, demo_data, epochs=2, val_split=None, resume=True), log=lambda _: None)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_a_non_finite_loss_before_any_checkpoint_says_there_is_none(tmp_path, demo_data, monkeypatch):
    monkeypatch.setattr(train_setup, "make_loss", lambda *a, **k: lambda s, b: torch.tensor(float("inf")))
    with pytest.raises(TrainingError) as info:
        train(tiny(tmp_path, demo_data, epochs=1, val_split=None), log=lambda _: None)
    message = str(info.value)
    assert "loss became inf at epoch 1, step 1" in message and "no checkpoint was written yet" in message
    assert "last.pt" not in message and "lower --lr" in message
    assert not (tmp_path / "run" / "last.pt").exists()


def test_staged_init_16s_from_32s_predicts_what_32s_did(tmp_path):
    torch.manual_seed(0)
    kw = {"num_classes": 4, "backbone_kwargs": {"fc_channels": 16}}
    coarse = segzoo.create_model("alexnet-fcn32s", **kw).eval()
    segzoo.save_model(coarse, tmp_path / "32s.pt")
    fine = segzoo.create_model("alexnet-fcn16s", **kw).eval()
    got = init_from_checkpoint(fine, tmp_path / "32s.pt")
    assert any(k.startswith("head.score_skip") for k in got["kept"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fine(x), coarse(x), atol=1e-5)
    other = segzoo.create_model("alexnet-fcn16s", num_classes=4, backbone_kwargs={"fc_channels": 8})
    with pytest.raises(CheckpointError, match="does not hold this model's backbone"):
        init_from_checkpoint(other, tmp_path / "32s.pt")


# -- gradient accumulation and SyncBatchNorm ---------------------------------------------------------
def test_accumulation_groups_and_the_short_last_group():
    from segzoo.train.step import accumulation_group

    groups = [accumulation_group(b, 2, 5) for b in range(5)]
    assert groups == [(2, False), (2, True), (2, False), (2, True), (1, True)]


def test_accumulating_two_batches_of_4_is_one_step_of_a_batch_of_8(tmp_path, demo_data):
    """Summed loss, plain SGD without decay or dropout: the accumulated gradient is the batch of 8's divided by 2,
    so twice the learning rate gives the same weights (and the mean loss, divided by 2, matches a batch's mean)."""
    common = {**TINY, "model": "alexnet-fcn32s", "backbone_kwargs": {"fc_channels": 32, "dropout": 0.0},
              "flip": False, "val_split": None, "epochs": 1, "loss_reduction": "sum", "optimizer": "sgd-poly",
              "weight_decay": 0.0, "momentum": 0.0, "data": str(demo_data)}
    whole = train(TrainConfig(**{**common, "batch_size": 8, "lr": 1e-7, "out_dir": str(tmp_path / "a")}),
                  log=lambda _: None)
    lines: list[str] = []
    accumulated = train(TrainConfig(**{**common, "batch_size": 4, "accumulate": 2, "lr": 2e-7,
                                       "out_dir": str(tmp_path / "b")}), log=lines.append)
    assert whole.history[0].step == accumulated.history[0].step == 1
    assert "gradients of 2 batches of 4 per step" in lines[0]
    a, b = whole.model.state_dict(), accumulated.model.state_dict()
    changed = [k for k in a if not torch.equal(a[k], segzoo.load_model(tmp_path / "a" / "last.pt").state_dict()[k])]
    assert not changed  # the checkpoint holds the stepped weights
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


# lr 1000: one step changes every weight far more than float32 rounds it, so the changes can be compared
MIXED_SGD = {**TINY, "backbone_kwargs": {"fc_channels": 16, "dropout": 0.0}, "val_split": None, "epochs": 1,
             "optimizer": "sgd-poly", "weight_decay": 0.0, "momentum": 0.0, "lr": 1000.0, "pixel_fraction": 0.5,
             "weak_weight": 1.0}


def weight_changes(start: dict, end: dict) -> dict:
    return {k: end[k] - start[k] for k in start if not torch.equal(end[k], start[k])}


def assert_same_changes(a: dict, b: dict) -> None:
    """Equal up to float32 rounding of the weights the changes were added to (1e-3 of each tensor's largest)."""
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-3 * float(a[k].abs().max())), k


def test_accumulating_two_mixed_batches_of_4_is_one_step_of_a_batch_of_8(tmp_path, demo_data):
    """Mean cross-entropy over the valid pixels (the demo's void outlines make them differ between images) and the
    image-level mean, each over the whole step's samples of its kind: 2 x 4 accumulated is the batch of 8."""
    kw = {**MIXED_SGD, "data": str(demo_data)}
    start = train(TrainConfig(**{**kw, "batch_size": 8, "lr": 1e-30, "out_dir": str(tmp_path / "s")}),
                  log=lambda _: None).model.state_dict()
    whole = train(TrainConfig(**{**kw, "batch_size": 8, "out_dir": str(tmp_path / "a")}), log=lambda _: None)
    accumulated = train(TrainConfig(**{**kw, "batch_size": 4, "accumulate": 2, "out_dir": str(tmp_path / "b")}),
                        log=lambda _: None)
    for run in (whole, accumulated):
        assert (run.history[0].step, run.history[0].mask_samples, run.history[0].image_samples) == (1, 4, 4)
    assert_same_changes(weight_changes(start, whole.model.state_dict()),
                        weight_changes(start, accumulated.model.state_dict()))


def test_sync_bn_converts_batchnorm_and_keeps_the_model():
    from types import SimpleNamespace

    from segzoo.train import runtime as rtm

    model = segzoo.create_model("timm-resnet18-fcn32s", num_classes=3)
    keys = list(model.state_dict())
    assert rtm.sync_batchnorm(model) == 20
    assert isinstance(model, segzoo.SegmentationModel) and model.recipe.backbone == "timm-resnet18"
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == 20
    assert list(model.state_dict()) == keys  # checkpoints keep their keys
    rt = SimpleNamespace(distributed=True, device=torch.device("cpu"), world_size=2)
    with pytest.raises(SegzooError, match="--sync-bn needs CUDA GPUs"):
        train_setup.convert_sync_bn(model, rt, print)


def test_grey_16_bit_data_with_its_own_stats_trains_and_the_log_says_settings_and_classes_never_predicted(tmp_path):
    """Grey statistics meet an RGB model (they are repeated, as the image is); the resolved real-data defaults and,
    at each validation, the classes never predicted are in the log."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "grey"
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (data / split / sub).mkdir(parents=True)
        for i in range(2):
            rng = np.random.default_rng(i)
            image = rng.integers(0, 65535, (64, 64), dtype=np.uint16)
            Image.fromarray(image).save(data / split / "images" / f"{i}.png")
            Image.fromarray(rng.integers(0, 3, (64, 64)).astype(np.uint8)).save(data / split / "masks" / f"{i}.png")
    (data / "class_names.txt").write_text("background\ngrey\nwhite\n")
    lines: list[str] = []
    result = train(tiny(tmp_path, data, epochs=1, normalization="stats", batch_size=2), log=lines.append)
    assert len(result.model.normalization["mean"]) == 3  # grey stats repeated for the 3-channel model
    assert "settings: batch 2, loss mean, AdamW lr 0.0001 weight decay 0.0001" in "\n".join(lines)
    validated = [line for line in lines if line.startswith(("before training:", "epoch 1/1"))]
    assert len(validated) == 2 and result.initial_metrics["never_predicted"]  # untrained: one class everywhere
    for line, metrics in zip(validated, (result.initial_metrics, result.final_metrics)):
        missed = metrics["never_predicted"]
        assert ("never predicted: " + ", ".join(missed) in line) if missed else "never predicted" not in line
        assert set(missed) <= {"background", "grey", "white"}


def test_compile_wraps_the_training_forward_and_says_what_the_first_step_took(tmp_path, demo_data, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)  # inductor takes minutes on 2 cores
    lines = []
    result = train(tiny(tmp_path, demo_data, compile=True), log=lines.append)
    assert compiled == [result.model]  # the forward, built once; the model itself is what is saved
    assert sum("--compile: the first step took" in line for line in lines) == 1
    lines.clear()
    train(tiny(tmp_path, demo_data, out_dir=str(tmp_path / "plain")), log=lines.append)
    assert len(compiled) == 1 and not any("--compile" in line for line in lines)


@pytest.mark.slow
def test_compile_trains_for_real_with_inductor(tmp_path, demo_data):
    # the test above replaces torch.compile; this one compiles (inductor, about half a minute on 2 cores), which
    # found the learnable upsampling's replicate pad failing in inductor's backward
    lines = []
    result = train(tiny(tmp_path, demo_data, compile=True, epochs=1, val_split=None), log=lines.append)
    assert sum("--compile: the first step took" in line for line in lines) == 1
    assert result.history and math.isfinite(result.history[-1].train_loss)


def test_resume_mid_epoch_with_mixed_batches_equals_an_uninterrupted_run(tmp_path, demo_data):
    """Half the images keep their masks, the others train from their image labels; stopped inside epoch 2."""
    kw = {"epochs": 2, "val_split": None, "scale": (0.7, 1.3), "pixel_fraction": 0.5, "weak_weight": 1.0,
          "weak_pool": "topk", "weak_suppress": 0.5, "backbone_kwargs": {"fc_channels": 32, "dropout": 0.5}}
    lines = []
    whole = train(tiny(tmp_path / "a", demo_data, **kw), log=lines.append)
    first = train(tiny(tmp_path / "b", demo_data, stop_at_step=3, **kw), log=lambda _: None)
    assert first.stopped_early and len(first.history) == 1
    resumed = train(tiny(tmp_path / "b", demo_data, resume=True, **kw), log=lambda _: None)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r.train_loss for r in whole.history] == [r.train_loss for r in resumed.history]
    assert [(r.mask_samples, r.image_samples) for r in resumed.history] == [(4, 4), (4, 4)]
    assert any("4 with masks" in ln and "4 image-labelled" in ln for ln in lines)
    assert any("samples: 4 with masks, 4 image-labelled" in ln for ln in lines)
