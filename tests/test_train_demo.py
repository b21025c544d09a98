"""segzoo.train.demo: the settings a run or study on the demo dataset gets, and which backbones take an option."""

from __future__ import annotations

from segzoo.train.demo import (
    DEMO_BACKBONE_OPTIONS,
    DEMO_SETTINGS,
    DEMO_STUDY_SETTINGS,
    backbone_takes,
    demo_defaults,
    describe,
    options_for,
)


def test_an_option_goes_only_to_the_backbones_whose_factory_names_it():
    assert backbone_takes("vgg16", "fc_channels") and backbone_takes("alexnet", "fc_channels")
    # timm's factories take **kwargs and hand them to timm.create_model, which fails on fc_channels
    assert not backbone_takes("timm-resnet18", "fc_channels")
    assert not backbone_takes("vgg16", "no_such_option")
    assert options_for("timm-resnet18", {"fc_channels": 32}) == ({}, ["fc_channels"])
    assert options_for("vgg16", {"fc_channels": 32, "dropout": 0.1}) == ({"fc_channels": 32, "dropout": 0.1}, [])


def test_demo_defaults_fill_what_is_not_given_and_a_preset_keeps_its_batch_and_lr():
    applied = demo_defaults({}, ["vgg16"])
    assert applied == {**DEMO_SETTINGS, "backbone_kwargs": DEMO_BACKBONE_OPTIONS}
    given = demo_defaults({"epochs": 3, "backbone_kwargs": {"fc_channels": 64}}, ["vgg16"])
    assert "epochs" not in given and "backbone_kwargs" not in given  # what is given wins
    assert set(demo_defaults({}, ["vgg16"], preset="paper-cvpr")) == set(DEMO_SETTINGS) - {"batch_size", "lr"} | {
        "backbone_kwargs"}
    assert "backbone_kwargs" not in demo_defaults({}, ["timm-resnet18"])  # no backbone of the run takes it
    # a study's coarse heads need a higher rate to leave the all-background start within the epochs
    assert demo_defaults({}, ["vgg16"], settings=DEMO_STUDY_SETTINGS)["lr"] == 1e-3 > DEMO_SETTINGS["lr"]
    assert describe({"epochs": 8, "scale": (0.75, 1.25), "backbone_kwargs": {"fc_channels": 512}}) == (
        "--epochs 8 --scale 0.75,1.25 --fc-channels 512")
