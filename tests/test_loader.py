"""Entry-point discovery: built-ins load like any plugin, and a broken plugin is isolated by name."""

import pytest

import segzoo
from segzoo.zoo.loader import load_plugins

GOOD = """
import segzoo
from segzoo.zoo.contract import SyntheticBackbone

def tiny(weights=None):
    return SyntheticBackbone()

@segzoo.hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("tiny", tiny)
"""


def test_builtins_come_through_entry_points():
    reg = load_plugins()
    builtin = {p.name for p in reg.plugins if p.dist == "segzoo" and p.status == "loaded"}
    assert {"vgg16", "alexnet", "timm", "fcn", "recipes"} <= builtin
    assert reg.entries["backbone"]["vgg16"].dist.startswith("segzoo ")


def test_a_third_party_plugin_registers_with_its_distribution(fake_dist):
    fake_dist("tiny-plugin", {"tiny_plugin": GOOD}, {"tiny": "tiny_plugin"}, version="1.2.3")
    reg = load_plugins()
    assert reg.entries["backbone"]["tiny"].source == "plugin 'tiny' (tiny-plugin 1.2.3)"
    assert "tiny-fcn8s" in reg.list_models("tiny-*")


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load(fake_dist):
    fake_dist("broken-plugin", {"broken_plugin": "import no_such_module_anywhere\n", "tiny_plugin": GOOD},
              {"broken": "broken_plugin", "tiny": "tiny_plugin"})
    reg = load_plugins()
    record = next(p for p in reg.plugins if p.name == "broken")
    assert record.status == "failed" and record.dist == "broken-plugin"
    assert "No module named 'no_such_module_anywhere'" in record.error
    assert {"vgg16", "tiny"} <= set(reg.names("backbone"))


def test_strict_mode_reraises_naming_the_plugin(fake_dist, monkeypatch):
    fake_dist("broken-plugin", {"broken_plugin": "raise RuntimeError('boom')\n"}, {"broken": "broken_plugin"})
    monkeypatch.setenv("SEGZOO_STRICT_PLUGINS", "1")
    with pytest.raises(segzoo.PluginError, match="plugin 'broken' from distribution 'broken-plugin'.*boom"):
        load_plugins()


def test_disabling_plugins(fake_dist, monkeypatch):
    fake_dist("tiny-plugin", {"tiny_plugin": GOOD}, {"tiny": "tiny_plugin"})
    assert "tiny" not in load_plugins(disabled={"tiny"}).names("backbone")
    monkeypatch.setenv("SEGZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = load_plugins()
    assert "tiny" not in reg.names("backbone") and "vgg16" in reg.names("backbone")
    assert next(p for p in reg.plugins if p.name == "tiny").status == "disabled"


def test_strict_mode_with_a_failing_plugin_is_one_line_from_the_cli(fake_dist, monkeypatch, capsys):
    """The parser's help texts list the registry, so strict loading raised before main's handler (issue 21)."""
    from segzoo.cli import main

    fake_dist("broken-plugin", {"broken_plugin": "raise RuntimeError('boom')\n"}, {"broken": "broken_plugin"})
    monkeypatch.setenv("SEGZOO_STRICT_PLUGINS", "1")
    monkeypatch.setattr(segzoo.api, "_REGISTRY", None)  # the next command loads the plugins afresh
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segzoo: error: plugin 'broken' from distribution 'broken-plugin'") and "boom" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    monkeypatch.delenv("SEGZOO_STRICT_PLUGINS")
    segzoo.get_registry(reload=True)  # the tests after this one see the usual registry
