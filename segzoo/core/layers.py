"""Small building blocks shared by plugins: bilinear upsampling, size alignment, fc→conv."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .accel import GemmConv2d
from .errors import SegzooError
from .model import CAFFE_NORM, Backbone, FeatureInfo
from .tracing import tracing


def bilinear_kernel(channels: int, factor: int, size: int | None = None) -> torch.Tensor:
    """A (channels, channels, size, size) transposed-conv weight doing per-channel bilinear upsampling.

    The filter is FCN's ``upsample_filt``: ``1 - |k - centre| / f`` with the centre at ``f - 0.5``
    (even sizes, the default ``2f``) or ``f - 1`` (odd sizes, e.g. FCN-AlexNet's 63); with ``size=2f``
    it is exactly ``F.interpolate(..., align_corners=False)`` when the conv is padded by ``f / 2``.
    Off-diagonal (cross-channel) taps are zero, so each class is upsampled on its own.
    """
    size = 2 * factor if size is None else size
    centre = factor - 0.5 if size % 2 == 0 else factor - 1
    taps = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    filt = (taps[:, None] * taps[None, :]).to(torch.float32)
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = filt
    return weight


class BilinearUpsample(nn.Module):
    """Upsample by an even integer factor with a transposed conv initialised to bilinear.

    The input is replicate-padded by one coarse pixel and the extra fine pixels are cropped by the
    conv's own padding, so at initialisation the output equals ``F.interpolate(mode="bilinear",
    align_corners=False)`` everywhere, borders included (a zero-padded deconv would fade the scores
    towards the image edges). ``learnable=False`` freezes the kernel, as in the paper's final layers;
    a frozen kernel that is still exactly bilinear is then computed by ``F.interpolate`` itself, which
    does per channel what the dense C x C kernel does with C^2 taps (the weight stays in the state dict).
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True):
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"bilinear upsampling needs an even factor >= 2, got {factor}")
        self.factor = factor
        self.deconv = nn.ConvTranspose2d(
            channels, channels, 2 * factor, stride=factor, padding=factor + factor // 2, bias=False
        )
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(channels, factor))
        self.deconv.weight.requires_grad_(learnable)
        self._bilinear_at: tuple[int, int] | None = None  # (data_ptr, version) last found exactly bilinear

    def is_fixed_bilinear(self) -> bool:
        """Frozen and still exactly the bilinear kernel (rechecked only when the weight changes)."""
        w = self.deconv.weight
        if w.requires_grad:
            return False
        if tracing():  # export/compile: fake tensors have no storage; keep the answer found eagerly
            return self._bilinear_at is not None
        key = (w.data_ptr(), w._version)
        if self._bilinear_at != key:
            exact = w.device.type != "meta" and torch.equal(w, bilinear_kernel(w.shape[0], self.factor).to(w))
            self._bilinear_at = key if exact else None
        return self._bilinear_at == key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_fixed_bilinear():
            return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        if torch.compiler.is_compiling():  # inductor's replication_pad2d_backward fails its own stride check
            return self.deconv(_take(x, -1, (x.shape[-2] + 2, x.shape[-1] + 2)))  # the same pad, by gathers
        return self.deconv(F.pad(x, (1, 1, 1, 1), mode="replicate"))


class CeilMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(..., ceil_mode=True)`` that a tracer sees as a floor-mode pool of an input padded with -inf.

    Ceil mode's size rule (drop a last window that starts in the padding) makes ``torch.export`` guard on
    every height and width; padding the far edges by ``stride - 1`` and pooling in floor mode gives the
    same windows and values without a guard. Eager calls run the ordinary ceil-mode pool. The module has no
    weights, so swapping it in changes no state dict; it is still a ``MaxPool2d`` for :func:`grid_through`.
    """

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__(kernel_size, stride, padding, ceil_mode=True)
        k, t = _first(self.kernel_size), _first(self.stride)
        if _first(self.padding) or k < t:
            raise ValueError("CeilMaxPool2d takes unpadded pools whose kernel is at least their stride")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not tracing():
            return super().forward(x)
        extra = _first(self.stride) - 1
        x = F.pad(x, (0, extra, 0, extra), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def fit_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (or, for a backbone that rounds sizes down, replicate-pad) the bottom/right edges to ``size``.

    Features of stride s are aligned at the top-left corner (cell j covers pixels s*j .. s*j+s-1),
    so alignment never shifts the map, it only trims or extends its far edges. Under a tracer the same
    values come from gathers (:func:`_take`), so ``torch.export`` and ONNX keep height and width dynamic.
    """
    if tracing():
        return _take(x, 0, size)
    h, w = int(size[0]), int(size[1])
    x = x[..., :h, :w]
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh > 0 or dw > 0:
        x = F.pad(x, (0, max(dw, 0), 0, max(dh, 0)), mode="replicate")
    return x


def _take(x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """Rows and columns ``offset .. offset + size - 1`` of ``x``, the edge ones repeated past the edges, by gathers.

    What a tracer sees instead of slices, comparisons and pads: no branch and no guard on the sizes,
    so the graph stays valid for every height and width (the eager path computes the same values).
    """
    rows = torch.arange(size[0], device=x.device).add(offset).clamp(0, x.shape[-2] - 1)
    cols = torch.arange(size[1], device=x.device).add(offset).clamp(0, x.shape[-1] - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def grid_through(layers: Iterable[nn.Module], stride: int = 1, centre: float = 0.0) -> tuple[int, float]:
    """Follow a feature grid through convs, pools and pads: Caffe's ``coord_map``, forwards.

    A grid is (stride, centre): cell j of the map is centred at input pixel ``stride * j + centre``.
    A k x k window with stride t and padding p moves the centre by ``stride * ((k - 1) / 2 - p)`` and
    multiplies the stride by t; point-wise layers (ReLU, dropout) pass through. Ceil mode changes a
    map's size, never its grid.
    """
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, t, p, d = (_first(getattr(m, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation"))
            centre += stride * (d * (k - 1) / 2 - p)
            stride *= t
        elif isinstance(m, nn.ZeroPad2d):
            centre -= stride * m.padding[0]  # (left, right, top, bottom): the leading pad shifts the grid
        elif isinstance(m, nn.Sequential):
            stride, centre = grid_through(m, stride, centre)
    return stride, centre


def grid_offset(layers: Iterable[nn.Module], stride: int) -> float:
    """The :class:`~segzoo.core.model.FeatureInfo` offset of the map that ``layers`` compute from the input."""
    got, centre = grid_through(layers)
    if got != stride:
        raise ValueError(f"these layers reach stride {got}, not {stride}")
    return centre - (stride - 1) / 2


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def grid_upsampled(stride: float, centre: float, kernel: int, factor: int, padding: int = 0) -> tuple[float, float]:
    """The grid after a transposed conv with this kernel, stride ``factor`` and padding (Caffe's Deconvolution map)."""
    fine = stride / factor
    return fine, centre - fine * ((kernel - 1) / 2 - padding)


def crop(x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """Caffe's crop layer: ``size`` rows and columns of ``x`` starting at ``offset`` in both axes."""
    if tracing():  # no guard on the sizes: the exported graph stays dynamic (the eager call checked them)
        return _take(x, offset, size)
    h, w = int(size[0]), int(size[1])
    if x.shape[-2] < offset + h or x.shape[-1] < offset + w:
        raise ValueError(f"cannot crop {h}x{w} at offset {offset} from a {x.shape[-2]}x{x.shape[-1]} map")
    return x[..., offset:offset + h, offset:offset + w]


def conv_from_linear(linear_weight: torch.Tensor, in_channels: int, kernel: int) -> torch.Tensor:
    """Reshape a Linear weight that read a flattened (C, k, k) map into the equivalent k x k conv weight.

    torch flattens C-major, so this is a pure view: the conv computes exactly the Linear layer when
    its window covers the same k x k map.
    """
    out_features, in_features = linear_weight.shape
    if in_features != in_channels * kernel * kernel:
        raise ValueError(
            f"a Linear layer with {in_features} inputs cannot become a {in_channels}x{kernel}x{kernel} conv"
        )
    return linear_weight.reshape(out_features, in_channels, kernel, kernel)


def convolutionalize_state_dict(
    state: Mapping[str, torch.Tensor], layouts: Mapping[str, tuple[str, str]], fc6_in_channels: int, fc6_kernel: int
) -> tuple[dict[str, torch.Tensor], str]:
    """Turn an ImageNet classifier's state dict into a convolutionalized backbone's: ``features.*`` kept,
    the classifier's two hidden layers as ``fc6``/``fc7`` convs, its final 1000-way layer dropped.

    ``layouts`` maps a layout's name to where it keeps those two layers (``{"torchvision-vgg":
    ("classifier.0", "classifier.3")}``): each backbone plugin brings its own. The layout is detected from
    the keys. Returns the new state dict and the layout's name; a ``KeyError`` when none fits.
    """
    layout = next((name for name, (a, b) in layouts.items()
                   if f"{a}.weight" in state and f"{b}.weight" in state), None)
    if layout is None:
        raise KeyError(
            "no fc6/fc7 found: expected keys of one of these layouts: "
            + ", ".join(f"{name} ({a}.weight, {b}.weight)" for name, (a, b) in layouts.items())
        )
    fc6, fc7 = layouts[layout]
    out = {k: v for k, v in state.items() if k.startswith("features.")}
    w6, w7 = state[f"{fc6}.weight"], state[f"{fc7}.weight"]
    out["fc6.weight"] = conv_from_linear(w6, fc6_in_channels, fc6_kernel) if w6.dim() == 2 else w6
    out["fc7.weight"] = conv_from_linear(w7, w7.shape[1], 1) if w7.dim() == 2 else w7
    out["fc6.bias"], out["fc7.bias"] = state[f"{fc6}.bias"], state[f"{fc7}.bias"]
    return out, layout


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB first-conv weight (out x 3 x k x k) for ``in_chans`` input channels, as timm's ``adapt_input_conv``:
    one channel gets the sum over RGB (a grey image then gives what the RGB net gave its grey version); more
    channels repeat R, G, B, R, ... scaled by 3 / in_chans, which keeps the weights' overall scale (exactly, for a
    multiple of 3: six channels holding the RGB image twice give what the RGB net gave).
    """
    if weight.shape[1] != 3:
        raise ValueError(f"adapt_input_conv widens an RGB (3-channel) conv, got {weight.shape[1]} channels")
    if in_chans == 3:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    repeat = -(-in_chans // 3)
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)


def widen_input_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of an RGB ``conv`` (of the same class) reading ``in_chans`` channels, its weight from
    :func:`adapt_input_conv`."""
    if in_chans == conv.in_channels:
        return conv
    new = type(conv)(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(conv.weight, in_chans))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def widen_normalization(norm: Mapping[str, object], in_chans: int) -> dict[str, object]:
    """A 3-channel normalization for ``in_chans`` channels: extra channels get the mean of the means and stds, and
    the channel order is kept (a BGR flip only means something for 3 channels). Measured statistics
    (``segzoo data stats``, ``train --normalization stats``) fit extra bands better."""
    norm = dict(norm)
    if in_chans == 3:
        return norm
    mean, std = list(norm["mean"]), list(norm["std"])  # type: ignore[call-overload]  # checked by the recipe
    if in_chans == 1:
        return {**norm, "mean": [sum(mean) / 3], "std": [sum(std) / 3], "bgr": False}
    return {**norm, "mean": (mean + [sum(mean) / 3] * in_chans)[:in_chans],
            "std": (std + [sum(std) / 3] * in_chans)[:in_chans], "bgr": False}


def check_fc_options(fc_channels: object, dropout: object) -> None:
    """fc6/fc7's width and dropout, checked before any layer is made: a bad value is the user's, in one line."""
    if not isinstance(fc_channels, int) or isinstance(fc_channels, bool) or not 1 <= fc_channels <= 65536:
        raise SegzooError(f"fc_channels (--fc-channels, --backbone-opt fc_channels=N) must be an integer from 1 "
                          f"to 65536, got {str(fc_channels)[:40]!r}")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise SegzooError(f"dropout (--backbone-opt dropout=P) must be a number from 0 to below 1, got "
                          f"{str(dropout)[:40]!r}")


class ConvolutionalizedClassifier(Backbone):
    """An ImageNet classifier made fully convolutional, the FCN paper's first step: ``features`` tapped at
    ``TAPS`` (index in ``features`` -> output stride), then the classifier's two hidden layers as convs,
    ``fc6`` (k x k over pool5, after the optional ``pad6``) and ``fc7`` (1 x 1), giving the stride-32 level.

    A subclass builds ``features`` and calls :meth:`make_fc` and :meth:`declare`; in the paper's ``caffe``
    geometry the grids' offsets are derived from the layers (:func:`grid_offset`), never typed in.
    """

    TAPS: dict[int, int] = {}

    def make_fc(self, in_channels: int, fc_channels: int, kernel: int, dropout: float, padding: int = 0,
                pad6: nn.Module | None = None) -> None:
        self.pad6 = pad6 if pad6 is not None else nn.Identity()
        # matrix products on CPU (segzoo.core.accel): big weights on small maps are where oneDNN loses most
        self.fc6 = GemmConv2d(in_channels, fc_channels, kernel, padding=padding)
        self.fc7 = GemmConv2d(fc_channels, fc_channels, 1)
        self.relu6, self.relu7 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.drop6, self.drop7 = nn.Dropout(dropout), nn.Dropout(dropout)

    def declare(self, channels: Sequence[int], caffe: bool, in_chans: int = 3) -> None:
        """``feature_info`` for the taps (``channels`` in stride order) and fc7; in caffe geometry with the
        derived offsets, inputs of any size (the pad-100 first conv) and the Caffe-era BGR 0-255 input."""
        strides = sorted(self.TAPS.values())
        self.feature_info = [FeatureInfo(s, c) for s, c in zip(strides, channels)]
        self.feature_info.append(FeatureInfo(32, self.fc7.out_channels))
        if caffe:
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
        """fc6 and fc7 as convs over the last pool's map."""
        x = self.drop6(self.relu6(self.fc6(self.pad6(pool5))))
        return self.drop7(self.relu7(self.fc7(x)))
