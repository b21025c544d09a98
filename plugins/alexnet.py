"""AlexNet in torchvision's layout, convolutionalized.

It has only three pools (strides 8/16/32 after a stride-4 conv1), which is why heads ask for
strides, not layer names. In this modern geometry conv1 is padded by 5 and the 3x3/2 pools by 1, so
the map at stride s is exactly ceil(H/s); the weights' shapes are torchvision's, so its ImageNet
weights load by name. fc6 reads a 6x6 window (padded 2 before, 3 after, to keep the size).

``geometry="caffe"`` is the reference FCN-AlexNet's instead: conv1 padded by 100, unpadded ceil-mode
pools, an unpadded 6x6 fc6, and features that declare their grid offsets (derived from the layers).
The original CaffeNet also had LRN and grouped convs; this keeps torchvision's layout.
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

# Where each ImageNet classifier layout keeps AlexNet's fc6 and fc7: torchvision's, and segzoo's own keys.
CLASSIFIER_LAYOUTS = {"segzoo": ("fc6", "fc7"), "torchvision-alexnet": ("classifier.1", "classifier.4")}


def make_features(caffe: bool = False, in_chans: int = 3) -> nn.Sequential:
    def pool() -> nn.MaxPool2d:
        return CeilMaxPool2d(3, 2) if caffe else nn.MaxPool2d(3, 2, padding=1)

    return nn.Sequential(
        # 0, 1: conv1 (stride 4)
        nn.Conv2d(in_chans, 64, 11, stride=4, padding=100 if caffe else 5), nn.ReLU(inplace=True),
        pool(),  # 2: pool1 (stride 8)
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),  # 3, 4: conv2
        pool(),  # 5: pool2 (stride 16)
        WinogradConv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),  # 6, 7: conv3
        WinogradConv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),  # 8, 9: conv4
        WinogradConv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),  # 10, 11: conv5
        pool(),  # 12: pool5 (stride 32)
    )


class AlexNet(ConvolutionalizedClassifier):
    """AlexNet whose conv1, pool1, pool2 give strides 4, 8, 16 and whose fc7 gives stride 32."""

    TAPS = {1: 4, 2: 8, 5: 16}  # index in `features` -> stride

    def __init__(self, fc_channels: int = 4096, dropout: float = 0.5, geometry: str = "modern", in_chans: int = 3):
        super().__init__()
        caffe = check_geometry("backbone 'alexnet'", geometry) == "caffe"
        self.features = make_features(caffe, in_chans)
        # fc6 reads a 6x6 window; at a 6x6 pool5 map, position (2, 2) is the ImageNet classifier's fc7. Pad 100
        # lets any input through in caffe geometry (pool5 >= 6 for H >= 1); modern pads 2 before, 3 after.
        self.make_fc(256, fc_channels, 6, dropout, pad6=None if caffe else nn.ZeroPad2d((2, 3, 2, 3)))
        self.declare([64, 64, 192], caffe, in_chans)


# torchvision's names for its AlexNet weights (``AlexNet_Weights``), as torchvision spells them
TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "DEFAULT")


def imagenet_file(name: str = "IMAGENET1K_V1") -> str:
    """torchvision's ImageNet AlexNet (``AlexNet_Weights.<name>``) from torch hub's cache (fetched if online)."""
    from torchvision.models import AlexNet_Weights

    return str(torch_hub_file(AlexNet_Weights[name].url, f"backbone 'alexnet' ImageNet weights (torchvision {name})"))


def alexnet(weights: str | None = None, fc_channels: int = 4096, dropout: float = 0.5,
            geometry: str = "modern", in_chans: int = 3) -> AlexNet:
    """AlexNet (Krizhevsky et al.), torchvision's layout, with fc6/fc7 as 6x6 and 1x1 convs; strides 4-32.

    ``in_chans`` other than 3 widens conv1 from the RGB ``weights`` as timm's ``adapt_input_conv`` does.

    ``weights``: a local ImageNet classifier file, or ``"imagenet"`` for torchvision's, convolutionalized; torchvision's
    own names ``"IMAGENET1K_V1"`` and ``"DEFAULT"`` (``AlexNet_Weights``) are the same file.
    """
    check_fc_options(fc_channels, dropout)
    if weights in TORCHVISION_WEIGHTS:
        weights = imagenet_file(weights)
    return build_convolutionalized(lambda channels: AlexNet(fc_channels, dropout, geometry, in_chans=channels),
                                   "alexnet", weights, in_chans, CLASSIFIER_LAYOUTS, 256, 6, imagenet_file)


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("alexnet", alexnet)
