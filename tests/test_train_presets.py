"""Training as in the paper: ``--preset paper-heavy`` / ``paper-cvpr`` applied by the trainer, and train
settings that are checked by name (a misspelt key is an error, never silently dropped)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from segzoo.api import load_model
from segzoo.cli import main
from segzoo.core.errors import GeometryError, SegzooError, UnknownNameError
from segzoo.studies.ablate import run_study
from segzoo.studies.study import Study
from segzoo.train import TrainConfig
from segzoo.train import runtime as rtm
from segzoo.train import setup as train_setup
from segzoo.train.optim import optimizer_defaults
from segzoo.train.presets import resolve_preset
from segzoo.train.trainer import Trainer


# -- settings are checked by name --------------------------------------------------------------------
def test_an_unknown_train_setting_is_an_error_naming_the_closest():
    with pytest.raises(UnknownNameError, match=r"unknown train setting 'batchsize'\. Did you mean: batch_size\?"):
        TrainConfig.from_dict({"batchsize": 2})
    with pytest.raises(UnknownNameError, match=r"'epoch'.*epochs.*also unknown: 'colour'"):
        TrainConfig.from_dict({"epoch": 2, "colour": "red"})


def test_a_study_with_an_unknown_train_setting_stops_before_training(tmp_path, monkeypatch):
    import segzoo.train

    monkeypatch.setattr(segzoo.train, "train", lambda *a, **k: pytest.fail("nothing may train"))
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({"backbones": ["alexnet"], "heads": ["fcn32s"], "train": {"batchsize": 2}}))
    with pytest.raises(SegzooError, match=rf"{spec}: train: unknown train setting 'batchsize'.*batch_size"):
        Study.from_yaml(spec)
    study = Study(backbones=["alexnet"], heads=["fcn32s"], out=str(tmp_path / "s"), train={"epoch": 1})
    with pytest.raises(SegzooError, match="train: unknown train setting 'epoch'.*epochs"):
        run_study(study, progress=False)
    assert not (tmp_path / "s").exists()


# -- the recipes, applied by the trainer ----------------------------------------------------------------
TINY = {"backbone_kwargs": {"fc_channels": 16}, "input_size": 64, "scale": (1.0, 1.0), "progress": False,
        "device": "cpu", "epochs": 1, "val_split": None}


def tiny(tmp_path, demo_data, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": str(demo_data), "out_dir": str(tmp_path / "run"), **kw})


def trainer(config: TrainConfig, run: bool = False) -> tuple[Trainer, list[str]]:
    """A Trainer set up (``run``: and run) on the CPU, with what it logged."""
    logs: list[str] = []
    rt = rtm.setup(config.device, config.amp)
    try:
        t = Trainer(config, rt, None, logs.append)
        t.run() if run else t.build()
    finally:
        rtm.teardown(rt)
    return t, logs


def upsamplings(model) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The final upsampling's parameters and the 2x ones' (by what the FCN head calls them)."""
    return (list(model.head.upscore.parameters()),
            [p for m in model.head.upscore_skip.values() for p in m.parameters()])


def check_optimizer(t: Trainer, preset: dict) -> None:
    weights, biases = t.parts.optimizer.param_groups
    assert isinstance(t.parts.optimizer, torch.optim.SGD)
    assert (weights["lr"], weights["momentum"], weights["weight_decay"]) == (
        preset["lr"], preset["momentum"], preset["weight_decay"])
    # the "paper" optimizer: Caffe's lr_mult 2 and decay_mult 0 for biases
    assert biases["lr"] == pytest.approx(preset["lr"] * 2.0)
    assert (biases["momentum"], biases["weight_decay"]) == (preset["momentum"], 0.0)
    assert all(p.ndim == 1 for p in biases["params"]) and all(p.ndim > 1 for p in weights["params"])
    trainable = {id(p) for p in t.parts.model.parameters() if p.requires_grad}
    assert {id(p) for g in t.parts.optimizer.param_groups for p in g["params"]} == trainable


@pytest.mark.parametrize("name, model, fixed", [("paper-heavy", "alexnet-fcn16s", "all"),
                                                ("paper-cvpr", "alexnet-fcn16s", "final"),
                                                ("paper-cvpr", "alexnet-fcn32s", "final")])
def test_a_preset_sets_the_optimizer_loss_geometry_and_head(tmp_path, demo_data, monkeypatch, name, model, fixed):
    preset = resolve_preset(name, model)
    fresh, logs = trainer(tiny(tmp_path, demo_data, model=model, preset=name))
    assert fresh.cfg.batch_size == preset["batch_size"] and fresh.parts.data.loader.batch_size == preset["batch_size"]
    check_optimizer(fresh, preset)
    assert fresh.parts.model.recipe.geometry == "caffe" and fresh.parts.model.backbone.features[0].padding == (100, 100)
    assert fresh.parts.model.normalization["bgr"]  # the caffe nets' BGR 0-255 input
    assert not fresh.parts.model.head.score_fr.weight.any() and not fresh.parts.model.head.score_fr.bias.any()
    final, twice = upsamplings(fresh.parts.model)
    assert final and not any(p.requires_grad for p in final)
    assert all(p.requires_grad == (fixed == "final") for p in twice)
    assert len(twice) == (1 if model.endswith("16s") else 0)
    assert optimizer_defaults(fresh.cfg.optimizer)["schedule"] == "constant"
    staged = [line for line in logs if line.startswith("note: preset")]
    if model.endswith("16s"):  # the paper fine-tunes it from a trained 32s: say how, train on
        assert staged == [f"note: preset {name} fine-tunes {model} from a trained alexnet-fcn32s; to do "
                          "the same pass that run's checkpoint, e.g. --init-from runs/alexnet-fcn32s/last.pt "
                          "(init_from= in Python or a study); training from the backbone's initialisation instead"]
    else:
        assert staged == []

    reductions = []
    real_make_loss = train_setup.make_loss

    def spy(name, weight, reduction, options):  # the loss the trainer makes, recording its reduction per step
        loss = real_make_loss(name, weight, reduction, options)
        return lambda scores, batch: reductions.append(reduction) or loss(scores, batch)

    monkeypatch.setattr(train_setup, "make_loss", spy)
    t, logs = trainer(tiny(tmp_path, demo_data, model=model, preset=name, batch_size=2, stop_at_step=2), run=True)
    assert reductions == [preset["loss_reduction"]] * 2
    assert any(line.startswith(f"preset {name}: batch 2, loss {preset['loss_reduction']}, SGD lr {preset['lr']:g} "
                               f"momentum {preset['momentum']:g}") for line in logs)
    after = dict(t.parts.model.named_parameters())
    for key, p in fresh.parts.model.named_parameters():  # the fixed upsamplings are still exactly bilinear
        if not p.requires_grad:
            assert torch.equal(after[key], p), key
    assert not torch.equal(after["head.score_fr.weight"], fresh.parts.model.head.score_fr.weight)  # it did train


def test_explicit_options_win_over_the_preset(tmp_path, demo_data):
    config = tiny(tmp_path, demo_data, model="alexnet-fcn8s", preset="paper-heavy", batch_size=2, lr=1e-3,
                  momentum=0.5, loss_reduction="mean", head_kwargs={"learnable_upsampling": True})
    t, _ = trainer(config)
    assert (t.cfg.batch_size, t.cfg.loss_reduction, t.cfg.weight_decay) == (2, "mean", 5e-4)
    groups = t.parts.optimizer.param_groups
    assert (groups[0]["lr"], groups[0]["momentum"], groups[1]["lr"]) == (1e-3, 0.5, 2e-3)
    final, twice = upsamplings(t.parts.model)
    assert not any(p.requires_grad for p in final) and all(p.requires_grad for p in twice)  # the CVPR way
    modern = TrainConfig(model="alexnet-fcn8s", preset="paper-heavy", geometry="modern", optimizer="adamw").resolved()
    assert (modern.geometry, modern.optimizer, modern.momentum, modern.lr) == ("modern", "adamw", None, 1e-14)
    with pytest.raises(SegzooError, match="optimizer 'adamw' has no momentum.*paper, sgd-poly"):
        trainer(tiny(tmp_path, demo_data, model="alexnet-fcn32s", optimizer="adamw", momentum=0.9))
    again = modern.resolved()
    assert again == modern  # resolving a resolved config changes nothing: it resumes as itself
    # a head the recipe has no lr for trains with the user's
    assert TrainConfig(model="alexnet-fcn4s", preset="paper-cvpr", lr=0.1).resolved().lr == 0.1
    with pytest.raises(SegzooError, match="not for 'alexnet-fcn4s'; pass the learning rate yourself"):
        TrainConfig(model="alexnet-fcn4s", preset="paper-cvpr").resolved()


def test_a_preset_geometry_the_backbone_lacks_names_the_problem_and_the_fix(tmp_path, demo_data):
    with pytest.raises(GeometryError, match=r"preset 'paper-cvpr' trains in geometry 'caffe', which "
                                            r"timm-resnet18-fcn32s cannot have .*only defined for vgg16 and alexnet.*"
                                            r"--geometry modern"):
        trainer(tiny(tmp_path, demo_data, model="timm-resnet18-fcn32s", preset="paper-cvpr", backbone_kwargs={}))
    with pytest.raises(UnknownNameError, match="unknown preset 'paper-hevy'.*Did you mean: paper-heavy"):
        trainer(tiny(tmp_path, demo_data, model="alexnet-fcn32s", preset="paper-hevy"))


def test_the_cli_applies_a_preset_records_it_and_resume_keeps_it(tmp_path, demo_data, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "alexnet-fcn16s", "--preset", "paper-heavy", "--fc-channels", "16", "--input-size",
            "64", "--scale", "1,1", "--device", "cpu", "--no-progress", "--data", str(demo_data), "--val-split",
            "none", "--epochs", "1", "--batch-size", "4", "--out", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: preset paper-heavy fine-tunes alexnet-fcn16s" in out
    stored = json.loads((run / "config.json").read_text())
    want = {"preset": "paper-heavy", "batch_size": 4, "loss_reduction": "sum", "optimizer": "paper", "lr": 1e-12,
            "momentum": 0.99, "weight_decay": 5e-4, "geometry": "caffe",
            "head_kwargs": {"learnable_upsampling": False, "fixed_final_upsampling": True, "zero_init_scores": True}}
    assert {k: stored[k] for k in want} == want
    assert {k: torch.load(run / "last.pt", weights_only=True)["config"][k] for k in want} == want
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--momentum", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "--momentum ignored" in out and "note:" not in out
    assert "preset paper-heavy: batch 4, loss sum, SGD lr 1e-12 momentum 0.99" in out
    last = torch.load(run / "last.pt", weights_only=True)
    assert {k: last["config"][k] for k in want} == want and last["config"]["epochs"] == 2
    assert [h["step"] for h in last["history"]] == [2, 4]
    assert [g["momentum"] for g in last["optimizer"]["param_groups"]] == [0.99, 0.99]
    assert last["recipe"]["geometry"] == "caffe" and last["recipe"]["head_kwargs"] == want["head_kwargs"]
    model = load_model(run / "last.pt")  # the checkpoint rebuilds the recipe's net by itself
    assert not any(p.requires_grad for m in (model.head.upscore, *model.head.upscore_skip.values())
                   for p in m.parameters())


def test_a_resumed_preset_run_keeps_the_preset_without_being_told(tmp_path, demo_data):
    config = tiny(tmp_path, demo_data, model="alexnet-fcn32s", preset="paper-cvpr", batch_size=2, stop_at_step=1)
    trainer(config, run=True)
    resumed, logs = trainer(TrainConfig(out_dir=config.out_dir, resume=True, device="cpu", progress=False,
                                        stop_at_step=2), run=True)
    assert any(line.startswith("resuming") for line in logs)
    assert (resumed.cfg.preset, resumed.cfg.batch_size, resumed.cfg.geometry) == ("paper-cvpr", 2, "caffe")
    check_optimizer(resumed, resolve_preset("paper-cvpr", "alexnet-fcn32s"))
    assert resumed.step == 2 and not any(p.requires_grad for p in upsamplings(resumed.parts.model)[0])


def test_a_study_file_applies_a_preset_to_every_variant(tmp_path, demo_data):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "backbones": ["alexnet"], "heads": ["fcn32s", "fcn16s"], "out": str(tmp_path / "s"), "staged": True,
        "train": {**TINY, "scale": [1.0, 1.0], "data": str(demo_data), "preset": "paper-heavy", "batch_size": 4}}))
    rows = run_study(Study.from_yaml(spec), progress=False)
    assert [r["variant"] for r in rows] == ["alexnet-fcn32s-staged", "alexnet-fcn16s-staged"]
    for row, lr in zip(rows, (1e-10, 1e-12)):
        config = json.loads((tmp_path / "s" / row["variant"] / "seed-0" / "config.json").read_text())
        assert (config["preset"], config["batch_size"], config["loss_reduction"], config["momentum"], config["lr"],
                config["geometry"]) == ("paper-heavy", 4, "sum", 0.99, lr, "caffe")
        settings = json.loads((tmp_path / "s" / row["variant"] / "seed-0" / "settings.json").read_text())
        assert (settings["momentum"], settings["lr"]) == (0.99, lr)  # the lr is each net's own
    assert config["init_from"].endswith("alexnet-fcn32s-staged/seed-0/last.pt")  # staged: 16s from the 32s


def test_a_study_whose_preset_lacks_a_heads_lr_stops_before_training(tmp_path, monkeypatch, capsys):
    import segzoo.train

    monkeypatch.setattr(segzoo.train, "train", lambda *a, **k: pytest.fail("nothing may train"))
    study = Study(backbones=["alexnet"], heads=["fcn32s", "fcn4s"], out=str(tmp_path / "s"),
                  train={"preset": "paper-cvpr"})
    with pytest.raises(SegzooError, match="not for 'alexnet-fcn4s'"):
        run_study(study, progress=False)
    assert main(["ablate", "--backbones", "alexnet", "--heads", "fcn32s,fcn4s", "--preset", "paper-cvpr", "--out",
                 str(tmp_path / "cli")]) == 2  # segzoo ablate --recipe: the same study
    assert "not for 'alexnet-fcn4s'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "cli").exists()


def test_the_help_and_docs_say_what_a_preset_sets(capsys):
    from pathlib import Path

    from segzoo_plugins.fcn import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset NAME train with a registered training preset" in text
    assert all(name in text for name in PRESETS)
    assert "paper: the FCN solver's optimizer alone" in text  # --optimizer paper is not a preset
    doc = (Path(__file__).parents[1] / "docs" / "paper.md").read_text()
    fields = set().union(*(set(p.settings) | set(p.head_kwargs) for p in PRESETS.values()))
    assert all(f"`{f}`" in doc for f in fields) and "What remains" not in doc
