"""The FCN heads (Long, Shelhamer, Darrell 2015): FCN-32s, -16s, -8s, -4s and FCN-8s at once, defined by stride.

Scores are computed at the coarsest stride, brought up 2x at a time by transposed convs initialised
to bilinear interpolation, summed with a 1x1 score of each finer skip (zero-initialised, so a fresh
net starts from the coarser net's predictions), and finally upsampled to the input's size.

How maps of different strides are aligned is the geometry's business (an alignment object): the
modern one trims top-left-aligned maps; the paper's ("caffe") crops at offsets derived from the
grids the backbone declares, as Caffe's crop layer did, so the published weights give the port's outputs.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from segzoo import (
    CheckpointError,
    FeatureInfo,
    Head,
    InputError,
    Preset,
    SegmentationModel,
    SegzooError,
    WeightLayout,
    check_fits,
    hookimpl,
)
from segzoo.core.layers import BilinearUpsample, bilinear_kernel, crop, fit_to, grid_upsampled
from segzoo.core.model import check_geometry

FUSIONS = {"fcn32s": (32,), "fcn16s": (32, 16), "fcn8s": (32, 16, 8), "fcn4s": (32, 16, 8, 4)}
# Backbones that stop at one coarsest stride finer than 32 (a ViT: stride 16 only; a dilated net: 8) get an FCN
# on that stride alone: one score layer and one upsampling, which is FCN-32s's design at their stride.
SINGLES = {"fcn16s-single": (16,), "fcn8s-single": (8,)}
# Staged training fine-tunes each net from the next coarser one (the paper: 32s -> 16s -> 8s).
PARENTS = {"fcn16s": "fcn32s", "fcn8s": "fcn16s", "fcn4s": "fcn8s"}
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
            heads = {**FUSIONS, **SINGLES}
            fits = sorted((n for n, s in heads.items() if set(s) <= set(channels) and s != strides),
                          key=lambda n: (max(heads[n]) != max(channels), -len(heads[n])))
            fix = f"use a head that reads only those strides, e.g. {', '.join(fits[:3])}" if fits else (
                "no FCN head reads only those strides")
            raise InputError(f"this head fuses strides {list(strides)} but the backbone provides only "
                             f"{sorted(channels)} (missing {missing}); {fix}")
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
    if name in SINGLES:
        factory.__doc__ = (f"FCN on stride {strides[0]} alone (one score layer, {strides[0]}x upsampling): for "
                           f"backbones whose coarsest stride is {strides[0]}, e.g. timm ViTs")
    if skip_scales:
        scaled = ", ".join(f"stride {s} x{k:g}" for s, k in skip_scales.items())
        factory.__doc__ = f"FCN-{strides[-1]}s at once: fuses strides {fused}, skips scaled ({scaled})"
    return factory


# -- the published FCN weights: torchfcn's layout ---------------------------------------------------------------
# The PyTorch port distributes the Caffe-trained FCN weights (keys conv1_1.weight ... fc7.*, score_fr.*,
# score_pool4.*, upscore2.weight ...). They belong to the paper's geometry (geometry="caffe") and to BGR 0-255
# input minus the Caffe mean, which the caffe-geometry backbones put in the recipe's normalization.
# torchfcn's names for VGG16's 13 convs, in order, and for the FCN head's layers (segzoo module -> torchfcn).
VGG16_CONVS = tuple(f"conv{block}_{i}" for block, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1))
TORCHFCN_HEAD = {
    "backbone.fc6": "fc6", "backbone.fc7": "fc7", "head.score_fr": "score_fr",
    "head.score_skip.16": "score_pool4", "head.score_skip.8": "score_pool3",
    "head.upscore_skip.16": "upscore2", "head.upscore_skip.8": "upscore_pool4",
}
TORCHFCN_FINAL = {32: "upscore", 16: "upscore16", 8: "upscore8"}  # the last upsampling, by the head's finest stride
TORCHFCN_HEADS = {"upscore8": "fcn8s", "upscore16": "fcn16s", "upscore": "fcn32s"}  # how a file shows its head
def from_torchfcn(model: SegmentationModel, state: dict[str, torch.Tensor],
                  path: str | os.PathLike[str] = "weights") -> dict[str, torch.Tensor]:
    """torchfcn's state dict renamed to ``model``'s keys, after checking that every key and shape fits."""
    geometry = model.recipe.geometry
    if geometry != "caffe":
        raise CheckpointError(
            f"{path} holds torchfcn's FCN weights, which belong to the paper's geometry, but the model was built "
            f"with geometry '{geometry}'; build it with geometry='caffe' (segzoo convert --from torchfcn does)"
        )
    names = torchfcn_names(model)
    own = model.state_dict()
    expected = {names[k]: v for k, v in own.items()}
    check_fits(expected, state, path, "torchfcn", _torchfcn_hint(model, state))
    return {k: state[names[k]] for k in own}


def torchfcn_names(model: SegmentationModel) -> dict[str, str]:
    """segzoo key -> torchfcn key for every weight of a caffe-geometry VGG16 FCN-32s, -16s or -8s (at once too)."""
    features = getattr(model.backbone, "features", None)
    convs = [n for n, m in features.named_children() if isinstance(m, nn.Conv2d)] if features is not None else []
    strides = tuple(getattr(model.head, "strides", ()))
    if len(convs) != len(VGG16_CONVS) or not strides or strides[-1] not in TORCHFCN_FINAL \
            or not set(strides) <= set(TORCHFCN_FINAL):
        raise CheckpointError(
            f"torchfcn's weights are VGG16 FCN-32s, -16s or -8s; '{model.recipe.name}' is not one of "
            "them: build vgg16-fcn32s, vgg16-fcn16s, vgg16-fcn8s or vgg16-fcn8s-atonce"
        )
    modules = {f"backbone.features.{i}": name for i, name in zip(convs, VGG16_CONVS)}
    modules.update(TORCHFCN_HEAD, **{"head.upscore": TORCHFCN_FINAL[strides[-1]]})
    names = {}
    for key in model.state_dict():
        module, _, param = key.rpartition(".")
        if module not in modules:
            raise CheckpointError(f"'{key}' of this model has no counterpart in torchfcn's layout")
        names[key] = f"{modules[module]}.{param}"
    return names


def to_torchfcn(model: SegmentationModel) -> dict[str, torch.Tensor]:
    """The model's weights in torchfcn's layout (the inverse of :func:`from_torchfcn`)."""
    names = torchfcn_names(model)
    return {names[k]: v.detach().clone() for k, v in model.state_dict().items()}


def _torchfcn_hint(model: SegmentationModel, state: dict[str, torch.Tensor]) -> str:
    hints = []
    final = next((k for k in TORCHFCN_HEADS if f"{k}.weight" in state), None)
    if final and final != TORCHFCN_FINAL[model.head.strides[-1]]:
        head = TORCHFCN_HEADS[final]
        hints.append(f"the file is an FCN-{head[3:]} (its last upsampling is {final}): build vgg16-{head}")
    score = state.get("score_fr.weight")
    if score is not None and score.shape[0] != model.num_classes:
        hints.append(f"it scores {score.shape[0]} classes, not {model.num_classes}: pass num_classes={score.shape[0]}")
    return f"; {'; '.join(hints)}" if hints else ""



def torchfcn_detect(state) -> bool:
    """torchfcn's files name VGG16's first conv and the coarse score layer this way."""
    return {"conv1_1.weight", "score_fr.weight"} <= set(state)


def torchfcn_build_options(state) -> dict:
    """What a torchfcn file needs to be built: its classes (the rows of score_fr), caffe geometry, its fc width."""
    fc = state.get("fc7.weight")
    return {"num_classes": int(state["score_fr.weight"].shape[0]), "geometry": "caffe",
            "backbone_kwargs": {"fc_channels": int(fc.shape[0])} if fc is not None else {}}


TORCHFCN = WeightLayout(
    detect=torchfcn_detect, to_model=lambda model, state, path: from_torchfcn(model, state, path),
    from_model=lambda model: to_torchfcn(model), build_options=torchfcn_build_options,
    description="the published FCN weights as the PyTorch port distributes them (conv1_1.*, score_fr.*)",
)


@hookimpl
def segzoo_register_heads(registrar):
    for name, strides in FUSIONS.items():
        registrar.head(name, make_factory(name, strides), strides=strides, parent=PARENTS.get(name))
    registrar.head("fcn8s-atonce", make_factory("fcn8s-atonce", FUSIONS["fcn8s"], AT_ONCE_SCALES),
                   strides=FUSIONS["fcn8s"])
    for name, strides in SINGLES.items():
        registrar.head(name, make_factory(name, strides), strides=strides)


@hookimpl
def segzoo_register_weight_layouts(registrar):
    registrar.weight_layout("torchfcn", TORCHFCN)



# -- the paper's two training settings ---------------------------------------------------------------------------
# docs/paper.md says which produced which table.
#
# - paper-cvpr: the CVPR 2015 paper (Sec. 4.3, Optimization; Sec. 4.2 for the skips): minibatches of 20,
#   momentum 0.9, a per-pixel averaged loss, lr 1e-4 for FCN-VGG16 (1e-3 for FCN-AlexNet), score layers
#   zero-initialised, biases at twice the lr (the "paper" optimizer), and the lr divided by 100 for the skip
#   nets, each fine-tuned from the coarser one. Its 2x upsamplings are learned, the final one fixed to bilinear.
# - paper-heavy: the reference implementation's solvers (fcn.berkeleyvision.org voc-fcn*/solver.prototxt),
#   described in the PAMI 2016 paper: one image per batch, momentum 0.99 and the loss *summed* over pixels
#   (unnormalised), hence the tiny rates (1e-10, 1e-12, 1e-14), with every upsampling fixed. The published
#   PASCAL weights (geometry="caffe" + torchfcn's files) were trained this way.
PRESETS = {
    "paper-heavy": Preset(
        description="PAMI / reference solvers: batch 1, summed loss, momentum 0.99, fixed upsampling",
        settings={"batch_size": 1, "loss_reduction": "sum", "optimizer": "paper", "momentum": 0.99,
                  "weight_decay": 5e-4, "geometry": "caffe"},
        lr={"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10},
        # every transposed conv stays bilinear (lr_mult 0); Caffe's constant-0 filler for every score layer
        head_kwargs={"learnable_upsampling": False, "fixed_final_upsampling": True, "zero_init_scores": True},
        staged=True,
    ),
    "paper-cvpr": Preset(
        description="CVPR 2015: batch 20, averaged loss, momentum 0.9, lr 1e-4 (VGG16), /100 for skip nets",
        # weight decay: the paper's "5^-4 or 2^-4" (5e-4 or 2e-4), "training insensitive to these"
        settings={"batch_size": 20, "loss_reduction": "mean", "optimizer": "paper", "momentum": 0.9,
                  "weight_decay": 5e-4, "geometry": "caffe"},
        lr={"fcn32s": 1e-4, "fcn16s": 1e-6, "fcn8s": 1e-6},
        lr_by_model={"alexnet-fcn32s": 1e-3},  # chosen by line search per classifier (GoogLeNet: 5e-5)
        # 2x upsamplings learned from bilinear, the final one fixed; "random initialization yielded neither
        # better performance nor faster convergence" for the score layers
        head_kwargs={"learnable_upsampling": True, "fixed_final_upsampling": True, "zero_init_scores": True},
        staged=True,
    ),
}


@hookimpl
def segzoo_register_presets(registrar):
    for name, preset in PRESETS.items():
        registrar.preset(name, preset)
