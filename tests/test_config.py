"""Config files: ``segzoo train --config run.yaml`` (TrainConfig field names, flags win) and ``--print-config``."""

from __future__ import annotations

import pytest
import yaml

from segzoo.cli import main
from segzoo.core.errors import SegzooError
from segzoo.train import TrainConfig
from segzoo.train.config import config_yaml, load_config


def write(path, text: str):
    path.write_text(text)
    return path


def test_load_config_returns_only_the_keys_given_and_checks_them(tmp_path):
    path = write(tmp_path / "run.yaml", "epochs: 3\nscale: [1, 1]\nbackbone_kwargs: {fc_channels: 32}\n")
    assert load_config(path) == {"epochs": 3, "scale": [1, 1], "backbone_kwargs": {"fc_channels": 32}}
    study_section = write(tmp_path / "study.yaml", "train: {epochs: 2}\n")  # a study's train: section reads too
    assert load_config(study_section) == {"epochs": 2}
    with pytest.raises(SegzooError, match=r"bad\.yaml: unknown train setting 'batchsize'\. Did you mean: batch_size"):
        load_config(write(tmp_path / "bad.yaml", "batchsize: 4\n"))
    with pytest.raises(SegzooError, match="must be a mapping of training settings"):
        load_config(write(tmp_path / "list.yaml", "- epochs\n"))
    with pytest.raises(SegzooError, match="not valid YAML at line 2"):
        load_config(write(tmp_path / "broken.yaml", "epochs: 2\n  lr: [\n"))
    with pytest.raises(SegzooError, match="config file .*missing.yaml does not exist; check the path"):
        load_config(tmp_path / "missing.yaml")


def test_printed_config_reads_back_as_the_same_config():
    cfg = TrainConfig(model="alexnet-fcn32s", scale=(0.5, 1.5), class_weights="auto", backbone_kwargs={"a": 1})
    assert TrainConfig.from_dict(yaml.safe_load(config_yaml(cfg))) == cfg


def test_cli_config_file_with_flags_winning_and_print_config(tmp_path, demo_data, capsys):
    run = tmp_path / "run"
    cfg = write(tmp_path / "run.yaml", yaml.safe_dump({
        "model": "alexnet-fcn32s", "data": str(demo_data), "epochs": 5, "batch_size": 2, "lr": 0.01,
        "backbone_kwargs": {"fc_channels": 32}, "head_kwargs": {"learnable_upsampling": False}, "flip": False}))
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--head-opt", "zero_init_scores=true",
                 "--out", str(run), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["model"], printed["epochs"], printed["batch_size"], printed["lr"]) == ("alexnet-fcn32s", 2, 2, 0.01)
    assert printed["head_kwargs"] == {"learnable_upsampling": False, "zero_init_scores": True}  # merged, flag wins
    assert printed["backbone_kwargs"] == {"fc_channels": 32} and printed["flip"] is False
    assert printed["optimizer"] == "adamw" and printed["loss_reduction"] == "mean"  # resolved
    assert not run.exists()  # --print-config trains nothing
    # the printed file is itself a config: it runs as printed
    again = write(tmp_path / "printed.yaml", yaml.safe_dump({**printed, "epochs": 1, "input_size": 64,
                                                              "scale": [1, 1], "progress": False, "device": "cpu"}))
    assert main(["train", "--config", str(again)]) == 0
    assert (run / "last.pt").is_file()
    stored = yaml.safe_load((run / "config.json").read_text())
    assert stored["batch_size"] == 2 and stored["epochs"] == 1


def test_cli_config_errors_are_one_line(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "epochz: 3\n")
    assert main(["train", "--config", str(bad), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown train setting 'epochz'" in err and "epochs" in err
