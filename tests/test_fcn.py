"""The FCN heads: skips start at zero, upsampling starts bilinear, strides decide everything."""

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.core.model import SegmentationModel
from segzoo.zoo.contract import SyntheticBackbone


def narrow(name, num_classes=4, **head_kwargs):
    torch.manual_seed(0)
    return segzoo.create_model(name, num_classes=num_classes, backbone_kwargs={"fc_channels": 128},
                               head_kwargs=head_kwargs).eval()


@pytest.mark.parametrize("name", ["vgg16-fcn16s", "vgg16-fcn8s", "vgg16-fcn4s", "alexnet-fcn8s"])
def test_fresh_skips_contribute_nothing(name):
    """Zero-initialised skip scores: the finer features cannot change a fresh net's output."""
    model = narrow(name)
    x = torch.randn(1, 3, 70, 54)
    with torch.no_grad():
        feats = model.backbone(x)
        out = model.head(feats, x.shape[-2:])
        scrambled = {s: (f if s == 32 else torch.randn_like(f) * 10) for s, f in feats.items()}
        assert torch.equal(model.head(scrambled, x.shape[-2:]), out)


def bilinear(x, factor):
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def test_fresh_fcn16s_and_fcn8s_predict_what_fcn32s_predicts():
    """With the same backbone and score_fr, a fresh 16s is exactly bilinear x2 then x16 of fcn32s' scores.

    Composing two bilinear steps is not one x32 step (knots move), so the outputs are not bit-equal,
    but the predictions agree almost everywhere.
    """
    base = narrow("vgg16-fcn32s")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        score = base.head.score_fr(base.backbone(x)[32])
        want = base(x)
        assert torch.allclose(want, bilinear(score, 32), atol=1e-6)
        for name, steps in (("vgg16-fcn16s", (2, 16)), ("vgg16-fcn8s", (2, 2, 8))):
            model = narrow(name)
            model.backbone.load_state_dict(base.backbone.state_dict())
            model.head.score_fr.load_state_dict(base.head.score_fr.state_dict())
            got = model(x)
            composed = score
            for f in steps:
                composed = bilinear(composed, f)
            assert torch.allclose(got, composed, atol=1e-6)
            agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
            assert agree > 0.95, f"{name} agrees with fcn32s on {agree:.1%} of pixels"


def test_heads_are_defined_by_stride():
    for name, strides in [("fcn32s", (32,)), ("fcn16s", (32, 16)), ("fcn8s", (32, 16, 8)),
                          ("fcn4s", (32, 16, 8, 4))]:
        make = segzoo.get_registry().head(name).obj
        head = make(SyntheticBackbone().feature_info, 3)
        assert head.strides == strides
        assert sorted(int(s) for s in head.score_skip) == sorted(strides[1:])
        assert head.upscore.factor == strides[-1]


def test_a_head_needing_a_missing_stride_says_which():
    make = segzoo.get_registry().head("fcn4s").obj
    with pytest.raises(segzoo.InputError, match=r"missing \[4\].*fcn32s"):
        make(SyntheticBackbone(strides=(8, 16, 32)).feature_info, 3)


def test_frozen_upsampling_stays_bilinear_while_training():
    model = narrow("alexnet-fcn8s", learnable_upsampling=False).train()
    ups = [m.deconv.weight for m in model.head.modules() if hasattr(m, "deconv")]
    before = [w.clone() for w in ups]
    assert not any(w.requires_grad for w in ups)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, ups))


def test_learnable_upsampling_learns():
    model = narrow("alexnet-fcn32s").train()
    before = model.head.upscore.deconv.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(1, 3, 64, 64)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.head.upscore.deconv.weight)


def test_segmentation_model_rejects_a_single_image_without_batch_dim():
    model = SegmentationModel(SyntheticBackbone(), narrow("alexnet-fcn8s").head)
    with pytest.raises(segzoo.InputError, match=r"x\[None\]"):
        model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("geometry", ["modern", "caffe"])
def test_fixed_final_upsampling_freezes_only_upscore_and_zero_init_scores_starts_score_fr_at_zero(geometry):
    """The CVPR setting as head options: 2x upsamplings learned, the final one bilinear and fixed, scores at 0."""
    torch.manual_seed(0)
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 16},
                                geometry=geometry,
                                head_kwargs={"fixed_final_upsampling": True, "zero_init_scores": True}).train()
    head = model.head
    final, skips = list(head.upscore.parameters()), [p for m in head.upscore_skip.values() for p in m.parameters()]
    assert final and not any(p.requires_grad for p in final)
    assert len(skips) == 2 and all(p.requires_grad for p in skips)
    assert not head.score_fr.weight.any() and not head.score_fr.bias.any()
    assert all(not s.weight.any() for s in head.score_skip.values())
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    target = torch.randint(0, 3, (2, 64, 64))
    F.cross_entropy(model(torch.randn(2, 3, 64, 64)), target).backward()
    opt.step()
    now = dict(head.named_parameters())
    changed = {n for n in now if not torch.equal(before[n], now[n])}
    assert not any(n.startswith("upscore.") for n in changed)  # the final upsampling is still bilinear
    assert "score_fr.weight" in changed  # zero scores still learn
    # defaults are unchanged: every upsampling learnable, score_fr drawn at random
    plain = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 16},
                                geometry=geometry)
    assert all(p.requires_grad for p in plain.head.upscore.parameters()) and plain.head.score_fr.weight.any()
    frozen = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 16},
                                 geometry=geometry, head_kwargs={"learnable_upsampling": False,
                                                                 "fixed_final_upsampling": True})
    assert not any(p.requires_grad for m in (frozen.head.upscore, *frozen.head.upscore_skip.values())
                   for p in m.parameters())


# -- single-stride backbones (a ViT gives stride 16 only) ----------------------------------------------------
VIT = "timm-vit_tiny_patch16_224"


def test_a_vit_trains_with_the_single_stride_head(tmp_path, demo_data):
    from segzoo.train import TrainConfig, train
    from segzoo.zoo import contract

    model = segzoo.create_model(f"{VIT}-fcn16s-single", num_classes=3)
    assert model.backbone.strides() == [16] and model.head.strides == (16,)
    contract.check_output_shape(model, sizes=((33, 47),))  # odd sizes too: the ViT pads to whole patches
    result = train(TrainConfig(model=f"{VIT}-fcn16s-single", input_size=64, batch_size=8, scale=(1.0, 1.0),
                               progress=False, device="cpu", val_split=None, epochs=1, data=str(demo_data),
                               out_dir=str(tmp_path / "run")), log=lambda _: None)
    assert result.history[0].step == 1 and result.history[0].train_loss > 0


def test_a_head_that_does_not_fit_suggests_one_that_does_never_itself():
    with pytest.raises(segzoo.InputError) as err:
        segzoo.create_model(f"{VIT}-fcn32s", num_classes=3)
    assert str(err.value).endswith("provides only [16] (missing [32]); pick a head that reads only those strides: "
                                   "fcn16s-single")
    for head in ("fcn32s", "fcn8s"):  # the head's own check says the same
        make = segzoo.get_registry().head(head).obj
        with pytest.raises(segzoo.InputError, match="e.g. fcn16s-single$"):
            make(SyntheticBackbone(strides=(16,)).feature_info, 3)


def test_fitting_heads_put_those_reading_the_coarsest_level_first():
    registry = segzoo.get_registry()
    # unet (a strides rule: every level) reads all of them, so it comes first wherever it fits
    assert registry.fitting_heads(SyntheticBackbone(strides=(4, 8, 16)).feature_info) == ["unet", "fcn16s-single",
                                                                                         "fcn8s-single"]
    assert registry.fitting_heads(SyntheticBackbone(strides=(2, 4, 8)).feature_info, exclude="unet") == [
        "fcn8s-single"]
    assert registry.fitting_heads(SyntheticBackbone(strides=(16,)).feature_info) == ["fcn16s-single"]  # one level
    vgg_like = registry.fitting_heads(SyntheticBackbone().feature_info, exclude="fcn4s")
    assert vgg_like[:3] == ["unet", "fcn8s", "fcn8s-atonce"] and "fcn4s" not in vgg_like
    assert vgg_like[-1] == "fcn8s-single"
