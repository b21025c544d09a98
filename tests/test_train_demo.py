"""segzoo.train.demo: the settings a run or study on the demo dataset gets, and which backbones take an option."""

from __future__ import annotations

from segzoo.train.demo import (
    DEMO_BACKBONE_OPTIONS,
    DEMO_SETTINGS,
    DEMO_STUDY_SETTINGS,
    demo_defaults,
    describe,
    options_for,
)


def test_an_option_goes_only_to_the_backbones_whose_factory_names_it():
    # timm's factories take **kwargs and hand them to timm.create_model, which fails on fc_channels
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
    # the demo run trains at the rate the demo study measured (FCN-8s 75.1 mean IU, every class found); at 3e-4 the
    # run ended at 45.1 with a class at 0, and a study's coarse heads never left the all-background start
    study = demo_defaults({}, ["vgg16"], settings=DEMO_STUDY_SETTINGS)
    assert study["lr"] == demo_defaults({}, ["vgg16"])["lr"] == 1e-3
    assert describe({"epochs": 8, "scale": (0.75, 1.25), "backbone_kwargs": {"fc_channels": 512}}) == (
        "--epochs 8 --scale 0.75,1.25 --fc-channels 512")
