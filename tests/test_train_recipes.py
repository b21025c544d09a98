"""Training as in the paper: ``--recipe paper-heavy`` / ``paper-cvpr`` applied by the trainer, and train
settings that are checked by name (a misspelt key is an error, never silently dropped)."""

from __future__ import annotations

import pytest
import yaml

from segzoo.ablate import Study, run_study
from segzoo.errors import SegzooError, UnknownNameError
from segzoo.train import TrainConfig


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
