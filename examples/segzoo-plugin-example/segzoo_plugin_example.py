"""An example segzoo plugin: a backbone, a head and a recipe, registered through segzoo's three hooks.

``tinyres`` is a small residual CNN returning features at strides 4, 8, 16 and 32; ``fcn8s-cat`` is
FCN-8s whose skips are fused by concatenation and a 1x1 conv rather than by a sum. Either composes
with segzoo's own parts by name: ``tinyres-fcn8s``, ``vgg16-fcn8s-cat``, ``tinyres-fcn8s-cat``.
"""

from __future__ import annotations

import torch
from torch import nn

from segzoo import Backbone, FeatureInfo, Head, hookimpl
from segzoo.io.checkpoint import read_state_dict
from segzoo.core.errors import CheckpointError, InputError
from segzoo.core.layers import BilinearUpsample, fit_to


def conv_norm(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv + GroupNorm: unlike BatchNorm it trains on a batch of one 1x1 map (small crops at stride 32)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.GroupNorm(8, cout))


class ResBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (a strided 1x1 conv where the shape changes), as in ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_norm(cin, cout, stride), nn.ReLU(inplace=True), conv_norm(cout, cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_norm(cin, cout, stride, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyRes(Backbone):
    """A stride-4 stem, then four residual stages doubling the width at strides 4, 8, 16, 32.

    Every conv is padded so that the map at stride s is ceil(H / s), as segzoo's backbones do.
    """

    def __init__(self, width: int = 16, blocks: int = 1):
        super().__init__()
        self.stem = nn.Sequential(conv_norm(3, width, 2), nn.ReLU(inplace=True),
                                  conv_norm(width, width, 2), nn.ReLU(inplace=True))
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList()
        for i, w in enumerate(widths):
            cin = widths[max(i - 1, 0)]
            self.stages.append(nn.Sequential(ResBlock(cin, w, 1 if i == 0 else 2),
                                             *[ResBlock(w, w) for _ in range(blocks - 1)]))
        self.feature_info = [FeatureInfo(4 * 2**i, w) for i, w in enumerate(widths)]

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for info, stage in zip(self.feature_info, self.stages):
            x = stage(x)
            out[info.stride] = x
        return out


def tinyres(weights: str | None = None, width: int = 16, blocks: int = 1) -> TinyRes:
    """A small residual CNN (ResNet-style, GroupNorm), strides 4-32, width x (1, 2, 4, 8) channels."""
    model = TinyRes(width, blocks)
    if weights:
        missing, unexpected = model.load_state_dict(read_state_dict(weights), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights} does not fit tinyres(width={width}, blocks={blocks}): "
                                  f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


class ConcatFusionHead(Head):
    """FCN-8s with concatenation: at each finer stride, upsample the scores 2x, concatenate the skip's
    features and mix them with a 1x1 conv.

    The 1x1 conv starts as the identity on the scores and zero on the features, so a fresh head
    predicts what its FCN-32s path predicts, like the paper's zero-initialised skip scores.
    """

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, strides: tuple[int, ...] = (32, 16, 8),
                 learnable_upsampling: bool = True):
        super().__init__()
        channels = {f.stride: f.channels for f in feature_info}
        missing = [s for s in strides if s not in channels]
        if missing:
            raise InputError(f"this head fuses strides {list(strides)} but the backbone lacks {missing}; "
                             "pick a head with fewer skips, e.g. fcn32s")
        self.strides, self.num_classes = tuple(strides), num_classes
        self.score_fr = nn.Conv2d(channels[strides[0]], num_classes, 1)
        self.upscore_skip = nn.ModuleDict({str(s): BilinearUpsample(num_classes, prev // s, learnable_upsampling)
                                           for prev, s in zip(strides, strides[1:])})
        self.fuse = nn.ModuleDict({str(s): self.identity_fusion(num_classes, channels[s]) for s in strides[1:]})
        self.upscore = BilinearUpsample(num_classes, strides[-1], learnable_upsampling)

    @staticmethod
    def identity_fusion(num_classes: int, skip_channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(num_classes + skip_channels, num_classes, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, :num_classes, 0, 0] = torch.eye(num_classes)
            conv.bias.zero_()
        return conv

    def forward(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.score_fr(features[self.strides[0]])
        for s in self.strides[1:]:
            skip = features[s]
            x = fit_to(self.upscore_skip[str(s)](x), skip.shape[-2:])
            x = self.fuse[str(s)](torch.cat([x, skip], dim=1))
        return fit_to(self.upscore(x), size)


def fcn8s_cat(feature_info: list[FeatureInfo], num_classes: int, learnable_upsampling: bool = True) -> Head:
    """FCN-8s fusing strides 32, 16, 8 by concatenation + 1x1 conv (instead of a sum of scores)."""
    return ConcatFusionHead(feature_info, num_classes, (32, 16, 8), learnable_upsampling)


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("tinyres", tinyres)


@hookimpl
def segzoo_register_heads(registrar):
    registrar.head("fcn8s-cat", fcn8s_cat, strides=(32, 16, 8))


@hookimpl
def segzoo_register_recipes(registrar):
    registrar.recipe("tinyres-fcn8s-cat", {
        "backbone": "tinyres", "head": "fcn8s-cat", "num_classes": 21, "input_size": [3, 256, 256],
        "backbone_kwargs": {"width": 16}, "description": "the example plugin's parts together",
    })
