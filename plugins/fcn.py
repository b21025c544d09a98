"""The FCN heads (Long, Shelhamer, Darrell 2015): FCN-32s, -16s, -8s, -4s and FCN-8s at once, defined by stride.

Scores are computed at the coarsest stride, brought up 2x at a time by transposed convs initialised
to bilinear interpolation, summed with a 1x1 score of each finer skip (zero-initialised, so a fresh
net starts from the coarser net's predictions), and finally upsampled to the input's size.

How maps of different strides are aligned is the geometry's business (an alignment object): the
modern one trims top-left-aligned maps; the paper's ("caffe") crops at offsets derived from the
grids the backbone declares, as Caffe's crop layer did, so the published weights give the port's outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from segzoo import FeatureInfo, Head, InputError, hookimpl
from segzoo.errors import SegzooError
from segzoo.layers import BilinearUpsample, bilinear_kernel, crop, fit_to, grid_upsampled
from segzoo.model import check_geometry

FUSIONS = {"fcn32s": (32,), "fcn16s": (32, 16), "fcn8s": (32, 16, 8), "fcn4s": (32, 16, 8, 4)}
# FCN-8s trained "at once" (all skips from the start): pool4 and pool3 are scaled before their score
# layers so that their raw magnitudes (larger than fc7's) do not swamp the coarse scores.
AT_ONCE_SCALES = {16: 0.01, 8: 0.0001}


def score_layer(in_channels: int, num_classes: int, zero: bool) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, 1)
    if zero:
        nn.init.zeros_(conv.weight)
    else:
        nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class ModernAlignment:
    """Top-left-aligned maps: replicate-padded bilinear upsampling, then trim the far edges to size."""

    def __init__(self, feature_info: list[FeatureInfo], strides: tuple[int, ...]):
        pass

    def upsample(self, channels: int, coarse: int, fine: int, learnable: bool) -> nn.Module:
        return BilinearUpsample(channels, coarse // fine, learnable)

    def fuse(self, up: torch.Tensor, skip: torch.Tensor, stride: int) -> torch.Tensor:
        return fit_to(up, skip.shape[-2:]) + skip

    def finish(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return fit_to(x, size)


class CaffeAlignment:
    """The paper's nets: unpadded transposed convs, and crops at offsets derived from the backbone's grids.

    Following Caffe's ``coord_map``, each upsampling moves the coarse grid (``FeatureInfo.centre``)
    onto the finer one; the skip's score is cropped where the two grids coincide, and the final map
    where it meets the input's. The kernel is 2f, or 2f - 1 where only that makes the offset whole
    (FCN-AlexNet's 63). For the paper's VGG16 this gives crops 19 (32s), 5 and 27 (16s), 5, 9 and 31 (8s).
    ``kernels[s]`` and ``crops[s]`` belong to the step that reaches stride s; s = 1 is the input.
    """

    def __init__(self, feature_info: list[FeatureInfo], strides: tuple[int, ...]):
        grids = {f.stride: f.centre for f in feature_info}
        self.kernels: dict[int, int] = {}
        self.crops: dict[int, int] = {}
        stride, centre = strides[0], grids[strides[0]]
        for fine in (*strides[1:], 1):
            self.kernels[fine], self.crops[fine], centre = self._plan(stride, centre, fine, grids.get(fine, 0.0))
            stride = fine

    @staticmethod
    def _plan(coarse: int, centre: float, fine: int, target: float) -> tuple[int, int, float]:
        """The kernel, the crop offset and the upsampled grid's centre for one coarse -> fine step."""
        factor = coarse // fine
        for kernel in (2 * factor, 2 * factor - 1):
            _, up = grid_upsampled(coarse, centre, kernel, factor)
            # A skip's score is cropped to the upsampled map; at the input, the upsampled map is cropped.
            offset = (up - target) / fine if fine > 1 else target - up
            if offset >= 0 and offset == int(offset):
                return kernel, int(offset), up
        raise SegzooError(
            f"geometry 'caffe': no upsampling from stride {coarse} to {fine} lands on a whole-pixel crop of this "
            f"backbone's grids (centres {centre} and {target}); use geometry='modern' or a head with fewer skips"
        )

    def upsample(self, channels: int, coarse: int, fine: int, learnable: bool) -> nn.Module:
        kernel, factor = self.kernels[fine], coarse // fine
        deconv = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, bias=False)
        with torch.no_grad():
            deconv.weight.copy_(bilinear_kernel(channels, factor, kernel))
        deconv.weight.requires_grad_(learnable)
        return deconv

    def fuse(self, up: torch.Tensor, skip: torch.Tensor, stride: int) -> torch.Tensor:
        return up + self._crop(skip, self.crops[stride], up.shape[-2:])

    def finish(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self._crop(x, self.crops[1], size)

    @staticmethod
    def _crop(x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
        try:
            return crop(x, offset, size)
        except ValueError as exc:
            raise InputError(f"geometry 'caffe': {exc}; the backbone's maps do not match its declared grids") from exc


ALIGNMENTS = {"modern": ModernAlignment, "caffe": CaffeAlignment}


class FCNHead(Head):
    """Score the coarsest features, then for each finer stride: upscore 2x, add that skip's score.

    ``learnable_upsampling=False`` freezes every transposed conv at bilinear interpolation;
    ``fixed_final_upsampling=True`` freezes only the last one (``upscore``), the CVPR paper's setting
    (its 2x upsamplings learned, the final one fixed); ``zero_init_scores=True`` starts ``score_fr`` at
    zero as well as the skip scores (Caffe's constant filler, as both of the paper's solvers did; by
    default it is drawn from N(0, 0.01) so a fresh net's features reach the loss);
    ``skip_scales`` multiplies a skip's features before its score layer (FCN-8s at once).
    """

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int, strides: tuple[int, ...],
                 learnable_upsampling: bool = True, skip_scales: dict[int, float] | None = None,
                 geometry: str = "modern", fixed_final_upsampling: bool = False, zero_init_scores: bool = False):
        super().__init__()
        channels = {f.stride: f.channels for f in feature_info}
        missing = [s for s in strides if s not in channels]
        if missing:
            raise InputError(f"this head fuses strides {list(strides)} but the backbone provides only "
                             f"{sorted(channels)} (missing {missing}); use a head with fewer skips, e.g. fcn32s")
        self.strides, self.num_classes = tuple(strides), num_classes
        self.alignment = ALIGNMENTS[geometry](feature_info, self.strides)
        self.skip_scales = {s: float((skip_scales or {}).get(s, 1.0)) for s in strides[1:]}
        self.score_fr = score_layer(channels[strides[0]], num_classes, zero=zero_init_scores)
        self.score_skip = nn.ModuleDict(
            {str(s): score_layer(channels[s], num_classes, zero=True) for s in strides[1:]})
        self.upscore_skip = nn.ModuleDict(
            {str(s): self.alignment.upsample(num_classes, prev, s, learnable_upsampling)
             for prev, s in zip(strides, strides[1:])})
        self.upscore = self.alignment.upsample(num_classes, strides[-1], 1,
                                               learnable_upsampling and not fixed_final_upsampling)

    def forward(self, features: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.score_fr(features[self.strides[0]])
        for s in self.strides[1:]:
            skip = self.score_skip[str(s)](self._scaled(features[s], s))
            x = self.alignment.fuse(self.upscore_skip[str(s)](x), skip, s)
        return self.alignment.finish(self.upscore(x), size)

    def _scaled(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        scale = self.skip_scales[stride]
        return x if scale == 1.0 else x * scale


def make_factory(name: str, strides: tuple[int, ...], skip_scales: dict[int, float] | None = None):
    def factory(feature_info: list[FeatureInfo], num_classes: int, learnable_upsampling: bool = True,
                geometry: str = "modern", fixed_final_upsampling: bool = False,
                zero_init_scores: bool = False) -> FCNHead:
        check_geometry(f"head '{name}'", geometry)
        return FCNHead(feature_info, num_classes, strides, learnable_upsampling, skip_scales, geometry,
                       fixed_final_upsampling, zero_init_scores)

    fused = ", ".join(map(str, strides))
    factory.__doc__ = f"FCN-{strides[-1]}s: fuses strides {fused}; upsamples {strides[-1]}x at the end"
    if skip_scales:
        scaled = ", ".join(f"stride {s} x{k:g}" for s, k in skip_scales.items())
        factory.__doc__ = f"FCN-{strides[-1]}s at once: fuses strides {fused}, skips scaled ({scaled})"
    return factory


@hookimpl
def segzoo_register_heads(registrar):
    for name, strides in FUSIONS.items():
        registrar.head(name, make_factory(name, strides))
    registrar.head("fcn8s-atonce", make_factory("fcn8s-atonce", FUSIONS["fcn8s"], AT_ONCE_SCALES))
