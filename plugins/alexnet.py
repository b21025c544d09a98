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

import torch
from torch import nn

from segzoo import CAFFE_NORM, Backbone, FeatureInfo, InputError, hookimpl, load_classifier_weights, torch_hub_file
from segzoo.core.layers import CeilMaxPool2d, check_fc_options, grid_offset, widen_input_conv, widen_normalization
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
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),  # 6, 7: conv3
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),  # 8, 9: conv4
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),  # 10, 11: conv5
        pool(),  # 12: pool5 (stride 32)
    )


class AlexNet(Backbone):
    """AlexNet whose conv1, pool1, pool2 give strides 4, 8, 16 and whose fc7 gives stride 32."""

    TAPS = {1: 4, 2: 8, 5: 16}  # index in `features` -> stride

    def __init__(self, fc_channels: int = 4096, dropout: float = 0.5, geometry: str = "modern", in_chans: int = 3):
        super().__init__()
        caffe = check_geometry("backbone 'alexnet'", geometry) == "caffe"
        self.features = make_features(caffe, in_chans)
        self.pad6 = nn.Identity() if caffe else nn.ZeroPad2d((2, 3, 2, 3))
        self.fc6 = nn.Conv2d(256, fc_channels, 6)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu6, self.relu7 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.drop6, self.drop7 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.feature_info = [FeatureInfo(4, 64), FeatureInfo(8, 64), FeatureInfo(16, 192),
                             FeatureInfo(32, fc_channels)]
        if caffe:  # pad 100 lets any input through (pool5 >= 6 for H >= 1), and the weights want BGR 0-255
            self.feature_info = [FeatureInfo(f.stride, f.channels, self.grid_offset(f.stride))
                                 for f in self.feature_info]
            self.min_input_size, self.normalization = 1, dict(CAFFE_NORM)
        self.normalization = widen_normalization(self.normalization, in_chans)

    def grid_offset(self, stride: int) -> float:
        """Where the map at ``stride`` lies on the input (see FeatureInfo), derived from the layers."""
        if stride == 32:
            return grid_offset([*self.features, self.pad6, self.fc6, self.fc7], 32)
        end = next(i for i, s in self.TAPS.items() if s == stride)
        return grid_offset(self.features[: end + 1], stride)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                out[self.TAPS[i]] = x
        return {**out, 32: self.fc(x)}

    def fc(self, pool5: torch.Tensor) -> torch.Tensor:
        """fc6 and fc7 as convs: at a 6x6 pool5 map, position (2, 2) is the ImageNet classifier's fc7."""
        x = self.drop6(self.relu6(self.fc6(self.pad6(pool5))))
        return self.drop7(self.relu7(self.fc7(x)))


def imagenet_file() -> str:
    """torchvision's ImageNet AlexNet (``AlexNet_Weights.IMAGENET1K_V1``) from torch hub's cache (fetched if online)."""
    from torchvision.models import AlexNet_Weights

    return str(torch_hub_file(AlexNet_Weights.IMAGENET1K_V1.url, "backbone 'alexnet' ImageNet weights (torchvision)"))


def alexnet(weights: str | None = None, fc_channels: int = 4096, dropout: float = 0.5,
            geometry: str = "modern", in_chans: int = 3) -> AlexNet:
    """AlexNet (Krizhevsky et al.), torchvision's layout, with fc6/fc7 as 6x6 and 1x1 convs; strides 4-32.

    ``in_chans`` other than 3 widens conv1 from the RGB ``weights`` as timm's ``adapt_input_conv`` does.

    ``weights``: a local ImageNet classifier file, or ``"imagenet"`` for torchvision's, convolutionalized.
    """
    if not isinstance(in_chans, int) or in_chans < 1:
        raise InputError(f"backbone 'alexnet': in_chans must be a positive integer, got {in_chans!r}")
    check_fc_options(fc_channels, dropout)
    model = AlexNet(fc_channels, dropout, geometry, in_chans=3 if weights else in_chans)
    if weights == "imagenet":
        weights = imagenet_file()
    if weights:
        load_classifier_weights(model, weights, CLASSIFIER_LAYOUTS, fc6_in_channels=256, fc6_kernel=6)
        model.features[0] = widen_input_conv(model.features[0], in_chans)
        model.normalization = widen_normalization(model.normalization, in_chans)
    return model


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("alexnet", alexnet)
