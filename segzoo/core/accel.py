"""Layers that keep ``nn.Conv2d``'s weights, names and maths but run faster, built into the models, and
the fused optimiser step (:func:`fused_kwargs`).

Backbones build their convolutions from these classes (VGG16's 3x3 convs are :class:`WinogradConv2d`, every
convolutionalized classifier's fc6/fc7 are :class:`GemmConv2d`), so the model that ``create_model`` and
``load_model`` return is already the fast one: a user's own training loop gets the speed-ups, and nothing
swaps module classes afterwards. Each layer picks its path per call from the device, the dtype and the
machine, and falls back to the ordinary convolution for anything its fast path cannot do (CUDA, autocast,
other dtypes, tiny maps). Under ``torch.export``, ``torch.jit.trace`` and ONNX export they are plain
convolutions, so an exported graph has the standard ``Conv`` op and stays dynamic in height and width;
under ``torch.compile`` the GEMM path is traced as it runs eagerly.

Two levers, measured (bench/RESULTS.md):

- fc6/fc7 as one matrix product (:class:`GemmConv2d`): oneDNN reorders fc6's 100-400 MB weight into its
  blocked layout on every call; the (out, in*k*k) view the weight already is goes straight into a GEMM.
  Inference 0.75-0.84x the time of the plain net, a training step 0.58x (vgg16-fcn8s, Intel Xeon AVX-512).
- Winograd 3x3 convolutions through NNPACK (:class:`WinogradConv2d`), about 2.25x fewer multiplications:
  0.82-0.91x on an AVX2 CPU. NNPACK's kernels are AVX2 only, so where PyTorch runs AVX-512 oneDNN's own
  convs win and the layer stays with them (:func:`winograd_pays`).

:func:`levers` turns either off (or forces Winograd on) for a block of code, for benchmarks that compare them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import exporting, tracing

# None: each layer's own choice (the measured default); True/False: forced by :func:`levers`.
_FORCED: dict[str, bool | None] = {"gemm": None, "winograd": None}


@contextlib.contextmanager
def levers(gemm: bool | None = None, winograd: bool | None = None) -> Iterator[None]:
    """Force the GEMM and Winograd paths on or off inside the block (None keeps the default), e.g. to time a
    model without them: ``with levers(gemm=False): model(x)``. Forcing a path on still leaves the calls it
    cannot run (CUDA, autocast, small maps) to the ordinary convolution."""
    before = dict(_FORCED)
    _FORCED.update({k: v for k, v in (("gemm", gemm), ("winograd", winograd)) if v is not None})
    try:
        yield
    finally:
        _FORCED.update(before)


def lever_on(name: str) -> bool:
    """Whether the ``"gemm"`` or ``"winograd"`` path is in use here and now: what :func:`levers` forces, else the
    default (GEMM always; Winograd where :func:`winograd_pays`)."""
    forced = _FORCED[name]
    if name == "gemm":
        return True if forced is None else forced
    return winograd_pays() if forced is None else (forced and nnpack_available())


@functools.cache
def nnpack_available() -> bool:
    """Whether this PyTorch has NNPACK and this CPU runs it (the call also initialises NNPACK)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def winograd_pays() -> bool:
    """Whether Winograd through NNPACK beats oneDNN here: NNPACK runs, and PyTorch's CPU kernels are AVX2.

    Measured whole-network (vgg16-fcn8s, 3x320x320, bench/RESULTS.md): on AVX2 (AMD Zen 3) inference
    took 0.82-0.91x the time with Winograd; on AVX-512 (Intel Xeon) 1.13x inference and no gain in
    training, since oneDNN's AVX-512 kernels do twice the work per instruction of NNPACK's AVX2 ones.
    """
    return nnpack_available() and torch.backends.cpu.get_cpu_capability() == "AVX2"


def _square_stride1(conv: nn.Conv2d) -> bool:
    """A square, stride-1, undilated, ungrouped conv, zero-padded alike on every side: what both fast paths take."""
    return (conv.kernel_size[0] == conv.kernel_size[1] and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1])


def _eager_cpu32(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    """An eager CPU call under bf16 autocast (``--amp`` where bf16 pays): fc6/fc7 then run as bf16 GEMMs."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _nnpack(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, [padding, padding], [1, 1])


class _WinogradConv(torch.autograd.Function):
    """A stride-1 square convolution whose forward and input gradient run in NNPACK."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return _nnpack(x, weight, bias, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            k = weight.shape[-1]
            flipped = weight.flip(2, 3).transpose(0, 1)
            grad_x = _nnpack(grad, flipped, None, k - 1 - ctx.padding)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            mask = [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1],
                [ctx.padding, ctx.padding], [1, 1], False, [0, 0], 1, mask)
        return grad_x, grad_w, grad_b, None


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same arguments and parameters) that runs in NNPACK where that beats oneDNN.

    Only a plain 3x3, stride-1, undilated, ungrouped conv zero-padded by at most 2 qualifies (any other
    arguments give an ordinary conv); only eager CPU fp32 calls on contiguous maps of at least ``MIN_SIZE``
    on a side take the path, where :func:`winograd_pays` (or :func:`levers`) says so. Below ``MIN_SIZE``
    NNPACK's transforms cost more than they save (up to 10x slower at 8x8 on the machines here).
    """

    MIN_SIZE = 16

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.winograd_shaped = _square_stride1(self) and self.kernel_size[0] == 3 and self.padding[0] < 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the tracer test comes before the size test: a size compared under torch.export becomes a guard that
        # ties the exported graph to the example's size ("Guard failed: torch.sym_min(...) < 16")
        if (self.winograd_shaped and not tracing() and _eager_cpu32(x) and x.dim() == 4 and x.is_contiguous()
                and min(x.shape[-2:]) >= self.MIN_SIZE and lever_on("winograd")):
            return _WinogradConv.apply(x, self.weight, self.bias, self.padding[0])
        return self._conv_forward(x, self.weight, self.bias)


class GemmConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` computed as one matrix product (im2col for k > 1), for big kernels on small maps.

    fc6/fc7 are 100-400 MB of weights applied to a 10x10-20x20 map: oneDNN reorders the whole weight
    into its blocked layout on every call, while the (out, in*k*k) view that the weight already is
    goes straight into an MKL GEMM. Autograd differentiates the product (grad_w and grad_cols are GEMMs
    too). Square, stride-1, undilated, ungrouped, zero-padded convs take the path in eager CPU fp32 calls, under
    CPU bf16 autocast (the product then runs in bf16, the weight cast once per forward as autocast casts any
    weight) and under ``torch.compile``; the ordinary conv runs otherwise, under export, and when the unfolded
    input would exceed ``MAX_COLS_BYTES``.
    """

    MAX_COLS_BYTES = 256 * 2**20

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gemm_shaped = _square_stride1(self)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Keep a CPU weight contiguous when the model goes channels-last (``--amp`` on a CPU does).

        The product reads the weight as its (out, in*k*k) view, which a channels-last weight is not: the forward
        then copied fc6's 400 MB into NCHW order, autograd copied the gradient back into the parameter's
        layout, and the fused SGD step copied the weight to a contiguous one and back, every step.
        """
        module = super()._apply(fn, recurse)
        if self.weight.device.type == "cpu" and not self.weight.is_contiguous():
            self.weight.data = self.weight.data.contiguous()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.gemm_shaped and x.dim() == 4 and (_eager_cpu32(x) or _cpu_bf16_autocast(x)) and not exporting()
                and lever_on("gemm")):
            k, p = self.kernel_size[0], self.padding[0]
            n, c, h, w = x.shape
            ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
            if ho >= 1 and wo >= 1 and n * c * k * k * ho * wo * 4 <= self.MAX_COLS_BYTES:
                return self._gemm(x, k, p, ho, wo)
        return self._conv_forward(x, self.weight, self.bias)

    def _gemm(self, x: torch.Tensor, k: int, p: int, ho: int, wo: int) -> torch.Tensor:
        n, c, h, w = x.shape
        cols = x.reshape(n, c, h * w) if k == 1 and p == 0 else F.unfold(x, k, padding=p)
        out = torch.matmul(self.weight.reshape(self.out_channels, -1), cols)  # autocast: a bf16 GEMM
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)[:, None]
        return out.view(n, self.out_channels, ho, wo)


def fused_kwargs(optimizer: type[torch.optim.Optimizer], device: torch.device | str) -> dict[str, bool]:
    """``{"fused": True}`` where this PyTorch has a fused ``optimizer`` step for ``device``, else ``{}``.

    The default step on a CPU is a Python loop of small in-place ops over every parameter, and reads
    and writes the weights, gradients and momentum several times: for VGG16 FCN-8s (134M parameters)
    SGD with momentum and weight decay took 1.7 s a step, the fused kernel 63 ms (bench/RESULTS.md).
    Older PyTorch versions (no ``fused`` argument, or no CPU kernel) keep the default step.
    """
    probe = [torch.zeros(1, device=device, requires_grad=True)]
    try:
        optimizer(probe, lr=1e-3, fused=True)
    except (TypeError, RuntimeError, ValueError):
        return {}
    return {"fused": True}


__all__ = ["GemmConv2d", "WinogradConv2d", "fused_kwargs", "lever_on", "levers", "nnpack_available",
           "winograd_pays"]
