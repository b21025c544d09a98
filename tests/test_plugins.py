"""The plugin loader against broken third-party plugins, each a tiny distribution of its own.

Every failure mode must name its distribution, leave the other plugins loaded, and keep
``segzoo list`` and ``segzoo plugins`` working.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import segzoo.api
from segzoo.api import create_model
from segzoo.cli import main
from segzoo.core import hookspecs
from segzoo.core.errors import PluginError
from segzoo.studies.summary import summarize
from segzoo.zoo.check import assert_plugin_passes
from segzoo.zoo.loader import load_plugins
from tests.conftest import write_dist

ROOT = Path(__file__).resolve().parents[1]

# A valid backbone: strided 3x3 convs with 8 channels at STRIDES (maps of ceil(H/s)).
# `LIE` (stride -> channels) and `CLAIM` (the strides, in order) change what feature_info declares and
# what forward() keys its maps by, without changing the maps themselves.
TINY_BACKBONE = '''
import torch
from torch import nn
from segzoo import Backbone, FeatureInfo, hookimpl

STRIDES, LIE, CLAIM = {strides!r}, {lie!r}, {claim!r}


class Tiny(Backbone):
    def __init__(self):
        super().__init__()
        steps = [b // a for a, b in zip((1, *STRIDES), STRIDES)]
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=s, padding=1)
                                    for i, s in enumerate(steps)])
        self.feature_info = [FeatureInfo(s, LIE.get(s, 8)) for s in CLAIM]

    def forward(self, x):
        out = {{}}
        for s, conv in zip(CLAIM, self.convs):
            x = torch.relu(conv(x))
            out[s] = x
        return out


def make(weights=None):
    """A test backbone of a few strided convs."""
    return Tiny()


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone({name!r}, make)
'''


def backbone_plugin(name: str, lie: dict[int, int] | None = None, strides=(4, 8, 16, 32), claim=None) -> str:
    """Source of a plugin module registering the backbone ``name``; ``lie`` maps stride -> declared channels,
    ``claim`` lists the strides it declares (and keys its maps by) in place of the ``strides`` it has."""
    return TINY_BACKBONE.format(name=name, lie=lie or {}, strides=tuple(strides), claim=tuple(claim or strides))


RAISES = '''
from segzoo import hookimpl

@hookimpl
def segzoo_register_backbones(registrar):
    raise RuntimeError("boom in the hook")
'''
BAD_SIGNATURE = '''
from segzoo import hookimpl

@hookimpl
def segzoo_register_heads(registrar, options):
    pass
'''
UNKNOWN_HOOK = '''
from segzoo import hookimpl

@hookimpl
def segzoo_register_backbone(registrar):  # singular: not a segzoo hook
    pass
'''
CLASH_B = backbone_plugin("fxdup") + '''

@hookimpl
def segzoo_register_heads(registrar):
    registrar.head("fxonly-b", lambda feature_info, num_classes: None, strides=(32,))
'''

FAMILY = '''
from segzoo import hookimpl

def make(variant, weights=None):
    """Any vgg-something (it would take over segzoo's vgg16)."""
    raise RuntimeError("never built")

@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("vgg*", make)
'''

# dist -> (module, source); each is exposed under the entry-point name of its last word.
FIXTURES = {
    "segzoo-good": ("szfx_good", backbone_plugin("fxgood")),
    "segzoo-importerror": ("szfx_importerror", "import szfx_no_such_module\n"),
    "segzoo-raises": ("szfx_raises", RAISES),
    "segzoo-badsig": ("szfx_badsig", BAD_SIGNATURE),
    "segzoo-unknownhook": ("szfx_unknownhook", UNKNOWN_HOOK),
    "segzoo-clash-builtin": ("szfx_clash_builtin", backbone_plugin("vgg16")),
    "segzoo-clash-a": ("szfx_clash_a", backbone_plugin("fxdup")),
    "segzoo-clash-b": ("szfx_clash_b", CLASH_B),
    "segzoo-clash-infamily": ("szfx_clash_infamily", backbone_plugin("timm-resnet34")),  # inside timm-*
    "segzoo-clash-family": ("szfx_clash_family", FAMILY),  # vgg* covers vgg16
    "segzoo-liar": ("szfx_liar", backbone_plugin("fxliar", lie={16: 256})),
    # declares strides 4, 8, 16, 32 but its last two convs step by 1 and 2: maps at strides 4, 8, 8, 16
    "segzoo-stridelie": ("szfx_stridelie", backbone_plugin("fxstridelie", strides=(4, 8, 8, 16),
                                                           claim=(4, 8, 16, 32))),
}
FAILURES = {  # dist -> what its error must say
    "segzoo-importerror": "No module named 'szfx_no_such_module'",
    "segzoo-raises": "RuntimeError: boom in the hook",
    "segzoo-badsig": "options",
    "segzoo-unknownhook": "unknown hook(s) ['segzoo_register_backbone']",
    "segzoo-clash-builtin": "backbone name 'vgg16' from plugin 'builtin' (segzoo-clash-builtin 0.1) clashes with "
                            "the one from plugin 'vgg16' (segzoo 0.1.0)",
    "segzoo-clash-b": "clashes with the one from plugin 'a' (segzoo-clash-a 0.1)",
    "segzoo-clash-infamily": "backbone name 'timm-resnet34' from plugin 'infamily' (segzoo-clash-infamily 0.1) "
                             "clashes with the family 'timm-*' from plugin 'timm' (segzoo 0.1.0), which already "
                             "resolves that name",
    "segzoo-clash-family": "backbone family 'vgg*' from plugin 'family' (segzoo-clash-family 0.1) clashes with the "
                           "name 'vgg16' from plugin 'vgg16' (segzoo 0.1.0), which it would take over",
}


def ep_name(dist: str) -> str:
    return dist.rsplit("-", 1)[-1]


def write_fixtures(root: Path, dists=FIXTURES) -> Path:
    for dist, (module, source) in dists.items():
        write_dist(root, dist, {module: source}, {ep_name(dist): module})
    importlib.invalidate_caches()
    return root


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """Put every fixture distribution on sys.path; forget their modules and the shared registry afterwards."""
    root = write_fixtures(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(segzoo.api, "_REGISTRY", None)
    for var in ("SEGZOO_DISABLE_PLUGINS", "SEGZOO_DISABLE_PLUGIN_AUTOLOAD", "SEGZOO_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    yield root
    for name in [m for m in sys.modules if m.startswith("szfx_")]:
        del sys.modules[name]


def records(registry) -> dict:
    return {r.dist: r for r in registry.plugins}


def test_each_failure_is_recorded_with_its_distribution_and_the_rest_still_load(plugin_path):
    registry = load_plugins()
    by_dist = records(registry)
    for dist, expected in FAILURES.items():
        r = by_dist[dist]
        assert r.status == "failed", (dist, r)
        assert expected in r.error, (dist, r.error)
        assert "\n" not in r.error
        assert dist in r.message() and expected in r.message()
    loaded = {d for d, r in by_dist.items() if r.status == "loaded" and (d in FIXTURES or d == "segzoo")}
    assert loaded == {"segzoo", "segzoo-good", "segzoo-clash-a", "segzoo-liar", "segzoo-stridelie"}
    assert {"fxgood", "fxdup", "fxliar", "fxstridelie", "vgg16", "alexnet"} <= set(registry.names("backbone"))
    assert registry.entries["backbone"]["vgg16"].dist.startswith("segzoo 0.1.0")
    assert registry.entries["backbone"]["fxdup"].dist == "segzoo-clash-a 0.1"
    assert "fxonly-b" not in registry.names("head")  # a failed plugin registers nothing, not half
    assert by_dist["segzoo-good"].registered == 1
    assert "vgg*" not in registry.names("backbone") and registry.backbone_factory("vgg16")[1].dist == "segzoo 0.1.0"


def test_a_name_inside_the_builtin_timm_family_does_not_take_it_over(plugin_path, capsys):
    assert load_plugins().backbone_factory("timm-resnet34")[1].source == "plugin 'timm' (segzoo 0.1.0)"
    assert main(["build", "timm-resnet34-fcn32s", "--num-classes", "3", "--input", "64"]) == 0
    assert re.search(r"backbone\s+timm-resnet34\s+\(plugin timm, segzoo 0\.1\.0\)", capsys.readouterr().out)


def test_a_plugin_backbone_composes_with_builtin_heads(plugin_path):
    model = create_model("fxgood-fcn8s", num_classes=3, registry=load_plugins())
    assert model.recipe.backbone_dist == "segzoo-good 0.1"
    assert model(torch.randn(1, 3, 65, 47)).shape == (1, 3, 65, 47)


def test_a_backbone_whose_declared_channels_lie_is_blamed_by_distribution(plugin_path):
    model = create_model("fxliar-fcn8s", num_classes=3, registry=load_plugins())  # building does not run it
    for run in (lambda: model(torch.randn(1, 3, 64, 64)), lambda: summarize(model, (1, 3, 64, 64))):
        with pytest.raises(PluginError, match=r"fxliar.*segzoo-liar 0\.1.*256 channels at stride 16 but returned 8"):
            run()


STRIDE_LIE = (r"backbone 'fxstridelie' from plugin 'stridelie' \(segzoo-stridelie 0\.1\) declares strides "
              r"\[4, 8, 16, 32\] but for a 64x64 input returned maps of 16x16, 8x8, 8x8, 4x4, i\.e\. strides "
              r"about \[4, 8, 8, 16\] \(stride 16 gives about 4x4; stride 32 gives about 2x2\); its feature_info "
              r"must match its forward\(\).*'segzoo check-plugin segzoo-stridelie'")


def test_a_backbone_whose_declared_strides_lie_is_blamed_by_distribution(plugin_path):
    """Its maps have the declared channels and keys, but a size no declared stride gives: the heads would
    crop or pad them to fit and train on misaligned features without a word."""
    model = create_model("fxstridelie-fcn8s", num_classes=3, registry=load_plugins())
    for run in (lambda: model(torch.randn(1, 3, 64, 64)), lambda: summarize(model, (1, 3, 64, 64))):
        with pytest.raises(PluginError, match=STRIDE_LIE):
            run()


def test_cli_build_stops_a_backbone_whose_strides_lie(plugin_path, capsys):
    assert main(["build", "fxstridelie-fcn8s", "--input", "3x64x64"]) == 2
    err = capsys.readouterr().err
    assert re.search(STRIDE_LIE, err) and len(err.splitlines()) == 1, err
    assert main(["check-plugin", "segzoo-stridelie"]) == 1  # which checks the maps at several sizes
    out = capsys.readouterr().out
    assert re.search(r"fxstridelie\s+feature strides and channels\s+FAIL\s+declares strides \[4, 8, 16, 32\] but for "
                     r"a 33x47 input returned maps of 9x12, 5x6, 5x6, 3x3", out), out


def test_strict_mode_raises_on_the_first_failure(plugin_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="segzoo-badsig"):
        load_plugins()


def test_plugins_are_disabled_by_name_by_distribution_or_all_external(plugin_path, monkeypatch):
    monkeypatch.setenv("SEGZOO_DISABLE_PLUGINS", "raises, segzoo-importerror")
    by_dist = records(load_plugins(disabled={"good"}))
    assert [by_dist[d].status for d in ("segzoo-raises", "segzoo-importerror", "segzoo-good")] == ["disabled"] * 3
    assert "szfx_importerror" not in sys.modules  # disabled means never imported
    monkeypatch.setenv("SEGZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_plugins()
    assert {r.status for r in registry.plugins if r.dist != "segzoo"} == {"disabled"}
    assert {r.status for r in registry.plugins if r.dist == "segzoo"} == {"loaded"}
    assert "fxgood" not in registry.names("backbone")


def test_the_same_distribution_twice_on_the_path_registers_once(tmp_path, monkeypatch, plugin_path):
    good = {"segzoo-good": FIXTURES["segzoo-good"]}
    monkeypatch.syspath_prepend(str(write_fixtures(tmp_path / "copy", good)))  # e.g. a copy beside an install
    registry = load_plugins()
    assert [r.status for r in registry.plugins if r.dist == "segzoo-good"] == ["loaded"]
    assert registry.entries["backbone"]["fxgood"].dist == "segzoo-good 0.1"
    assert not [r for r in registry.plugins if r.dist == "segzoo" and r.status != "loaded"]


def test_cli_plugins_and_list_report_failures_and_keep_working(plugin_path, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for dist, expected in FAILURES.items():
        line = next(x for x in out.splitlines() if dist + " " in x)
        assert "failed" in line and expected in line
    assert re.search(r"good\s+segzoo-good 0\.1\s+loaded\s+1", out)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"fxgood\s+good\s+segzoo-good 0\.1", out)
    assert "segzoo-raises" in out and "segzoo plugins" in out


def test_cli_flags_disable_plugins(plugin_path, capsys):
    assert main(["-p", "no:good", "-p", "no:segzoo-liar", "plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"good\s+segzoo-good 0\.1\s+disabled", out)
    assert re.search(r"liar\s+segzoo-liar 0\.1\s+disabled", out)
    assert main(["--no-external-plugins", "list"]) == 0
    out = capsys.readouterr().out
    assert "fxgood" not in out and "vgg16" in out and "failed" not in out
    assert main(["-p", "good", "list"]) == 2
    assert "-p takes no:NAME" in capsys.readouterr().err


def test_cli_build_names_the_distribution_of_a_lying_backbone(plugin_path, capsys):
    assert main(["build", "fxliar-fcn32s", "--input", "64"]) == 2
    err = capsys.readouterr().err
    assert "segzoo-liar 0.1" in err and "feature_info must match" in err and len(err.splitlines()) == 1


def test_cli_unknown_name_mentions_the_plugins_that_failed(plugin_path, capsys):
    assert main(["build", "fxmissing-fcn8s"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'fxmissing-fcn8s'" in err and "8 plugin(s) failed to load" in err
    assert "plugin 'raises' (segzoo-raises 0.1)" in err and len(err.splitlines()) == 1


def test_a_factory_that_crashes_is_blamed_on_its_plugin(fake_dist):
    crash = backbone_plugin("fxcrash").replace("    return Tiny()", "    raise RuntimeError('no GPU here')")
    fake_dist("segzoo-crash", {"szfx_crash": crash}, {"crash": "szfx_crash"})
    importlib.invalidate_caches()
    with pytest.raises(PluginError, match=r"backbone 'fxcrash' from plugin 'crash' \(segzoo-crash 0\.1\) failed to "
                                          r"build: RuntimeError: no GPU here"):
        create_model("fxcrash-fcn8s", registry=load_plugins())


def test_cli_in_a_fresh_process_with_the_environment_controls(plugin_path):
    env = {**os.environ, "PYTHONPATH": str(plugin_path), "SEGZOO_DISABLE_PLUGINS": "good"}
    run = subprocess.run([sys.executable, "-m", "segzoo", "plugins"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert re.search(r"good\s+segzoo-good 0\.1\s+disabled", run.stdout)
    assert re.search(r"raises\s+segzoo-raises 0\.1\s+failed\s+0\s+RuntimeError: boom", run.stdout)
    assert re.search(r"vgg16\s+segzoo 0\.1\.0\s+loaded", run.stdout)


def test_check_plugin_passes_a_good_plugin_and_is_a_pytest_helper(plugin_path, capsys):
    assert main(["check-plugin", "segzoo-good"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"backbone\s+fxgood\s+feature strides and channels\s+pass\s+strides \[4, 8, 16, 32\]", out)
    for check in ("output is N x C x H x W", "gradient reaches every parameter", "minimum input size",
                  "pickle round trip", "state-dict round trip"):
        assert re.search(rf"fxgood\s+{check}\s+pass", out), check
    assert "FAIL" not in out and "0 failed" in out
    assert_plugin_passes("good")  # what a plugin's own test suite calls
    with pytest.raises(AssertionError,
                       match="feature strides and channels: declares 256 channels at stride 16 but returned 8"):
        assert_plugin_passes("segzoo-liar")


def test_check_plugin_fails_a_lying_backbone_and_a_broken_plugin_with_reasons(plugin_path, capsys):
    assert main(["check-plugin", "segzoo-liar"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"fxliar\s+feature strides and channels\s+FAIL\s+declares 256 channels at stride 16 "
                     r"but returned 8", out), out
    assert main(["check-plugin", "raises"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"plugin\s+raises\s+loads\s+FAIL\s+failed: RuntimeError: boom in the hook", out), out
    assert main(["check-plugin", "szfx_nowhere"]) == 2
    assert "no plugin distribution, entry point or importable module named 'szfx_nowhere'" in capsys.readouterr().err


def test_check_plugin_takes_a_module_that_is_not_installed(plugin_path, capsys):
    """...and composes a backbone without strides 8 and 16 with fcn32s instead of fcn8s."""
    (plugin_path / "szfx_bare.py").write_text(backbone_plugin("fxbare", strides=(32,)))  # no dist-info
    importlib.invalidate_caches()
    assert main(["check-plugin", "szfx_bare"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"plugin\s+szfx_bare\s+loads\s+pass\s+<in-process>, 1 name\(s\)$", out, flags=re.M), out
    assert re.search(r"fxbare\s+builds with default options\s+pass\s+as fxbare-fcn32s", out), out
    assert re.search(r"fxbare\s+pickle round trip\s+pass", out)


def test_every_hook_is_documented():
    """As datasette does: a hook spec without a section in docs/plugins.md fails the suite."""
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("segzoo_")]
    assert len(hooks) >= 3
    doc = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^#+ +`?(\w+)\(?", doc, flags=re.M))
    missing = [h for h in hooks if h not in headings]
    assert not missing, f"hooks without a section in docs/plugins.md: {missing}"
    readme = (ROOT / "README.md").read_text()
    assert "docs/plugins.md" in readme


def test_the_plugin_in_the_docs_works_as_written(fake_dist):
    """docs/plugins.md's one-module plugin, installed under its pyproject's names, passes every check."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    module = re.search(r"```python\n# my_segzoo_plugin\.py\n(.*?)```", doc, flags=re.S).group(1)
    assert 'mynet = "my_segzoo_plugin"' in doc and 'name = "my-segzoo-plugin"' in doc
    fake_dist("my-segzoo-plugin", {"my_segzoo_plugin": module}, {"mynet": "my_segzoo_plugin"}, version="0.1.0")
    importlib.invalidate_caches()
    assert_plugin_passes("my-segzoo-plugin")


# A third party's adaptive head: it reads every level of stride 4 or coarser, whatever the backbone has, and
# fuses them by concatenation after upsampling each to the finest one's grid (the "unet-lite" of issue 18).
ADAPTIVE_HEAD = backbone_plugin("fxdeep", strides=(2, 4, 8, 16, 32)) + '''

import torch.nn.functional as F
import segzoo
from segzoo import Head

RULE = segzoo.Strides.every(min=4, levels=2)


class Lite(Head):
    def __init__(self, feature_info, num_classes, width=8):
        super().__init__()
        self.strides, self.num_classes = RULE.select(feature_info), num_classes
        channels = {f.stride: f.channels for f in feature_info}
        self.reduce = nn.ModuleDict({str(s): nn.Conv2d(channels[s], width, 1) for s in self.strides})
        self.score = nn.Conv2d(width * len(self.strides), num_classes, 1)

    def forward(self, features, size):
        fine = features[self.strides[-1]].shape[-2:]
        maps = [F.interpolate(self.reduce[str(s)](features[s]), size=fine, mode="bilinear") for s in self.strides]
        return F.interpolate(self.score(torch.cat(maps, 1)), size=tuple(size), mode="bilinear")


def lite(feature_info, num_classes, width=8):
    """Every level down to stride 4, concatenated."""
    return Lite(feature_info, num_classes, width)


@hookimpl
def segzoo_register_heads(registrar):
    registrar.head("fxlite", lite, strides=RULE)
'''


def test_an_adaptive_third_party_head_composes_on_backbones_with_different_strides(fake_dist, capsys, monkeypatch):
    fake_dist("segzoo-lite", {"szfx_lite": ADAPTIVE_HEAD}, {"lite": "szfx_lite"})
    importlib.invalidate_caches()
    monkeypatch.setattr(segzoo.api, "_REGISTRY", None)  # check-plugin's registry must see the new distribution
    registry = load_plugins()
    reads = {}
    for backbone in ("fxdeep", "alexnet", "vgg16"):  # strides 2-32, 4-32 and 2-32
        model = create_model(f"{backbone}-fxlite", num_classes=3, registry=registry,
                             **({"backbone_kwargs": {"fc_channels": 16}} if backbone != "fxdeep" else {}))
        assert model(torch.randn(1, 3, 65, 47)).shape == (1, 3, 65, 47)
        reads[backbone] = model.head.strides
    assert reads == {"fxdeep": (32, 16, 8, 4), "alexnet": (32, 16, 8, 4), "vgg16": (32, 16, 8, 4)}
    entry = registry.head("fxlite")
    assert entry.reads([segzoo.FeatureInfo(16, 8), segzoo.FeatureInfo(8, 8)]) == (16, 8)
    # the registry checks a backbone against the rule before building, and suggests heads that fit
    too_few = [segzoo.FeatureInfo(32, 8)]
    assert "fxlite" not in registry.fitting_heads(too_few) and "fcn32s" in registry.fitting_heads(too_few)
    assert "fxlite" in registry.fitting_heads([segzoo.FeatureInfo(32, 8), segzoo.FeatureInfo(16, 8)])
    # check-plugin builds it on the levels its rule reads, and on fewer
    assert main(["check-plugin", "segzoo-lite"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert re.search(r"head\s+fxlite\s+output is N x C x H x W\s+pass", out), out
    assert re.search(r"head\s+fxlite\s+adapts to strides \[8, 16, 32\]\s+pass", out), out
    assert re.search(r"head\s+fxlite\s+trains at batch 1\s+pass", out), out


def test_a_head_that_builds_other_strides_than_its_rule_says_is_blamed(fake_dist):
    liar = ADAPTIVE_HEAD.replace("self.strides, self.num_classes = RULE.select(feature_info), num_classes",
                                 "self.strides, self.num_classes = RULE.select(feature_info)[:2], num_classes")
    fake_dist("segzoo-lying-lite", {"szfx_lying_lite": liar}, {"lite": "szfx_lying_lite"})
    importlib.invalidate_caches()
    with pytest.raises(PluginError, match=r"head 'fxlite' from plugin 'lite' \(segzoo-lying-lite 0\.1\) was registered "
                                          r"with strides \[32, 16, 8, 4\] \(every level down to stride 4 \(at least "
                                          r"2\)\) on this backbone but the head it built has strides \[32, 16\]"):
        create_model("fxdeep-fxlite", num_classes=3, registry=load_plugins())


def test_a_backbone_the_rule_does_not_fit_is_refused_before_building(fake_dist):
    fake_dist("segzoo-lite", {"szfx_lite": ADAPTIVE_HEAD}, {"lite": "szfx_lite"})
    fake_dist("segzoo-bare", {"szfx_bare32": backbone_plugin("fxonly32", strides=(32,))}, {"bare": "szfx_bare32"})
    importlib.invalidate_caches()
    with pytest.raises(segzoo.InputError, match=r"head 'fxlite' reads every level down to stride 4 \(at least 2\), "
                                                r"but backbone 'fxonly32' provides \[32\]; pick a head that reads only "
                                                r"those strides: fcn32s"):
        create_model("fxonly32-fxlite", num_classes=3, registry=load_plugins())
