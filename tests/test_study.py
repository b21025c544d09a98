"""What a study is: its axes checked before anything runs, the variants and runs it plans."""

from __future__ import annotations

import pytest
import yaml

import segzoo
from segzoo.studies.study import Run, Study, plan, runs


def test_the_default_grid_asks_the_papers_question_and_the_4x_one():
    from segzoo.cli import build_parser
    from segzoo.cli.ablate import build_study

    study = build_study(build_parser()[0].parse_args(["ablate"]))
    assert study.backbones == ["vgg16"] and study.heads == ["fcn32s", "fcn16s", "fcn8s", "fcn4s"]
    assert (study.seeds, study.staged, study.baseline, study.boundary_px) == (1, False, None, 2)


def test_staged_is_an_axis_at_once_and_staged_in_one_study():
    s = Study(backbones=["vgg16", "alexnet"], heads=["fcn8s", "fcn32s", "fcn16s"], staged=[False, True])
    variants = plan(s)
    assert [v.name for v in variants[:6]] == [
        "vgg16-fcn8s", "vgg16-fcn32s", "vgg16-fcn16s",  # at once, in the order given
        "vgg16-fcn32s-staged", "vgg16-fcn16s-staged", "vgg16-fcn8s-staged"]  # staged, coarse to fine
    assert [v.init_from for v in variants[3:6]] == [None, "vgg16-fcn32s-staged", "vgg16-fcn16s-staged"]
    assert all(v.init_from is None and not v.staged for v in variants[:3])
    assert variants[9].name == "alexnet-fcn32s-staged" and variants[9].init_from is None  # each backbone: own chain
    assert [v.name for v in plan(Study(backbones=["vgg16"], heads=["fcn8s", "fcn32s"], staged=True))] == [
        "vgg16-fcn32s-staged", "vgg16-fcn8s-staged"]


def test_runs_go_seed_by_seed_from_the_first_seed():
    s = Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], seeds=3, train={"seed": 5})
    assert [r.folder for r in runs(s)] == ["alexnet-fcn32s/seed-5", "alexnet-fcn8s/seed-5", "alexnet-fcn32s/seed-6",
                                           "alexnet-fcn8s/seed-6", "alexnet-fcn32s/seed-7", "alexnet-fcn8s/seed-7"]
    assert isinstance(runs(s)[0], Run) and runs(s)[0].seed == 5


@pytest.mark.parametrize("change, message", [
    ({"seeds": 0}, "'seeds' must be an integer from 1 to 1000, got 0"),
    ({"seeds": True}, "'seeds' must be an integer from 1 to 1000, got True"),
    ({"seeds": "3"}, "'seeds' must be an integer from 1 to 1000, got '3'"),
    ({"backbones": []}, "'backbones' is empty: nothing to train"),
    ({"heads": []}, "'heads' is empty"),
    ({"heads": "fcn8s"}, "'heads' must be a list of names, got 'fcn8s'"),
    ({"heads": ["fcn8s", "fcn8s"]}, "names \\['fcn8s'\\] twice"),
    ({"staged": "yes"}, "'staged' must be true, false or a list"),
    ({"staged": []}, "'staged' must be true, false or a list"),
    ({"boundary_px": 0}, "'boundary_px' must be an integer from 1 to 1024"),
    ({"baseline": "fcn16s"}, "baseline 'fcn16s' is not in the study; give one of its heads \\(fcn32s, fcn8s\\)"),
    ({"train": [1]}, "'train' must be a mapping"),
    ({"train": {"epochs": 0}}, "--epochs must be an integer from 1 to"),
    ({"train": {"epocs": 2}}, "train: unknown train setting 'epocs'.*epochs"),
    ({"backbones": ["vgg17"]}, "unknown backbone 'vgg17'"),
])
def test_a_bad_study_is_one_error_naming_the_problem(change, message):
    study = Study(**{"backbones": ["alexnet"], "heads": ["fcn32s", "fcn8s"], **change})
    with pytest.raises(segzoo.SegzooError, match=message):
        study.check()


def test_the_baseline_may_be_a_head_or_a_variant():
    Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], baseline="fcn8s").check()
    Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], staged=[False, True],
          baseline="alexnet-fcn8s-staged").check()


def test_a_study_file_is_checked_with_its_name_in_the_message(tmp_path):
    path = tmp_path / "study.yaml"
    for content, message in [({"backbones": ["vgg16"], "heads": ["fcn8s"], "epochs": 3}, "unknown keys \\['epochs'\\]"),
                             ({"backbones": [], "heads": ["fcn8s"]}, "'backbones' is empty"),
                             ({"heads": ["fcn8s"]}, "needs 'backbones'"),
                             ({"backbones": ["vgg16"], "heads": ["fcn8s"], "seeds": 2.5}, "'seeds' must be"),
                             (["vgg16"], "a study file is a mapping")]:
        path.write_text(yaml.safe_dump(content))
        with pytest.raises(segzoo.SegzooError, match=f"{path}: .*{message}" if isinstance(content, dict) else message):
            Study.from_yaml(path)
    path.write_text(yaml.safe_dump({"backbones": ["alexnet"], "heads": ["fcn32s"], "staged": [False, True],
                                    "seeds": 2, "baseline": "fcn32s", "train": {"epochs": 1}}))
    study = Study.from_yaml(path)
    assert study.stagings == [False, True] and study.seeds == 2 and study.to_dict()["train"] == {"epochs": 1}


def test_pixel_fraction_and_weak_axes_pair_each_weak_variant_with_the_same_without():
    s = Study(backbones=["alexnet"], heads=["fcn8s"], pixel_fraction=[0.1, 0.25, 1.0], weak=[False, True], seeds=2)
    variants = plan(s)
    assert [(v.name, v.pixel_fraction, v.weak, v.paired_with) for v in variants] == [
        ("alexnet-fcn8s-px10", 0.1, False, None), ("alexnet-fcn8s-px10-weak", 0.1, True, "alexnet-fcn8s-px10"),
        ("alexnet-fcn8s-px25", 0.25, False, None), ("alexnet-fcn8s-px25-weak", 0.25, True, "alexnet-fcn8s-px25"),
        ("alexnet-fcn8s-px100", 1.0, False, None)]  # at 100% no image is left to label
    assert len(runs(s)) == 10
    staged = plan(Study(backbones=["alexnet"], heads=["fcn32s", "fcn8s"], staged=True, pixel_fraction=0.5,
                        weak=True))
    assert [(v.name, v.init_from) for v in staged] == [
        ("alexnet-fcn32s-staged-px50-weak", None),
        ("alexnet-fcn8s-staged-px50-weak", "alexnet-fcn32s-staged-px50-weak")]
    assert [v.name for v in plan(Study(backbones=["alexnet"], heads=["fcn8s"]))] == ["alexnet-fcn8s"]  # no axis, no tag


@pytest.mark.parametrize("change, message", [
    ({"pixel_fraction": 0}, "'pixel_fraction' must be a finite number > 0 and <= 1, got 0"),
    ({"pixel_fraction": [0.5, 0.5]}, "'pixel_fraction' must be"),
    ({"weak": "yes"}, "'weak' must be true, false or a list"),
    ({"train": {"pixel_fraction": 0.5}}, "'pixel_fraction' is a study axis"),
])
def test_bad_image_label_axes_are_one_error(change, message):
    with pytest.raises(segzoo.SegzooError, match=message):
        Study(**{"backbones": ["alexnet"], "heads": ["fcn8s"], **change}).check()
