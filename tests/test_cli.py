"""The segzoo command as a user runs it: exit codes, messages, and files."""

import torch

import segzoo
from segzoo.cli import main
from tests.conftest import run_cli


def test_build_prints_the_summary_and_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "net.pt"
    r = run_cli("build", "alexnet-fcn8s", "--input", "3x67x45", "--num-classes", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for text in ("parameters", "trainable", "32 + 16 + 8", "1 x 3 x 67 x 45", "1 x 4 x 67 x 45", "GFLOPs"):
        assert text in r.stdout
    model = segzoo.load_model(out)
    assert model.num_classes == 4 and model.recipe.name == "alexnet-fcn8s"
    assert model(torch.randn(1, 3, 67, 45)).shape == (1, 4, 67, 45)


def test_unknown_model_exits_2_with_suggestions_and_no_traceback():
    r = run_cli("build", "vgg16-fcn9s")
    assert r.returncode == 2
    assert "Did you mean: vgg16-fcn8s" in r.stderr and "Traceback" not in r.stderr


def test_bad_input_size_exits_2():
    r = run_cli("build", "alexnet-fcn32s", "--input", "huge")
    assert r.returncode == 2 and "CxHxW" in r.stderr


def test_list_names_every_part_and_its_distribution():
    r = run_cli("list")
    assert r.returncode == 0
    for text in ("vgg16", "alexnet", "timm-resnet18", "fcn4s", "vgg16-fcn8s", "segzoo 0.1.0", "recipes"):
        assert text in r.stdout
    r = run_cli("list", "alexnet-*")
    assert r.stdout.split() == ["alexnet-fcn16s", "alexnet-fcn32s", "alexnet-fcn4s", "alexnet-fcn8s",
                                "alexnet-fcn8s-atonce"]


def test_build_takes_backbone_and_head_options(capsys):
    assert main(["build", "alexnet-fcn32s", "--input", "3x64x64", "--backbone-opt", "fc_channels=24",
                 "--head-opt", "learnable_upsampling=false"]) == 0
    out = capsys.readouterr().out
    alexnet = segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"fc_channels": 24},
                                  head_kwargs={"learnable_upsampling": False})
    trainable = sum(p.numel() for p in alexnet.parameters() if p.requires_grad)
    assert f"{trainable:,} trainable" in out
    assert main(["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels"]) == 2
    assert "--backbone-opt 'fc_channels' must be KEY=VALUE" in capsys.readouterr().err
