"""examples/segzoo-plugin-example, pip-installed (editable) and driven through the real entry-point path.

The install's ``.pth`` file is only read when Python starts, so everything that should see the plugin
runs in a fresh ``python -m segzoo`` process. The module installs the example once and uninstalls it
at the end. While it is installed every process of this environment sees its entry point, so the module is
marked slow: ``make test-slow`` runs one test at a time, where ``make test``'s parallel workers would list the
half-installed plugin as failed in other tests (``listed["failed_plugins"] == []`` failed in one fresh-clone run).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import write_dist

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "segzoo-plugin-example"
DIST = "segzoo-plugin-example"
pytestmark = pytest.mark.slow  # it changes the environment every test runs in: never beside other tests


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def builds_in_place() -> bool:
    """Can this environment build an editable wheel without fetching setuptools (fast, offline)?"""
    try:
        version = tuple(int(v) for v in metadata.version("setuptools").split(".")[:2])
    except metadata.PackageNotFoundError:
        return False
    try:
        metadata.version("wheel")
        return True
    except metadata.PackageNotFoundError:
        return version >= (70, 1)  # bdist_wheel moved into setuptools in 70.1


@pytest.fixture(scope="module")
def installed():
    """``pip install -e`` the example for this module only (left alone if it was installed before)."""
    try:
        metadata.distribution(DIST)
        yield
        return
    except metadata.PackageNotFoundError:
        pass
    isolation = ["--no-build-isolation"] if builds_in_place() else []
    run("-m", "pip", "install", "-q", "--no-deps", *isolation, "-e", str(EXAMPLE))
    try:
        yield
    finally:
        run("-m", "pip", "uninstall", "-q", "-y", DIST)


# One fresh process runs every command (a process start costs seconds): the CLI's main() in turn, and prints
# {key: [exit code, stdout, stderr]} as JSON.
DRIVER = """
import contextlib, io, json, sys
from segzoo.cli import main

results = {}
for key, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        results[key] = [main(argv), out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""
COMMANDS = {
    "list": ["list"],
    "plugin-backbone": ["build", "tinyres-fcn8s", "--num-classes", "5", "--input", "3x65x47"],
    "plugin-head": ["build", "timm-resnet18-fcn8s-cat", "--input", "64"],
    "check": ["check-plugin", DIST],
}


def training(data: Path, run: Path) -> dict[str, list[str]]:
    """A short run of the example's recipe through segzoo's trainer (``segzoo train``), then ``segzoo eval``."""
    return {
        "train": ["train", "--model", "tinyres-fcn8s-cat", "--data", str(data), "--epochs", "1", "--input-size", "32",
                  "--batch-size", "4", "--scale", "1,1", "--backbone-opt", "width=8", "--device", "cpu",
                  "--no-progress", "--out", str(run)],
        "eval": ["eval", "--checkpoint", str(run / "last.pt"), "--data", str(data), "--device", "cpu"],
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("example-run") / "run"


@pytest.fixture(scope="module")
def driven(installed, demo_data, run_dir) -> dict:
    commands = {**COMMANDS, **training(demo_data, run_dir)}
    results = json.loads(run("-c", DRIVER, json.dumps(commands)).stdout.splitlines()[-1])
    for key in commands:
        assert results[key][0] == 0, results[key]
    return results


def test_list_shows_the_plugin_with_its_distribution_and_version(driven):
    out = driven["list"][1]
    for name in ("tinyres", "fcn8s-cat", "tinyres-fcn8s-cat"):
        assert re.search(rf"^{name}\s+example\s+{DIST} 0\.1\.0\s", out, flags=re.M), out
    assert "failed" not in out


def test_build_composes_its_parts_with_the_builtin_ones_both_ways(driven):
    out = driven["plugin-backbone"][1]
    assert re.search(rf"backbone\s+tinyres\s+\(plugin example, {DIST} 0\.1\.0\)", out), out
    assert re.search(r"head\s+fcn8s\s+\(plugin fcn, segzoo 0\.1\.0\)", out)
    assert re.search(r"output\s+1 x 5 x 65 x 47", out)
    out = driven["plugin-head"][1]
    assert re.search(r"backbone\s+timm-resnet18\s+\(plugin timm, segzoo 0\.1\.0\)", out), out
    assert re.search(rf"head\s+fcn8s-cat\s+\(plugin example, {DIST} 0\.1\.0\)", out)
    assert re.search(r"output\s+1 x 21 x 64 x 64", out)


def test_check_plugin_passes_every_part_of_the_example(driven):
    out = driven["check"][1]
    rows = [line for line in out.splitlines() if re.match(r"(plugin|backbone|head|recipe)\s", line)]
    assert len(rows) == 17 and all("  pass  " in r for r in rows), out
    assert {r.split()[1] for r in rows} == {"example", "tinyres", "fcn8s-cat", "tinyres-fcn8s-cat"}
    assert "17 passed, 0 failed" in out  # 15 + the batch-1 training step of the backbone and the head


def test_a_short_training_run_goes_through_segzoos_trainer_and_eval(driven, run_dir, demo_data):
    """A plugin's recipe trains like a built-in one: ``segzoo train`` writes its checkpoints and metrics, and
    ``segzoo eval`` rebuilds the plugin's model from last.pt (its recipe names the plugin's parts)."""
    assert {"last.pt", "best.pt", "metrics.jsonl", "config.json"} <= {p.name for p in run_dir.iterdir()}
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and math.isfinite(record["train_loss"]) and record["train_loss"] > 0, record
    assert "final validation metrics (epoch 1)" in driven["train"][1]
    report = json.loads((run_dir / "eval-val.json").read_text())
    assert report["model"] == "tinyres-fcn8s-cat" and report["data"] == str(demo_data)
    assert 0 <= report["mean_iu"] <= 1 and report["pixels"] > 0
    assert "tinyres-fcn8s-cat on" in driven["eval"][1] and "mean IU" in driven["eval"][1]


def test_an_editable_install_plus_a_copy_on_the_path_registers_once(installed, tmp_path):
    source = (EXAMPLE / "segzoo_plugin_example.py").read_text()
    copy = write_dist(tmp_path, DIST, {"segzoo_plugin_example": source}, {"example": "segzoo_plugin_example"},
                      version="0.1.0")
    out = run("-m", "segzoo", "plugins", env={"PYTHONPATH": str(copy)}).stdout
    rows = [line for line in out.splitlines() if DIST in line]
    assert len(rows) == 1 and re.search(rf"example\s+{DIST} 0\.1\.0\s+loaded\s+3\b", rows[0]), out
    assert " failed" not in out.split("\n\n")[0]
