"""The paper's reference geometry (geometry="caffe"): grids, derived crops, output sizes, FCN-8s at once.

Shapes are checked on the meta device (a 500x500 VGG16 in milliseconds); values on tiny inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segzoo_plugins.fcn import CaffeAlignment, make_factory

import segzoo
from segzoo import FeatureInfo
from segzoo.api import create_model
from segzoo.core.errors import SegzooError, UnknownNameError
from segzoo.core.layers import bilinear_kernel
from segzoo.core.model import CAFFE_NORM
from segzoo.studies.summary import meta_forward
from segzoo.zoo.registry import Registrar, Registry

PAPER_MODELS = ["vgg16-fcn32s", "vgg16-fcn16s", "vgg16-fcn8s", "vgg16-fcn8s-atonce", "alexnet-fcn32s"]


def paper_model(name: str, **kwargs) -> segzoo.SegmentationModel:
    """Built on the meta device: the layers and their geometry without the cost of initialising them."""
    with torch.device("meta"):
        return segzoo.create_model(name, geometry="caffe", backbone_kwargs={"fc_channels": 8}, **kwargs)


@pytest.mark.parametrize("name, crops, kernels", [
    ("vgg16-fcn32s", {1: 19}, {1: 64}),
    ("vgg16-fcn16s", {16: 5, 1: 27}, {16: 4, 1: 32}),
    ("vgg16-fcn8s", {16: 5, 8: 9, 1: 31}, {16: 4, 8: 4, 1: 16}),
    ("vgg16-fcn8s-atonce", {16: 5, 8: 9, 1: 31}, {16: 4, 8: 4, 1: 16}),
    ("alexnet-fcn32s", {1: 18}, {1: 63}),
])
def test_crops_derived_from_the_backbones_grids_are_the_papers(name, crops, kernels):
    head = paper_model(name).head
    assert head.alignment.crops == crops
    assert head.alignment.kernels == kernels
    for stride, kernel in kernels.items():
        deconv = head.upscore if stride == 1 else head.upscore_skip[str(stride)]
        assert tuple(deconv.weight.shape[-2:]) == (kernel, kernel) and deconv.bias is None


def test_backbones_declare_their_grids():
    vgg = paper_model("vgg16-fcn32s").backbone
    assert [(f.stride, f.offset) for f in vgg.feature_info] == [(2, -99), (4, -99), (8, -99), (16, -99), (32, -3)]
    assert vgg.features[0].padding == (100, 100) and vgg.fc6.padding == (0, 0)
    assert all(f.offset == 0 for f in segzoo.create_model("vgg16-fcn32s", backbone_kwargs={"fc_channels": 8})
               .backbone.feature_info)  # the modern grid is top-left aligned: the default offset
    alex = paper_model("alexnet-fcn32s").backbone
    assert alex.feature_info[-1].centre == 13.0  # fc7's cell 0 sits at input pixel 13; 63-tap upscore: 13 - 31


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("size", [(500, 500), (375, 500), (224, 224), (33, 47)])
def test_outputs_have_the_inputs_size(name, size):
    model = paper_model(name, num_classes=21).eval()
    assert tuple(meta_forward(model, torch.empty(1, 3, *size)).shape) == (1, 21, *size)


@pytest.mark.parametrize("name, final_crop, skip_crop", [
    ("vgg16-fcn32s", 19, 0), ("vgg16-fcn16s", 27, 5), ("vgg16-fcn8s", 31, 9), ("alexnet-fcn32s", 18, 0)])
def test_crop_offsets_by_hand(name, final_crop, skip_crop):
    """Probe the finest map with everything else off and a one-tap final kernel (tap 0): the transposed conv
    puts cell m at f*m, the skip crop shifts cells by skip_crop, the final crop moves pixels by final_crop."""
    model = segzoo.create_model(name, num_classes=1, geometry="caffe", backbone_kwargs={"fc_channels": 4})
    head = model.head
    h, w = 100, 120
    features = {s: torch.zeros(t.shape) for s, t in meta_forward(model.backbone, torch.empty(1, 3, h, w)).items()}
    f = head.strides[-1]
    rows, cols = features[f].shape[-2:]
    code = torch.arange(1, rows * cols + 1, dtype=torch.float32).reshape(rows, cols)
    features[f][0, 0] = code
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        (head.score_fr if f == 32 else head.score_skip[str(f)]).weight[0, 0] = 1
        head.upscore.weight[0, 0, 0, 0] = 1
        out = head(features, (h, w))[0, 0]
    expected = torch.zeros(h, w)
    for m in range(rows):
        for n in range(cols):
            y, x = f * (m - skip_crop) - final_crop, f * (n - skip_crop) - final_crop
            if 0 <= y < h and 0 <= x < w:
                expected[y, x] = code[m, n]
    assert (expected > 0).sum() >= 4
    assert torch.equal(out, expected)


@pytest.mark.parametrize("geometry", ["modern", "caffe"])
def test_at_once_scales_pool4_and_pool3_before_scoring(geometry):
    """Score layers are linear, so scaling a skip by k equals an FCN-8s whose skip score weights are scaled by k."""
    model = segzoo.create_model("alexnet-fcn8s-atonce", num_classes=3, geometry=geometry,
                                backbone_kwargs={"fc_channels": 8}).eval()
    head = model.head
    assert head.skip_scales == {16: 0.01, 8: 0.0001}
    with torch.no_grad():
        for stride in ("16", "8"):  # zero at initialisation: give the skips something to scale
            torch.nn.init.normal_(head.score_skip[stride].weight)
    fcn8s = make_factory("fcn8s", (32, 16, 8))
    same, scaled = fcn8s(model.backbone.feature_info, 3, geometry=geometry), fcn8s(model.backbone.feature_info, 3,
                                                                                   geometry=geometry)
    state = head.state_dict()
    same.load_state_dict(state)
    state["score_skip.16.weight"] = state["score_skip.16.weight"] * 0.01
    state["score_skip.8.weight"] = state["score_skip.8.weight"] * 0.0001
    scaled.load_state_dict(state)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        features = model.backbone(x)
        at_once = head(features, x.shape[-2:])
        torch.testing.assert_close(at_once, scaled(features, x.shape[-2:]), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(at_once, same(features, x.shape[-2:]), rtol=1e-3, atol=1e-4)


def test_recipe_carries_geometry_and_caffe_normalization(tmp_path):
    model = segzoo.create_model("alexnet-fcn32s", geometry="caffe", backbone_kwargs={"fc_channels": 8})
    assert model.recipe.geometry == "caffe" and model.normalization == CAFFE_NORM
    assert model.backbone.min_input_size == 1
    segzoo.save_model(model, tmp_path / "m.pt")
    loaded = segzoo.load_model(tmp_path / "m.pt")
    assert loaded.recipe.geometry == "caffe" and loaded.normalization == CAFFE_NORM
    assert isinstance(loaded.head.alignment, CaffeAlignment) and loaded.head.alignment.crops == {1: 18}
    modern = segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"fc_channels": 8})
    assert modern.recipe.geometry == "modern" and modern.normalization["bgr"] is False


def test_unsupported_geometries_are_clear_errors():
    with pytest.raises(SegzooError, match="only defined for vgg16 and alexnet"):
        segzoo.create_model("timm-resnet18-fcn8s", geometry="caffe")
    with pytest.raises(UnknownNameError, match="Did you mean: caffe"):
        segzoo.create_model("vgg16-fcn8s", geometry="cafe")


def test_a_plugin_without_geometries_is_named():
    """A third-party backbone written before geometries existed still builds, and refuses caffe by name."""
    from segzoo_plugins.alexnet import alexnet

    registry = Registry()
    registrar = Registrar("toy", "toy-dist")
    registrar.backbone("toy", lambda weights=None: alexnet(fc_channels=8))
    registrar.head("fcn32s", make_factory("fcn32s", (32,)), strides=(32,))
    registry.commit(registrar)
    assert create_model("toy-fcn32s", registry=registry).recipe.geometry == "modern"
    with pytest.raises(SegzooError, match="backbone 'toy' from plugin 'toy' .*does not support geometry 'caffe'"):
        create_model("toy-fcn32s", geometry="caffe", registry=registry)


def test_caffe_head_refuses_grids_it_cannot_crop_whole():
    info = [FeatureInfo(16, 8, offset=0.25), FeatureInfo(32, 8, offset=0.0)]
    with pytest.raises(SegzooError, match="no upsampling from stride 32 to 16"):
        make_factory("fcn16s", (32, 16))(info, 2, geometry="caffe")


def test_odd_bilinear_kernel_is_caffes():
    """FCN-AlexNet's 63-tap kernel: centre 31, taps 1 - |k - 31| / 32 (Caffe's upsample_filt)."""
    k = bilinear_kernel(1, 32, 63)[0, 0]
    taps = 1 - (torch.arange(63) - 31).abs() / 32
    torch.testing.assert_close(k, taps[:, None] * taps[None, :])
    assert k[31, 31] == 1 and torch.equal(k, k.flip(0))


def test_modern_fcn32s_still_equals_bilinear_interpolation():
    """The alignment refactor keeps the modern head: a fresh upsampling is F.interpolate, borders included."""
    head = make_factory("fcn32s", (32,))([FeatureInfo(32, 8)], 3)
    features = {32: torch.randn(1, 8, 2, 3)}
    with torch.no_grad():
        out = head(features, (64, 96))
        expected = F.interpolate(head.score_fr(features[32]), size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert "upscore.deconv.weight" in head.state_dict()


def test_caffe_geometry_keeps_every_model_contract():
    """Shapes at odd sizes, gradients, a 1x1 minimum input (pad 100), pickle and recipe round trips."""
    from segzoo.zoo import contract

    model = segzoo.create_model("alexnet-fcn8s-atonce", num_classes=3, geometry="caffe",
                                backbone_kwargs={"fc_channels": 16})
    results = contract.run_contract(model, rebuild=lambda: segzoo.get_registry().build(model.recipe), sizes=((33, 47),))
    assert [(r.name, r.detail) for r in results if not r.passed] == []
