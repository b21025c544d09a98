"""VGG16, convolutionalized: the paper's main backbone.

``features`` keeps torchvision's indices, so torchvision and timm ImageNet weights load by name.
Pooling uses ceil mode, so the map at stride s is exactly ceil(H/s) for any H, and fc6 is a 7x7
conv padded by 3 so a 7x7 pool5 window still sees what the ImageNet classifier saw. This is the
clean modern geometry. ``geometry="caffe"`` is the paper's reference net instead (conv1_1 padded by
100, fc6 unpadded), in which the published FCN weights were trained; its features declare their
grid offsets, derived from the layers, so a head can crop them as Caffe did.
"""

from __future__ import annotations

from torch import nn

from segzoo import build_convolutionalized, hookimpl, torch_hub_file
from segzoo.core.accel import WinogradConv2d
from segzoo.core.layers import (
    CeilMaxPool2d,
    ConvolutionalizedClassifier,
    check_fc_options,
)
from segzoo.core.model import check_geometry

# Where each ImageNet classifier layout keeps VGG16's fc6 and fc7 (as timm's vgg.py owns its _filter_fn):
# torchvision's and timm's VGG16, and segzoo's own convolutionalized keys.
CLASSIFIER_LAYOUTS = {
    "segzoo": ("fc6", "fc7"),
    "torchvision-vgg": ("classifier.0", "classifier.3"),
    "timm-vgg": ("pre_logits.fc1", "pre_logits.fc2"),
}

CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_features(first_padding: int = 1, in_chans: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_chans
    for v in CONFIG:
        if v == "M":
            layers.append(CeilMaxPool2d(2, 2))
        else:
            padding = first_padding if not layers else 1
            layers += [WinogradConv2d(channels, v, 3, padding=padding), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class VGG16(ConvolutionalizedClassifier):
    """VGG16 whose pool1..pool4 give strides 2..16 and whose fc7 (after pool5, fc6) gives stride 32."""

    TAPS = {4: 2, 9: 4, 16: 8, 23: 16}  # index in `features` of pool1..pool4 -> stride

    def __init__(self, fc_channels: int = 4096, dropout: float = 0.5, geometry: str = "modern", in_chans: int = 3):
        super().__init__()
        caffe = check_geometry("backbone 'vgg16'", geometry) == "caffe"
        self.features = make_features(first_padding=100 if caffe else 1, in_chans=in_chans)
        # pad 100 lets any input through (pool5 >= 7 for H >= 1); modern: a padded 7x7 fc6 keeps the size
        self.make_fc(512, fc_channels, 7, dropout, padding=0 if caffe else 3)
        self.declare([64, 128, 256, 512], caffe, in_chans)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


# torchvision's names for its VGG16 weights that hold the classifier (fc6/fc7), as torchvision spells them;
# IMAGENET1K_FEATURES has no classifier, so it cannot give fc6/fc7
TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "DEFAULT")


def imagenet_file(name: str = "IMAGENET1K_V1") -> str:
    """torchvision's ImageNet VGG16 (``VGG16_Weights.<name>``) from torch hub's cache (fetched if online)."""
    from torchvision.models import VGG16_Weights

    return str(torch_hub_file(VGG16_Weights[name].url, f"backbone 'vgg16' ImageNet weights (torchvision {name})"))


def vgg16(weights: str | None = None, fc_channels: int = 4096, dropout: float = 0.5,
          geometry: str = "modern", in_chans: int = 3) -> VGG16:
    """VGG16 (Simonyan & Zisserman) with fc6/fc7 as 7x7 and 1x1 convs; strides 2-32.

    ``in_chans`` other than 3 (grey, RGBA, N-band images) widens conv1_1; RGB ``weights`` are loaded first and
    conv1_1 is then adapted from them as timm's ``adapt_input_conv`` does (summed for 1 channel; for more, R, G,
    B repeated and scaled by 3 / in_chans).

    ``weights``: a local ImageNet classifier file, or ``"imagenet"`` for torchvision's, convolutionalized; torchvision's
    own names ``"IMAGENET1K_V1"`` and ``"DEFAULT"`` (``VGG16_Weights``) are the same file.
    """
    check_fc_options(fc_channels, dropout)
    if weights in TORCHVISION_WEIGHTS:
        weights = imagenet_file(weights)
    return build_convolutionalized(lambda channels: VGG16(fc_channels, dropout, geometry, in_chans=channels), "vgg16",
                                   weights, in_chans, CLASSIFIER_LAYOUTS, 512, 7, imagenet_file)



@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("vgg16", vgg16)
