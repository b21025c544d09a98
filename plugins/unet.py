"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015) next to FCN: a decoder that concatenates features, not scores.

Two designs, registered through the same hooks as any third party's:

- ``unet``: a decoder for every backbone. It reads every level the backbone has (a :class:`segzoo.Strides` rule,
  so it adapts: vgg16 2-32, alexnet 4-32, timm by reduction) and, from the coarsest level down to the finest,
  upsamples (a 2x2 transposed conv for a 2x step; bilinear + 1x1 conv where strides differ by more, straight to
  the skip's size), concatenates the skip's features and applies two 3x3 conv + norm + ReLU blocks; a 1x1 conv
  gives the classes and a bilinear upsampling the input's size. GroupNorm by default: BatchNorm at batch 1 on a
  1x1 map cannot train, and ``check-plugin`` trains at batch 1 on the smallest input.
- ``unet-classic``: the paper's own network on the ``unet-encoder`` backbone: 64-128-256-512-1024 channels,
  unpadded ("valid") 3x3 convs, 2x2 max pools, 2x2 up-convs, crop-and-concat, a 1x1 conv to the classes. Its
  output is a centred window of its input (572 -> 388); it takes only the input sizes that geometry allows
  (188 + 16k at depth 4) and refuses others with the nearest ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segzoo import Backbone, FeatureInfo, Head, InputError, SegzooError, Strides, hookimpl
from segzoo.core.batch import Window
from segzoo.core.layers import fit_to
from segzoo.core.model import check_geometry

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's Unet default, one width per step, coarse to fine
NORMS = ("group", "batch", "none")
UPSAMPLES = ("transposed", "bilinear")
# every level the backbone has, down to stride 1; at least two, or there is nothing to concatenate
UNET_STRIDES = Strides.every(min=1, levels=2)
CLASSIC_DEPTH = 4
CLASSIC_WIDTH = 64
# the paper's network reads every level of its encoder, down to the full-resolution one
CLASSIC_STRIDES = Strides.every(min=1, levels=2, required=(1,))
NO_CAFFE = "; geometry 'caffe' is FCN's reference nets (the U-Net paper's own grids are unet-encoder's)"


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The decoder's norm: GroupNorm (8 groups or fewer; batch-size independent), BatchNorm or none."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def conv_block(in_channels: int, out_channels: int, norm: str = "group", padding: int = 1) -> nn.Sequential:
    """Two 3x3 conv + norm + ReLU (``padding=0``: the paper's valid convs, each losing a pixel per side)."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=norm == "none"),
                   norm_layer(norm, out_channels), nn.ReLU(inplace=True)]
    for m in layers:
        if isinstance(m, nn.Conv2d) and not m.weight.is_meta:  # He et al.'s init, the paper's "std sqrt(2/N)"
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def _widths(decoder_channels: int | Sequence[int], steps: int) -> list[int]:
    widths = [decoder_channels] * steps if isinstance(decoder_channels, int) else list(decoder_channels)
    if len(widths) < steps or not all(isinstance(c, int) and c >= 1 for c in widths):
        raise SegzooError(f"head 'unet': decoder_channels needs {steps} positive widths (one per upsampling step on "
                          f"this backbone, coarse to fine), got {decoder_channels!r}; pass e.g. "
                          f"{list(DECODER_CHANNELS[:steps]) + [16] * max(0, steps - len(DECODER_CHANNELS))}")
    return widths[:steps]


class Up(nn.Module):
    """One decoder step: bring the coarser map to the skip's grid, concatenate the skip, two conv blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, factor: int, norm: str,
                 upsample: str):
        super().__init__()
        self.transposed = upsample == "transposed" and factor == 2
        self.up = (nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2) if self.transposed
                   else nn.Conv2d(in_channels, out_channels, 1))
        self.block = conv_block(out_channels + skip_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            x = fit_to(self.up(x), skip.shape[-2:])  # 2 ceil(n / 2s) is ceil(n / s) or one more: trim it
        else:
            x = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.block(torch.cat([x, skip], 1))


class UNetHead(Head):
    """U-Net's decoder on any backbone: every level it has, coarsest to finest, fused by concatenation."""

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int,
                 decoder_channels: int | Sequence[int] = DECODER_CHANNELS, norm: str = "group",
                 upsample: str = "transposed", rule: Strides = UNET_STRIDES):
        super().__init__()
        if norm not in NORMS:
            raise SegzooError(f"head 'unet': norm {norm!r} is not one of {list(NORMS)}")
        if upsample not in UPSAMPLES:
            raise SegzooError(f"head 'unet': upsample {upsample!r} is not one of {list(UPSAMPLES)}")
        if not rule.fits(feature_info):
            raise InputError(f"head 'unet' reads {rule}, but the backbone has strides "
                             f"{sorted(f.stride for f in feature_info)}")
        channels = {f.stride: f.channels for f in feature_info}
        self.strides, self.num_classes = rule.select(feature_info), num_classes
        widths = _widths(decoder_channels, len(self.strides) - 1)
        self.ups = nn.ModuleList()
        c = channels[self.strides[0]]
        for width, coarse, fine in zip(widths, self.strides, self.strides[1:]):
            self.ups.append(Up(c, channels[fine], width, coarse // fine, norm, upsample))
            c = width
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[self.strides[0]]
        for up, stride in zip(self.ups, self.strides[1:]):
            x = up(x, features[stride])
        x = self.classifier(x)
        if self.strides[-1] > 1:  # by the stride's factor, then trimmed: a size-based resize would fix a traced size
            x = F.interpolate(x, scale_factor=self.strides[-1], mode="bilinear", align_corners=False)
        return fit_to(x, size)


def unet(feature_info: list[FeatureInfo], num_classes: int, decoder_channels: int | Sequence[int] = DECODER_CHANNELS,
         norm: str = "group", upsample: str = "transposed", geometry: str = "modern") -> UNetHead:
    """U-Net decoder: every backbone level, coarse to fine, upsampled and concatenated; adapts to the backbone"""
    check_geometry("head 'unet'", geometry, ("modern",), hint=NO_CAFFE)
    return UNetHead(feature_info, num_classes, decoder_channels, norm, upsample)


# -- the paper's network: valid convs, crop-and-concat ---------------------------------------------------------------

def classic_plan(n: int, depth: int = CLASSIC_DEPTH) -> tuple[list[int], int] | None:
    """For a side of ``n`` pixels: the encoder's map sizes (each level after its two valid convs) and the output
    side; ``None`` when a pool would meet an odd map (the paper: "select the input tile size such that all 2x2
    max-pooling operations are applied to a layer with an even x- and y-size") or a map would vanish."""
    sizes, x = [], n
    for _ in range(depth):
        x -= 4
        if x < 2 or x % 2:
            return None
        sizes.append(x)
        x //= 2
    x -= 4
    if x < 1:
        return None
    for skip in reversed(sizes):
        x = 2 * x - 4  # the up-conv doubles; the skip is cropped to it (both even, so centred); two convs
        if x < 1 or x + 4 > skip:
            return None
    return sizes, x


def nearest_classic(n: int, depth: int = CLASSIC_DEPTH) -> list[int]:
    """The valid sides nearest ``n`` (below and above; just above when none is below)."""
    below = next((k for k in range(n, 0, -1) if classic_plan(k, depth)), None)
    above = next(k for k in range(n, n + 2 ** (depth + 1) + 400) if classic_plan(k, depth))
    return sorted({k for k in (below, above) if k is not None})


def check_classic_size(h: int, w: int, depth: int = CLASSIC_DEPTH) -> tuple[int, int]:
    """The output size for an input of ``h`` x ``w``, or an InputError naming the nearest sizes it takes."""
    plans = [classic_plan(n, depth) for n in (h, w)]
    ph, pw = plans
    if ph is not None and pw is not None:
        return ph[1], pw[1]
    bad = [n for n, p in zip((h, w), plans) if p is None]
    hints = "; ".join(f"for {n} use {' or '.join(map(str, nearest_classic(n, depth)))}" for n in dict.fromkeys(bad))
    smallest = nearest_classic(1, depth)[0]
    raise InputError(f"input {h}x{w} does not fit U-Net's valid geometry (depth {depth}: every 2x2 pool needs an "
                     f"even map, so sides are {smallest} + {2 ** depth}k): {hints}; pad or crop the image, or "
                     "predict it tiled (segzoo predict --tile)")


def classic_levels(width: int, depth: int) -> list[FeatureInfo]:
    """The encoder's levels: stride 2^i, ``width`` * 2^i channels, and the grid offset its valid convs give."""
    centre, info = 0.0, []
    for i in range(depth + 1):
        stride = 2 ** i
        if i:
            centre += stride / 4  # a 2x2 pool centres its cell between two finer ones
        centre += 2 * stride  # two valid 3x3 convs move cell 0 in by one cell each
        info.append(FeatureInfo(stride, width * stride, centre - (stride - 1) / 2))
    return info


class UNetEncoder(Backbone):
    """The paper's contracting path: per level two valid 3x3 conv + ReLU, then a 2x2 max pool; ``width`` doubles per
    level (64 ... 1024 at depth 4). Level i is returned at stride 2^i with the grid offset its valid convs give
    (cell 0 of the full-resolution level is centred on input pixel 2), so the declared grids are the true ones."""

    def __init__(self, width: int = CLASSIC_WIDTH, depth: int = CLASSIC_DEPTH, in_chans: int = 3):
        super().__init__()
        if not (isinstance(width, int) and width >= 1 and isinstance(depth, int) and 1 <= depth <= 6):
            raise SegzooError(f"backbone 'unet-encoder': width must be >= 1 and depth 1-6, got {width}, {depth}")
        self.depth = depth
        self.levels = nn.ModuleList(
            [conv_block(in_chans if i == 0 else width * 2 ** (i - 1), width * 2 ** i, norm="none", padding=0)
             for i in range(depth + 1)])
        self.feature_info = classic_levels(width, depth)
        self.min_input_size = nearest_classic(1, depth)[0]

    def check_size(self, height: int, width: int) -> None:
        check_classic_size(height, width, self.depth)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out = {}
        for i, level in enumerate(self.levels):
            if i:
                x = F.max_pool2d(x, 2)
            x = level(x)
            out[2 ** i] = x
        return out


def unet_encoder(weights: str | None = None, width: int = CLASSIC_WIDTH, depth: int = CLASSIC_DEPTH,
                 in_chans: int = 3, geometry: str = "modern") -> UNetEncoder:
    """U-Net's contracting path (valid convs, strides 1-16): the backbone of unet-classic; trained from scratch"""
    check_geometry("backbone 'unet-encoder'", geometry, ("modern",), hint=NO_CAFFE)
    if weights is not None:
        raise SegzooError("backbone 'unet-encoder' has no pretrained weights (the paper trains it from scratch); "
                          "leave backbone_weights unset")
    return UNetEncoder(width, depth, in_chans)


def centre_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size`` of ``x``'s last two dims (the paper's crop before concatenation)."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


class UNetClassicHead(Head):
    """The paper's expansive path: 2x2 up-conv halving the channels, crop-and-concat, two valid 3x3 conv + ReLU; a
    1x1 conv to the classes. Its output is the centred window :meth:`output_window` gives."""

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int):
        super().__init__()
        if not CLASSIC_STRIDES.fits(feature_info):
            raise InputError(f"head 'unet-classic' reads {CLASSIC_STRIDES}; the backbone has strides "
                             f"{sorted(f.stride for f in feature_info)}; use the unet-classic recipe (unet-encoder)")
        self.strides, self.num_classes = CLASSIC_STRIDES.select(feature_info), num_classes
        expected = classic_levels(1, len(self.strides) - 1)
        got = sorted(feature_info, key=lambda f: f.stride)
        if [(f.stride, f.offset) for f in got if f.stride in self.strides] != [(f.stride, f.offset) for f in expected]:
            raise InputError("head 'unet-classic' crops its skips by the paper's valid geometry, which this backbone's "
                             "declared grids (FeatureInfo.offset) do not have; build it on unet-encoder (recipe "
                             "unet-classic), or use head 'unet'")
        self.depth = len(self.strides) - 1
        channels = {f.stride: f.channels for f in feature_info}
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        c = channels[self.strides[0]]
        for fine in self.strides[1:]:
            self.ups.append(nn.ConvTranspose2d(c, c // 2, 2, stride=2))
            self.blocks.append(conv_block(c // 2 + channels[fine], channels[fine], norm="none", padding=0))
            c = channels[fine]
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def output_window(self, size: Sequence[int]) -> Window:
        """The centred window of the input where the scores lie: the paper's 572 -> 388, 92 pixels in."""
        h, w = int(size[0]), int(size[1])
        return Window.centred(h, w, *check_classic_size(h, w, self.depth))

    def forward(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[self.strides[0]]
        for up, block, stride in zip(self.ups, self.blocks, self.strides[1:]):
            x = up(x)
            x = block(torch.cat([centre_crop(features[stride], x.shape[-2:]), x], 1))
        return self.classifier(x)


def unet_classic(feature_info: list[FeatureInfo], num_classes: int, geometry: str = "modern") -> UNetClassicHead:
    """The paper's U-Net decoder: valid convs, crop-and-concat; output a centred window (572 -> 388)"""
    check_geometry("head 'unet-classic'", geometry, ("modern",), hint=NO_CAFFE)
    return UNetClassicHead(feature_info, num_classes)


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("unet-encoder", unet_encoder)


@hookimpl
def segzoo_register_heads(registrar):
    registrar.head("unet", unet, strides=UNET_STRIDES)
    registrar.head("unet-classic", unet_classic, strides=CLASSIC_STRIDES)
