"""Contract tests over every registered backbone and head (as timm's test_models.py over list_models).

A new plugin is tested by being registered. Backbones are built once per module and composed with
each head; the state-dict round trip rebuilds from the recipe, so it covers the registry path too.
"""

from __future__ import annotations

import functools

import pytest
import torch

import segzoo
from segzoo.core.errors import PluginError, SegzooError
from segzoo.core.model import GEOMETRIES, SegmentationModel
from segzoo.core.recipe import Recipe
from segzoo.infer.runtime import runner
from segzoo.studies.summary import meta_forward
from segzoo.zoo import contract

REGISTRY = segzoo.get_registry()
BACKBONES = [b for b in REGISTRY.names("backbone") if not b.endswith("*")]
HEADS = REGISTRY.names("head")
NUM_CLASSES = 5


# The head matrix builds these at a narrower fc6/fc7: width does not change the contract, and the
# 4096-wide nets are still checked by test_backbone_declares_what_it_returns and tests/test_weights.py.
NARROW = {"vgg16": {"fc_channels": 256}, "alexnet": {"fc_channels": 256}, "unet-encoder": {"width": 4}}
# and the heads with a wide decoder at narrow widths
NARROW_HEAD = {"unet": {"decoder_channels": 8}}


@functools.cache
def backbone(name: str, narrow: bool = False):
    make, _ = REGISTRY.backbone_factory(name)
    return make(**(NARROW.get(name, {}) if narrow else {}))


def compose(backbone_name: str, head_name: str) -> SegmentationModel:
    """A model on the cached backbone, with the recipe the registry would have made."""
    entry = REGISTRY.head(head_name)
    bb = backbone(backbone_name, narrow=True)
    reads = entry.reads(list(bb.feature_info))
    if reads is None:  # a head whose strides (or rule) the backbone lacks: the registry refuses it before building
        pytest.skip(f"{head_name} does not fit {backbone_name}'s strides {bb.strides()}")
    if max(reads) != max(bb.strides()):  # fcn16s-single on a stride-32 backbone
        pytest.skip(f"{head_name} does not read {backbone_name}'s coarsest level, whose layers would never train")
    kwargs = NARROW_HEAD.get(head_name, {})
    recipe = Recipe(backbone=backbone_name, head=head_name, num_classes=NUM_CLASSES,
                    backbone_kwargs=NARROW.get(backbone_name, {}), head_kwargs=kwargs)
    return SegmentationModel(bb, entry.obj(list(bb.feature_info), NUM_CLASSES, **kwargs), recipe)


def usual_head(name: str, head: str) -> str:
    """``head`` where it fits backbone ``name``, else the registry's first suggestion (U-Net's valid encoder has no
    stride 32 for the FCN heads)."""
    info = list(backbone(name, narrow=True).feature_info)
    return head if REGISTRY.head(head).reads(info) else REGISTRY.fitting_heads(info)[0]


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_declares_what_it_returns(name):
    # U-Net's encoder at its narrow width: its grids (valid convs, offsets) do not depend on the width
    contract.check_feature_info(backbone(name, narrow=name == "unet-encoder"), sizes=contract.ODD_SIZES[:2])


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("name", BACKBONES)
def test_the_models_feature_check_accepts_what_each_backbone_returns(name, geometry):
    """The check at the first forward (channels, and map sizes against the declared strides and offsets) passes
    every built-in backbone in every geometry it supports, at many sizes; on the meta device, so the paper's
    pad-100 VGG16 costs nothing."""
    make, _ = REGISTRY.backbone_factory(name)
    kwargs = {**NARROW.get(name, {}), **({} if geometry == "modern" else {"geometry": geometry})}
    head = usual_head(name, "fcn32s")  # outside the meta device: it builds (and caches) the real backbone
    with torch.device("meta"):
        try:
            bb = make(**kwargs)
        except SegzooError as exc:
            assert geometry != "modern" and "geometry" in str(exc)
            pytest.skip(f"{name} has no geometry {geometry}")
        bb.eval()
        model = SegmentationModel(bb, REGISTRY.head(head).obj(list(bb.feature_info), NUM_CLASSES),
                                  Recipe(backbone=name, head=head, num_classes=NUM_CLASSES))
    low = bb.min_input_size
    for h, w in [(low, low), (low + 1, low + 3), *contract.ODD_SIZES, (97, 161), (224, 224), (500, 375)]:
        size = (contract.next_side(bb, max(h, low)), contract.next_side(bb, max(w, low)))  # the sizes it takes
        model.check_features(meta_forward(bb, torch.empty(1, 3, *size)), size)


def test_the_model_stops_maps_coarser_than_declared():
    """A stride-16 level that is really at stride 32 (the other way to lie: test_plugins has the finer one)."""

    class Coarse(contract.SyntheticBackbone):
        def forward(self, x):
            out = super().forward(x)
            return {**out, 16: torch.nn.functional.avg_pool2d(out[16], 2, ceil_mode=True)}

    model = SegmentationModel(Coarse((4, 8, 16, 32)), REGISTRY.head("fcn8s").obj(
        list(Coarse((4, 8, 16, 32)).feature_info), NUM_CLASSES),
        Recipe(backbone="coarse", head="fcn8s", num_classes=NUM_CLASSES))
    with pytest.raises(PluginError, match=r"declares strides \[4, 8, 16, 32\] but for a 64x64 input returned maps "
                                          r"of 16x16, 8x8, 2x2, 2x2, i\.e\. strides about \[4, 8, 32, 32\] "
                                          r"\(stride 16 gives about 4x4\)"):
        model(torch.randn(1, 3, 64, 64))
    model(torch.randn(1, 3, 32, 32))  # too small to tell 1 cell from 2: it passes, as it must...
    with pytest.raises(PluginError, match="stride 16 gives about 4x4"):
        model(torch.randn(1, 3, 64, 64))  # ...and the check waits for an input large enough to tell


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_offers_the_fcn_strides(name):
    """Every built-in classifier backbone feeds every built-in FCN head: strides 4, 8, 16 and 32 at least (U-Net's
    own valid encoder, strides 1-16, feeds the U-Net heads instead)."""
    strides = set(backbone(name).strides())
    if name == "unet-encoder":
        assert strides == {1, 2, 4, 8, 16} and {"unet", "unet-classic"} <= set(
            REGISTRY.fitting_heads(list(backbone(name).feature_info)))
        return
    assert {4, 8, 16, 32} <= strides


@pytest.mark.parametrize("name", BACKBONES)
def test_the_unet_head_reads_every_level_and_returns_the_input_size(name):
    """U-Net's decoder adapts: it reads every level the backbone has, coarsest first, and returns N x C x H x W
    at odd sizes (the contract test above checks that too; this names the levels)."""
    model = compose(name, "unet")
    assert model.head.strides == tuple(sorted(model.backbone.strides(), reverse=True))


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", BACKBONES)
def test_output_has_the_input_size(name, head):
    contract.check_output_shape(compose(name, head))


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_reach_every_trainable_parameter(name, head):
    contract.check_gradients(compose(name, head))


@pytest.mark.parametrize("name", BACKBONES)
def test_trains_at_batch_1_on_the_smallest_input(name):
    """BatchNorm on a 1x1 map cannot train: a backbone's min_input_size must leave every level 2x2 or more."""
    contract.check_train_step(compose(name, usual_head(name, "fcn32s")))


@pytest.mark.parametrize("name", BACKBONES)
def test_predicts_in_bf16_as_segzoo_predict_runs_it(name):
    """Every backbone runs on the low-precision, channels-last weight copy (BatchNorm's counters stay integers)
    and gives float32 logits close to fp32's, without touching the model's own float32 weights."""
    model = compose(name, usual_head(name, "fcn32s")).eval()
    (h, w), = contract.model_sizes(model, [(max(64, model.backbone.min_input_size),) * 2])
    w = contract.next_side(model, w + 8)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    want = runner(model)(x)
    got = runner(model, dtype="bf16")(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want).abs().max()) <= 0.05 * float(want.abs().max())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_train_step_check_catches_batchnorm_on_a_single_cell():
    class OneCell(contract.SyntheticBackbone):
        def __init__(self):
            super().__init__((32,))
            self.bn = torch.nn.BatchNorm2d(self.feature_info[0].channels)

        def forward(self, x):
            return {32: self.bn(super().forward(x)[32])}

    model = SegmentationModel(OneCell(), REGISTRY.head("fcn32s").obj(list(OneCell().feature_info), NUM_CLASSES))
    with pytest.raises(AssertionError, match="training step at batch 1 on a 32x32 input.*raise min_input_size"):
        contract.check_train_step(model)


@pytest.mark.parametrize("name", BACKBONES)
def test_too_small_input_names_the_minimum(name):
    contract.check_min_input(compose(name, usual_head(name, "fcn32s")))


@pytest.mark.parametrize("head", HEADS)
def test_head_round_trips_through_recipe_and_pickle(head):
    """Heads checked on a tiny synthetic backbone with every stride: cheap, and independent of any encoder."""
    entry = REGISTRY.head(head)
    strides = (2, 4, 8, 16, 32) if entry.reads(list(contract.SyntheticBackbone().feature_info)) else (
        entry.strides.required + (2, 4, 8, 16))  # unet-classic reads from stride 1

    def build():
        bb = contract.SyntheticBackbone(strides)
        if head == "unet-classic":  # it needs the paper's valid grids: its own encoder, narrow
            bb = backbone("unet-encoder", narrow=True)
        return SegmentationModel(bb, entry.obj(list(bb.feature_info), NUM_CLASSES, **NARROW_HEAD.get(head, {})))

    model = build()
    contract.check_state_dict_roundtrip(model, build)
    contract.check_pickle(model)


@pytest.mark.parametrize("name", BACKBONES)
def test_registry_build_round_trips_state_dict(name):
    head = usual_head(name, "fcn8s")
    recipe = REGISTRY.resolve(f"{name}-{head}").replace(num_classes=NUM_CLASSES, backbone_kwargs=NARROW.get(name, {}),
                                                         head_kwargs=NARROW_HEAD.get(head, {}))
    model = REGISTRY.build(recipe)
    contract.check_state_dict_roundtrip(model, lambda: REGISTRY.build(recipe))


def test_run_contract_reports_every_check_for_a_good_model():
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 64})
    results = contract.run_contract(model, rebuild=lambda: REGISTRY.build(model.recipe))
    assert [r.name for r in results if not r.passed] == []
    assert len(results) == 7


def test_run_contract_catches_a_backbone_that_lies_about_its_channels():
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 64})
    model.backbone.feature_info = [*model.backbone.feature_info[:-1], segzoo.FeatureInfo(32, 65)]
    failed = {r.name: r.detail for r in contract.run_contract(model) if not r.passed}
    assert "declares 65 channels" in failed["feature strides and channels"]
