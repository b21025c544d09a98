"""ImageNet classifier weights from local files: fc6/fc7 become convs exactly; bad files fail clearly."""

import pickle
import re

import pytest
import timm
import torch
import torchvision
from segzoo_plugins.vgg import CLASSIFIER_LAYOUTS

import segzoo
from segzoo.cli import main
from segzoo.core.layers import convolutionalize_state_dict


@pytest.fixture(scope="module")
def tv_vgg16(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    path = tmp_path_factory.mktemp("w") / "vgg16.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_vgg16_fc6_fc7_match_torchvision_classifier_at_224(tv_vgg16):
    tv, path = tv_vgg16
    model = segzoo.create_model("vgg16-fcn8s", backbone_weights=str(path)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = tv.features(x)
        fc7 = tv.classifier[:5](tv.avgpool(pool5).flatten(1))  # fc6, ReLU, dropout, fc7, ReLU
        feats = model.backbone(x)
    assert feats[32].shape[-2:] == (7, 7)
    # The 7x7 conv centred on the 7x7 pool5 map sees exactly what the classifier's fc6 saw.
    assert torch.allclose(feats[32][:, :, 3, 3], fc7, rtol=1e-4, atol=1e-5)
    assert torch.allclose(feats[16], tv.features[:24](x), atol=1e-5)  # pool4, by stride
    assert model.recipe.backbone_weights == str(path)


def test_timm_vgg16_layout_converts_to_the_same_convs(tv_vgg16):
    tv, _ = tv_vgg16
    tm = timm.create_model("vgg16", pretrained=False)
    tm_state = tm.state_dict()
    tv_state = tv.state_dict()
    tm_state["pre_logits.fc1.weight"] = tv_state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    tm_state["pre_logits.fc1.bias"] = tv_state["classifier.0.bias"]
    tm_state["pre_logits.fc2.weight"] = tv_state["classifier.3.weight"][:, :, None, None]
    tm_state["pre_logits.fc2.bias"] = tv_state["classifier.3.bias"]
    a, layout_a = convolutionalize_state_dict(tv_state, CLASSIFIER_LAYOUTS, 512, 7)
    b, layout_b = convolutionalize_state_dict(tm_state, CLASSIFIER_LAYOUTS, 512, 7)
    assert (layout_a, layout_b) == ("torchvision-vgg", "timm-vgg")
    assert torch.equal(a["fc6.weight"], b["fc6.weight"]) and torch.equal(a["fc7.weight"], b["fc7.weight"])
    assert "classifier.6.weight" not in a and "head.fc.weight" not in b  # ImageNet's 1000-way layer is dropped


def test_alexnet_fc6_fc7_match_torchvision_classifier(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    model = segzoo.create_model("alexnet-fcn8s", backbone_weights=str(path)).eval()
    pool5 = torch.randn(1, 256, 6, 6).relu()
    with torch.no_grad():
        want = tv.classifier[:6](pool5.flatten(1))  # dropout, fc6, ReLU, dropout, fc7, ReLU
        got = model.backbone.fc(pool5)
    assert got.shape[-2:] == (6, 6)
    assert torch.allclose(got[:, :, 2, 2], want, rtol=1e-4, atol=1e-5)
    assert torch.equal(model.backbone.features[3].weight, tv.features[3].weight)


@pytest.mark.parametrize("num_classes", [1000, 10, 0])
def test_timm_backbone_weights_load_whatever_their_classifier(tmp_path, num_classes):
    """The classification head (fc) is the one part a feature extractor lacks: any number of classes, or none."""
    src = timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = segzoo.create_model("timm-resnet18-fcn8s", backbone_weights=str(path))
    assert torch.equal(model.backbone.body.conv1.weight, src.conv1.weight)
    assert torch.equal(model.backbone.body.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)
    assert "state_dict" not in model.backbone.body.pretrained_cfg  # the weights are not kept a second time


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def test_timm_weights_of_another_model_are_refused_with_the_keys(tmp_path):
    """A resnet34 file used to load into timm-resnet18 silently (strict=False ignored its extra blocks)."""
    path = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(segzoo.CheckpointError, match=rf"^{re.escape(str(path))} \(timm layout\) does not fit backbone "
                                                     r"'timm-resnet18': unexpected \['layer1\.2\.bn1\.bias'.*more\); "
                                                     r"backbone_weights must be the state dict of timm's 'resnet18'"):
        segzoo.create_model("timm-resnet18-fcn32s", backbone_weights=str(path))


def test_timm_weights_missing_a_key_are_refused(tmp_path, resnet18_state):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in resnet18_state.items() if not k.startswith("layer4.1.")}, path)
    with pytest.raises(segzoo.CheckpointError, match=r"does not fit backbone 'timm-resnet18': missing "
                                                     r"\['layer4\.1\.bn1\.bias'"):
        segzoo.create_model("timm-resnet18-fcn32s", backbone_weights=str(path))


def test_timm_weights_of_the_wrong_shape_blame_the_file_not_the_plugin(tmp_path, resnet18_state, capsys):
    path = tmp_path / "bad.pth"
    torch.save({**resnet18_state, "layer4.1.conv2.weight": torch.zeros(512, 512, 1, 1)}, path)
    assert main(["build", "timm-resnet18-fcn32s", "--backbone-weights", str(path), "--input", "64"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "failed to build" not in err and "plugin" not in err, err
    assert f"{path} (timm layout) does not fit backbone 'timm-resnet18': wrong shapes " \
           "['layer4.1.conv2.weight: file (512, 512, 1, 1) vs model (512, 512, 3, 3)']" in err


def test_wrong_architecture_lists_what_differs(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    with pytest.raises(segzoo.CheckpointError, match=r"does not fit this backbone.*no fc6/fc7 found.*torchvision-vgg"
                                                 r".*right architecture"):
        segzoo.create_model("vgg16-fcn32s", backbone_weights=str(path), backbone_kwargs={"fc_channels": 4096})


def test_a_file_without_fc_layers_names_the_layouts(tmp_path):
    path = tmp_path / "conv-only.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(segzoo.CheckpointError, match="torchvision-vgg"):
        segzoo.create_model("vgg16-fcn32s", backbone_weights=str(path))


def test_corrupt_and_missing_files_fail_clearly(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(segzoo.CheckpointError, match="corrupt"):
        segzoo.create_model("alexnet-fcn32s", backbone_weights=str(bad))
    with pytest.raises(segzoo.CheckpointError, match="no such weights file"):
        segzoo.create_model("alexnet-fcn32s", backbone_weights=str(tmp_path / "nope.pth"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    """weights_only=True: a file that would execute code on load is rejected, not run."""
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.weight": Payload()}, protocol=2))  # torch.save's protocol
    with pytest.raises(segzoo.CheckpointError, match="cannot read"):
        segzoo.create_model("alexnet-fcn32s", backbone_weights=str(path))
