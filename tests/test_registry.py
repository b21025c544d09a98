"""Names, wildcards, composition, recipes (registry.yaml) and close-match errors."""

import pytest
import torch
import yaml
from segzoo_plugins.recipes import DEFAULT as REGISTRY_YAML

import segzoo
import segzoo.zoo.contract
import segzoo.zoo.loader
from segzoo.api import create_model
from segzoo.core.recipe import Recipe
from segzoo.studies.summary import parse_input_size, summarize
from segzoo.zoo.registry import Registrar, Registry


def test_every_backbone_composes_with_every_head():
    models = segzoo.list_models()
    for b in segzoo.list_backbones():
        for h in segzoo.list_heads():
            assert b.endswith("*") or f"{b}-{h}" in models


def test_wildcards():
    fcn8s = segzoo.list_models("*fcn8s")
    assert {"vgg16-fcn8s", "alexnet-fcn8s", "timm-resnet18-fcn8s"} <= set(fcn8s)
    assert all(n.endswith("fcn8s") for n in fcn8s)
    assert {"vgg16-fcn4s", "vgg16-fcn8s"} <= set(segzoo.list_models("vgg16-fcn?s"))
    assert "vgg16-fcn16s" not in segzoo.list_models("vgg16-fcn?s")
    assert {"fcn16s", "fcn16s-single", "fcn32s", "fcn4s", "fcn8s", "fcn8s-atonce", "fcn8s-single"} <= set(
        segzoo.list_heads())


def test_names_with_dashes_split_at_a_registered_head(registry):
    assert registry.resolve("timm-resnet18-fcn8s") == Recipe(name="timm-resnet18-fcn8s", backbone="timm-resnet18",
                                                             head="fcn8s")
    # Any timm model through the timm-* family, not only the listed ones.
    assert registry.resolve("timm-resnet34-fcn32s").backbone == "timm-resnet34"
    model = segzoo.create_model("timm-resnet34-fcn32s", num_classes=3)
    assert model.backbone.strides()[-1] == 32


@pytest.mark.parametrize("name, suggestion", [("vgg16-fcn9s", "vgg16-fcn8s"), ("vgg-fcn8s", "vgg16-fcn8s"),
                                              ("alexnet-fcn8", "alexnet-fcn8s")])
def test_unknown_names_suggest_close_matches(name, suggestion):
    with pytest.raises(segzoo.UnknownNameError) as err:
        segzoo.create_model(name)
    assert suggestion in err.value.suggestions
    assert f"unknown model '{name}'" in str(err.value) and "segzoo list" in str(err.value)


def test_unknown_timm_model_suggests_timm_names():
    with pytest.raises(segzoo.UnknownNameError, match="resnet18"):
        segzoo.create_model("timm-resnet1-fcn8s")


def test_recipe_defaults_and_overrides():
    model = segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"fc_channels": 32})
    assert model.num_classes == 21 and model.recipe.input_size == (3, 500, 500)
    model = segzoo.create_model("alexnet-fcn32s", num_classes=7, backbone_kwargs={"fc_channels": 32},
                                head_kwargs={"learnable_upsampling": False})
    assert model.num_classes == 7 and not model.head.upscore.deconv.weight.requires_grad
    with pytest.raises(segzoo.SegzooError, match="positive integer"):
        segzoo.create_model("alexnet-fcn32s", num_classes=0)
    with pytest.raises(segzoo.SegzooError, match="does not take the options given"):
        segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"no_such_option": 1})


def test_registry_yaml_matches_the_registry(registry):
    """Every recipe names registered parts, uses known keys, and builds to its declared input size."""
    with open(REGISTRY_YAML) as f:
        recipes = yaml.safe_load(f)["recipes"]
    assert set(recipes) <= set(registry.names("recipe"))  # other plugins may add their own
    for name, data in recipes.items():
        recipe = Recipe.from_dict(data, where=name)
        registry.backbone_factory(recipe.backbone)
        registry.head(recipe.head)
        assert isinstance(recipe.num_classes, int) and recipe.num_classes > 0
        c, h, w = parse_input_size("x".join(map(str, recipe.input_size)))
        with torch.device("meta"):  # the full-width nets' shapes without initialising 134M weights each
            model = segzoo.create_model(name)
        window = model.output_window(h, w)  # the input itself, or the centred window of a valid-conv net
        assert summarize(model, (1, c, h, w)).output_shape == (1, recipe.num_classes, *window.size), name
        if name == "unet-classic":  # the paper: 572 x 572 in, 388 x 388 out
            assert window == segzoo.core.batch.Window(92, 92, 388, 388)


def test_clashing_names_name_both_sources():
    reg = Registry()
    first, second = Registrar("a", "dist-a 1.0"), Registrar("b", "dist-b 2.0")
    first.backbone("net", lambda **kw: None)
    reg.commit(first)
    second.backbone("ok", lambda **kw: None)
    second.backbone("net", lambda **kw: None)
    with pytest.raises(segzoo.PluginError, match=r"'net' from plugin 'b' \(dist-b 2.0\).*plugin 'a' \(dist-a 1.0\)"):
        reg.commit(second)
    assert reg.names("backbone") == ["net"]  # all or nothing: 'ok' was not half-registered


def factory(**kw):
    return None


@pytest.mark.parametrize("first, second, message", [
    ("timm-*", "timm-resnet34", r"backbone name 'timm-resnet34' from plugin 'b' \(dist-b 2.0\) clashes with the "
                                r"family 'timm-\*' from plugin 'a' \(dist-a 1.0\), which already resolves that name"),
    ("vgg16", "vgg*", r"backbone family 'vgg\*' from plugin 'b' \(dist-b 2.0\) clashes with the name 'vgg16' from "
                      r"plugin 'a' \(dist-a 1.0\), which it would take over"),
    ("timm-*", "timm-res*", r"family 'timm-res\*' .* clashes with the family 'timm-\*' .* which already resolves its"),
    ("timm-res*", "timm-*", r"family 'timm-\*' .* clashes with the family 'timm-res\*' .* whose names it would also"),
])
def test_a_name_inside_another_plugins_family_clashes(first, second, message):
    """Exact-name comparison let a plugin's timm-resnet34 silently take over what timm-* resolves."""
    reg = Registry()
    a, b = Registrar("a", "dist-a 1.0"), Registrar("b", "dist-b 2.0")
    a.backbone(first, factory)
    reg.commit(a)
    b.backbone("b-own", factory)
    b.backbone(second, factory)
    with pytest.raises(segzoo.PluginError, match=message):
        reg.commit(b)
    assert reg.names("backbone") == [first]  # all or nothing


def test_names_beside_a_family_or_in_ones_own_family_do_not_clash():
    reg = Registry()
    a, b = Registrar("a", "dist-a 1.0"), Registrar("b", "dist-b 2.0")
    a.backbone("timm-*", factory)
    a.backbone("timm-resnet18", factory)  # a plugin may list members of its own family
    reg.commit(a)
    b.backbone("timm", factory)  # not a member: the family needs a variant after 'timm-'
    b.backbone("timmy-*", factory)
    b.backbone("mytimm-resnet34", factory)
    reg.commit(b)
    assert reg.backbone_factory("timm-resnet34")[1].plugin == "a"
    assert reg.backbone_factory("timmy-x")[1].plugin == "b"


def test_registrar_rejects_bad_names_and_recipes():
    r = Registrar("p", "d")
    for bad in ("", "Has Caps", "with space"):
        with pytest.raises(segzoo.PluginError):
            r.backbone(bad, lambda **kw: None)
    with pytest.raises(segzoo.PluginError, match="needs 'backbone' and 'head'"):
        r.recipe("x", {"backbone": "vgg16"})


def test_summary_counts_flops_and_params():
    model = segzoo.create_model("vgg16-fcn8s")
    s = summarize(model, (1, 3, 224, 224))
    assert s.output_shape == (1, 21, 224, 224)
    assert s.params == s.trainable == sum(p.numel() for p in model.parameters())
    # VGG16's convs are 15.4 GMAC at 224x224, so at least 30 GFLOPs before fc6/fc7 and the head.
    assert 30 < s.gflops < 60


@pytest.mark.parametrize("text, dims", [("3x500x500", (3, 500, 500)), ("375x500", (3, 375, 500)),
                                        ("64", (3, 64, 64))])
def test_parse_input_size(text, dims):
    assert parse_input_size(text) == dims


def test_parse_input_size_rejects_nonsense():
    with pytest.raises(segzoo.SegzooError, match="CxHxW"):
        parse_input_size("big")


# -- what a plugin's parts must be, checked when a model is built ------------------------------------------------
def _registry(backbone=None, head=None, head_strides=(32,)) -> Registry:
    """A registry holding the built-in parts plus one plugin 'fx' (dist 'fx-dist 1.0') with the given parts."""
    reg = segzoo.zoo.loader.load_plugins(external=False)
    r = Registrar("fx", "fx-dist 1.0")
    if backbone is not None:
        r.backbone("fxnet", backbone)
    if head is not None:
        r.head("fxhead", head, strides=head_strides)
    reg.commit(r)
    return reg


def _tiny_backbone(weights=None):
    return segzoo.zoo.contract.SyntheticBackbone((8, 16, 32))


def test_a_head_must_declare_its_strides_when_registered():
    with pytest.raises(segzoo.PluginError, match=r"head 'h' must declare the strides it reads.*strides=\(32, 16, 8\)"):
        Registrar("p", "d 1").head("h", lambda feature_info, num_classes: None)


def test_a_backbone_without_feature_info_names_the_plugin():
    class NoInfo(segzoo.Backbone):
        def forward(self, x):
            return {}

    reg = _registry(backbone=lambda weights=None: NoInfo())
    with pytest.raises(segzoo.PluginError,
                       match=r"backbone 'fxnet' from plugin 'fx' \(fx-dist 1.0\) has no feature_info"):
        create_model("fxnet-fcn32s", registry=reg)


def test_a_type_error_inside_a_factory_is_the_plugins_not_the_users_options():
    def buggy(weights=None):
        return len(5)  # a TypeError of the plugin's own

    reg = _registry(backbone=buggy)
    with pytest.raises(segzoo.PluginError, match=r"backbone 'fxnet' from plugin 'fx' \(fx-dist 1.0\) failed to build: "
                                                 r"TypeError"):
        create_model("fxnet-fcn32s", registry=reg)
    with pytest.raises(segzoo.SegzooError, match=r"does not take the options given \(depth\)") as err:
        create_model("fxnet-fcn32s", registry=reg, backbone_kwargs={"depth": 3})
    assert not isinstance(err.value, segzoo.PluginError)


def test_a_head_that_ignores_the_size_it_is_given_is_caught_at_the_first_forward():
    class Sloppy(segzoo.Head):
        def __init__(self, feature_info, num_classes):
            super().__init__()
            self.strides, self.num_classes = (32,), num_classes

        def forward(self, features, size):
            return torch.nn.functional.interpolate(features[32][:, :self.num_classes], scale_factor=32.0)

    reg = _registry(backbone=_tiny_backbone, head=Sloppy)
    model = create_model("fxnet-fxhead", num_classes=3, registry=reg)
    with pytest.raises(segzoo.PluginError, match=r"head 'fxhead' from plugin 'fx' \(fx-dist 1.0\) returned scores of "
                                                 r"shape \(1, 3, 96, 64\) for an input of \(1, 3, 65, 64\)"):
        model(torch.randn(1, 3, 65, 64))


def test_a_head_whose_built_strides_differ_from_its_registration_is_named():
    class Liar(segzoo.Head):
        def __init__(self, feature_info, num_classes):
            super().__init__()
            self.strides, self.num_classes = (16,), num_classes

    reg = _registry(backbone=_tiny_backbone, head=Liar, head_strides=(32,))
    with pytest.raises(segzoo.PluginError, match=r"registered with strides \[32\] but the head it built has strides "
                                                 r"\[16\]"):
        create_model("fxnet-fxhead", registry=reg)


def test_a_missing_stride_suggests_heads_that_fit_and_never_the_one_that_failed(registry):
    reg = _registry(backbone=lambda weights=None: segzoo.zoo.contract.SyntheticBackbone((32,)))
    with pytest.raises(segzoo.InputError) as err:
        create_model("fxnet-fcn8s", registry=reg)
    message = str(err.value)
    fitting = [h for h in reg.names("head") if reg.head(h).reads([segzoo.FeatureInfo(32, 1)])]
    assert "missing [16, 8]" in message and all(h in message for h in fitting)
    assert "fcn8s," not in message and not message.endswith("fcn8s")


def test_heads_declare_a_parent_that_is_a_registered_head_with_fewer_strides(registry):
    for name in registry.names("head"):
        parent = registry.head(name).parent
        if parent:
            assert set(registry.head(parent).strides) < set(registry.head(name).strides), name  # fixed tuples
            assert registry.parent_model(f"alexnet-{name}") == f"alexnet-{parent}"


def test_backbone_takes_reads_the_factory_signature(registry):
    assert registry.backbone_takes("vgg16", "fc_channels") and registry.backbone_takes("alexnet", "fc_channels")
    assert not registry.backbone_takes("timm-resnet18", "fc_channels")  # **options passed on to timm: unknown


def test_a_registry_file_adds_recipes_but_never_silently_shadows_a_built_in_one(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("recipes:\n  my-net: {backbone: alexnet, head: fcn32s, num_classes: 4}\n")
    monkeypatch.setenv("SEGZOO_REGISTRY", str(path))
    try:
        registry = segzoo.get_registry(reload=True)
        assert "my-net" in registry.list_models() and "vgg16-fcn8s" in registry.list_models()
        path.write_text("recipes:\n  vgg16-fcn8s: {backbone: alexnet, head: fcn32s, num_classes: 4}\n")
        registry = segzoo.get_registry(reload=True)
        failed = [r for r in registry.plugins if r.status == "failed"]
        assert [r.name for r in failed] == ["user-recipes"] and "redefines segzoo's built-in recipe" in failed[0].error
        assert registry.resolve("vgg16-fcn8s").backbone == "vgg16"  # the built-in one, not the shadow
        assert "resnet18-fcn8s" in registry.list_models()  # and the other built-in recipes load beside the failure
        path.write_text(REGISTRY_YAML.read_text())  # a copy of the built-in file adds nothing and breaks nothing
        registry = segzoo.get_registry(reload=True)
        assert not [r for r in registry.plugins if r.status == "failed"]
    finally:
        monkeypatch.delenv("SEGZOO_REGISTRY")
        segzoo.get_registry(reload=True)
