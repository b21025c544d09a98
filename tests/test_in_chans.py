"""in_chans for VGG16 and AlexNet: the first conv widened from RGB weights as timm's adapt_input_conv does."""

from __future__ import annotations

import pytest
import torch

import segzoo
from segzoo.core.errors import SegzooError


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """A VGG16 backbone's ImageNet-style weights (segzoo's fc6/fc7 layout, narrow fc) in a file."""
    torch.manual_seed(0)
    rgb = segzoo.create_model("vgg16-fcn32s", num_classes=2, backbone_kwargs={"fc_channels": 16})
    path = tmp_path_factory.mktemp("w") / "vgg16_rgb.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in rgb.state_dict().items() if k.startswith("backbone.")},
               path)
    return path, rgb.backbone.features[0].weight.detach().clone()


def build(path, in_chans, geometry="modern"):
    return segzoo.create_model("vgg16-fcn32s", num_classes=2, backbone_weights=path, geometry=geometry,
                               backbone_kwargs={"fc_channels": 16, "in_chans": in_chans}).eval()


def test_vgg16_in_chans_4_from_rgb_weights(rgb_weights):
    path, w = rgb_weights
    model = build(path, 4)
    conv = model.backbone.features[0]
    assert conv.in_channels == 4 and type(conv) is type(build(path, 3).backbone.features[0])  # its fast class kept
    assert torch.allclose(conv.weight[:, :3], w * 0.75) and torch.allclose(conv.weight[:, 3], w[:, 0] * 0.75)
    assert len(model.normalization["mean"]) == 4 and len(model.normalization["std"]) == 4
    assert model(torch.randn(1, 4, 64, 64)).shape == (1, 2, 64, 64)


def test_six_channels_of_the_rgb_image_twice_and_one_grey_channel_give_the_rgb_nets_output(rgb_weights):
    path, _ = rgb_weights
    rgb, six, grey = build(path, 3), build(path, 6), build(path, 1)
    for m in (six, grey):
        m.head.load_state_dict(rgb.head.state_dict())  # the heads are random: give all three the same
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(six(torch.cat([x, x], 1)), rgb(x), atol=1e-5)
        g = x[:, :1]
        assert torch.allclose(grey(g), rgb(g.expand(1, 3, 64, 64)), atol=1e-5)


def test_alexnet_takes_in_chans_too_and_refuses_nonsense():
    model = segzoo.create_model("alexnet-fcn32s", num_classes=2, geometry="caffe",
                                backbone_kwargs={"fc_channels": 16, "in_chans": 5})
    assert model.backbone.features[0].in_channels == 5 and len(model.normalization["mean"]) == 5
    with pytest.raises(SegzooError, match="in_chans"):
        segzoo.create_model("alexnet-fcn32s", backbone_kwargs={"in_chans": 0})


@pytest.mark.parametrize("bad", [0, -1, True, "3", 10**6])
def test_timm_refuses_a_nonsense_in_chans_in_one_line(bad):
    pytest.importorskip("timm")
    with pytest.raises(SegzooError, match="in_chans must be an integer from 1 to 4096"):
        segzoo.create_model("timm-resnet18-fcn32s", num_classes=2, backbone_kwargs={"in_chans": bad})
