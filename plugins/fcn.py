"""The FCN heads (Long, Shelhamer, Darrell 2015): FCN-32s, -16s, -8s and -4s, defined by stride.

Scores are computed at the coarsest stride, brought up 2x at a time by transposed convs initialised
to bilinear interpolation, summed with a 1x1 score of each finer skip (zero-initialised, so a fresh
net starts from the coarser net's predictions), and finally upsampled to the input's size.
"""

from __future__ import annotations

import torch
from torch import nn

from segzoo import FeatureInfo, Head, InputError, hookimpl
from segzoo.layers import BilinearUpsample, fit_to

FUSIONS = {"fcn32s": (32,), "fcn16s": (32, 16), "fcn8s": (32, 16, 8), "fcn4s": (32, 16, 8, 4)}


def score_layer(in_channels: int, num_classes: int, zero: bool) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, 1)
    if zero:
        nn.init.zeros_(conv.weight)
    else:
        nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class FCNHead(Head):
    """Score the coarsest features, then for each finer stride: upscore 2x, add that skip's score.

    ``learnable_upsampling=False`` freezes every transposed conv at bilinear interpolation.
    """

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, strides: tuple[int, ...],
                 learnable_upsampling: bool = True):
        super().__init__()
        channels = {f.stride: f.channels for f in feature_info}
        missing = [s for s in strides if s not in channels]
        if missing:
            raise InputError(f"this head fuses strides {list(strides)} but the backbone provides only "
                             f"{sorted(channels)} (missing {missing}); use a head with fewer skips, e.g. fcn32s")
        self.strides, self.num_classes = tuple(strides), num_classes
        self.score_fr = score_layer(channels[strides[0]], num_classes, zero=False)
        self.score_skip = nn.ModuleDict(
            {str(s): score_layer(channels[s], num_classes, zero=True) for s in strides[1:]})
        self.upscore_skip = nn.ModuleDict(
            {str(s): BilinearUpsample(num_classes, prev // s, learnable_upsampling)
             for prev, s in zip(strides, strides[1:])})
        self.upscore = BilinearUpsample(num_classes, strides[-1], learnable_upsampling)

    def forward(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.score_fr(features[self.strides[0]])
        for s in self.strides[1:]:
            skip = self.score_skip[str(s)](features[s])
            x = fit_to(self.upscore_skip[str(s)](x), skip.shape[-2:]) + skip
        return fit_to(self.upscore(x), size)


def make_factory(name: str, strides: tuple[int, ...]):
    def factory(feature_info: list[FeatureInfo], num_classes: int, learnable_upsampling: bool = True) -> FCNHead:
        return FCNHead(feature_info, num_classes, strides, learnable_upsampling)

    fused = ", ".join(map(str, strides))
    factory.__doc__ = f"FCN-{strides[-1]}s: fuses strides {fused}; upsamples {strides[-1]}x at the end"
    return factory


@hookimpl
def segzoo_register_heads(registrar):
    for name, strides in FUSIONS.items():
        registrar.head(name, make_factory(name, strides))
