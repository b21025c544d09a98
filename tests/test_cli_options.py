"""segzoo/cli/_options.py: ``--json FILE|-`` as every reporting command shares it (one implementation), and the
refusals that keep it from replacing a file segzoo did not write."""

from __future__ import annotations

import json

import pytest

import segzoo
from segzoo.cli import main
from tests.conftest import run_cli

SMALL = ["--input", "3x64x64", "--backbone-opt", "fc_channels=8"]
PLUGIN = '''
import torch
from torch import nn
from segzoo import Backbone, FeatureInfo, hookimpl


class TinyBackbone(Backbone):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=32, padding=1)
        self.feature_info = [FeatureInfo(32, 4)]

    def forward(self, x):
        return {32: torch.relu(self.conv(x))}


def tiny(weights=None):
    """One conv at stride 32."""
    return TinyBackbone()


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("jsontiny", tiny)
'''


def stdout_json(capsys, argv: list[str], code: int = 0) -> tuple[dict, str]:
    """Run the CLI with ``--json -``: standard output must be exactly one JSON document; the text goes to stderr."""
    assert main([*argv, "--json", "-"]) == code
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_json_to_stdout_on_list_plugins_and_build(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed, text = stdout_json(capsys, ["list"])
    assert listed["segzoo"] == segzoo.__version__ and "Compose any backbone" in text
    assert {"vgg16", "alexnet"} <= {b["name"] for b in listed["backbones"]}
    fcn8s = next(h for h in listed["heads"] if h["name"] == "fcn8s")
    assert fcn8s["strides"] == [32, 16, 8] and fcn8s["plugin"] == "fcn"
    assert {"vgg16-fcn8s"} <= {r["name"] for r in listed["recipes"]} and listed["failed_plugins"] == []
    models, _ = stdout_json(capsys, ["list", "*fcn8s"])
    assert "vgg16-fcn8s" in models["models"] and all(m.endswith("fcn8s") for m in models["models"])
    plugins, text = stdout_json(capsys, ["plugins"])
    assert {p["plugin"] for p in plugins["plugins"]} >= {"vgg16", "fcn"} and "loaded" in text
    assert plugins["counts"]["loaded"] == sum(p["status"] == "loaded" for p in plugins["plugins"])
    built, text = stdout_json(capsys, ["build", "alexnet-fcn32s", "--num-classes", "3", *SMALL])
    assert built["model"] == "alexnet-fcn32s" and built["output_shape"] == [1, 3, 64, 64] and "GFLOPs" in text
    assert built["parameters"] >= built["trainable"] > 0 and built["saved"] is None
    assert not (tmp_path / "-").exists()  # the old bug: a file named '-'


def test_json_to_stdout_on_check_plugin_and_bench(capsys, fake_dist, monkeypatch):
    fake_dist("segzoo-jsontiny", {"szjson_tiny": PLUGIN}, {"jsontiny": "szjson_tiny"})
    monkeypatch.setattr(segzoo.api, "_REGISTRY", None)  # load the plugins again, this one included
    checked, text = stdout_json(capsys, ["check-plugin", "segzoo-jsontiny"])
    assert checked["failed"] == 0 and checked["passed"] == len(checked["checks"]) > 1 and "0 failed" in text
    assert {c["name"] for c in checked["checks"]} >= {"jsontiny"} and all(c["passed"] for c in checked["checks"])
    timed, text = stdout_json(capsys, ["bench", "alexnet-fcn32s", "--input", "3x32x32", "--iters", "1",
                                       "--warmup", "1", "--no-peak"])
    assert timed["model"] == "alexnet-fcn32s" and timed["images_per_s"] > 0 and "images/s" in text


def test_json_to_stdout_on_eval_writes_no_file_beside_the_checkpoint(tiny_run, demo_data, capsys):
    metrics, text = stdout_json(capsys, ["eval", "--checkpoint", str(tiny_run / "best.pt"), "--data",
                                         str(demo_data), "--split", "val"])
    assert 0 <= metrics["mean_iu"] <= 1 and metrics["split"] == "val" and "mean IU" in text.replace("mean_iu", "")
    assert "wrote" not in text


def test_an_existing_json_file_is_refused_unless_forced(tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text("precious")
    for argv in (["list"], ["plugins"], ["build", "alexnet-fcn32s", *SMALL]):
        assert main([*argv, "--json", str(mine)]) == 2
        err = capsys.readouterr().err
        assert "mine.json exists; segzoo does not replace a file it did not just write: pass --force" in err
        assert "Traceback" not in err
        assert mine.read_text() == "precious"
    assert main(["plugins", "--json", str(mine), "--force"]) == 0
    assert "plugins" in json.loads(mine.read_text())
    fresh = tmp_path / "sub" / "new.json"
    assert main(["list", "--json", str(fresh)]) == 0 and "recipes" in json.loads(fresh.read_text())


def test_json_never_replaces_an_input_or_another_output_even_when_forced(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["build", "alexnet-fcn32s", "--num-classes", "3", *SMALL, "--out", str(weights)]) == 0
    before = weights.read_bytes()
    capsys.readouterr()
    for argv in (["build", "alexnet-fcn32s", "--num-classes", "3", *SMALL, "--weights", str(weights)],
                 ["bench", str(weights), "--input", "3x32x32"]):
        assert main([*argv, "--json", str(weights), "--force"]) == 2
        err = capsys.readouterr().err
        assert f"--json {weights} is one of this command's inputs" in err, err
    out = tmp_path / "x.pt"
    assert main(["build", "alexnet-fcn32s", *SMALL, "--out", str(out), "--json", str(out), "--force"]) == 2
    assert "one of this command's outputs" in capsys.readouterr().err and not out.exists()
    assert weights.read_bytes() == before
    assert main(["build", "alexnet-fcn32s", *SMALL, "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"segzoo {segzoo.__version__}"
    from importlib.metadata import version

    assert segzoo.__version__ == version("segzoo")  # one source: the metadata is built from segzoo/_version.py


def test_shell_completion_through_argcomplete(tmp_path):
    pytest.importorskip("argcomplete", reason="the completion extra (pip install 'segzoo[completion]') is absent")
    answer = tmp_path / "completions"
    env = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": "segzoo pl", "COMP_POINT": "9",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    r = run_cli(env=env)
    assert r.returncode == 0, r.stderr
    assert [c.strip() for c in answer.read_text().split("\n")] == ["plugins"]
