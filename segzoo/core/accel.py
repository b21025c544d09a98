"""Speed-ups that keep a network's weights, names and maths: Winograd 3x3 convolutions through NNPACK,
big-kernel convolutions on small maps (fc6, fc7) as plain matrix products (both CPU), and the fused
optimiser step (:func:`fused_kwargs`).

VGG16 is almost all 3x3, stride-1 convolutions. PyTorch sends those to oneDNN's direct algorithm;
NNPACK (built into PyTorch's x86 wheels) computes them with Winograd transforms, which need about
2.25x fewer multiplications: on a 2-core AVX2 machine a 3x3 layer ran in 0.4-0.6x of the time
(bench/RESULTS.md). NNPACK's kernels are AVX2 only, though: where PyTorch runs AVX-512, oneDNN's
twice-as-wide direct kernels win the whole network back (:func:`winograd_pays`). The result differs
from the direct convolution only by rounding (relative 1e-5), and the backward pass keeps that speed
for the input gradient (itself a 3x3 convolution with the flipped, transposed kernel); the weight
gradient stays with oneDNN.

:func:`accelerate` switches eligible ``nn.Conv2d`` modules in place (their class only, so state
dicts, checkpoints and parameter identity are untouched); each one falls back to the ordinary
convolution for anything NNPACK cannot do (CUDA, fp16/bf16 or autocast, channels-last inputs).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def nnpack_available() -> bool:
    """Whether this PyTorch has NNPACK and this CPU runs it (the call also initialises NNPACK)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def winograd_pays() -> bool:
    """Whether Winograd through NNPACK beats oneDNN here: NNPACK runs, and PyTorch's CPU kernels are AVX2.

    Measured whole-network (vgg16-fcn8s, 3x320x320, bench/RESULTS.md): on AVX2 (AMD Zen 3) inference
    took 0.82-0.91x the time with Winograd; on AVX-512 (Intel Xeon) 1.13x inference and no gain in
    training, since oneDNN's AVX-512 kernels do twice the work per instruction of NNPACK's AVX2 ones.
    """
    return nnpack_available() and torch.backends.cpu.get_cpu_capability() == "AVX2"


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
    """An ``nn.Conv2d`` (same parameters) that runs in NNPACK when the call allows it.

    Maps smaller than ``MIN_SIZE`` on a side stay with oneDNN: there NNPACK's transforms cost more
    than they save (up to 10x slower at 8x8 on the machines here).
    """

    MIN_SIZE = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
                and min(x.shape[-2:]) >= self.MIN_SIZE and not torch.is_autocast_enabled("cpu")):
            return _WinogradConv.apply(x, self.weight, self.bias, self.padding[0])
        return super().forward(x)


class GemmConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` computed as one matrix product (im2col for k > 1), for big kernels on small maps.

    fc6/fc7 are 100-400 MB of weights applied to a 10x10-20x20 map: oneDNN reorders the whole weight
    into its blocked layout on every call, while the (out, in*k*k) view that the weight already is
    goes straight into an MKL GEMM. Autograd differentiates the product (grad_w and grad_cols are GEMMs
    too). Falls back to the ordinary conv when the unfolded input would exceed ``MAX_COLS_BYTES``.
    """

    MAX_COLS_BYTES = 256 * 2**20

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.kernel_size[0], self.padding[0]
        n, c, h, w = x.shape
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        if (x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
                or ho < 1 or wo < 1 or n * c * k * k * ho * wo * 4 > self.MAX_COLS_BYTES):
            return super().forward(x)
        cols = x.reshape(n, c, h * w) if k == 1 and p == 0 else F.unfold(x, k, padding=p)
        out = torch.matmul(self.weight.reshape(self.out_channels, -1), cols)
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.view(n, self.out_channels, ho, wo)


def gemm_eligible(conv: nn.Module, min_weight: int = 2**20) -> bool:
    """A stride-1, undilated, ungrouped, zero-padded square ``nn.Conv2d`` with at least ``min_weight``
    weights and no Winograd path (fc6, fc7 and the like)."""
    return (type(conv) is nn.Conv2d and not eligible(conv) and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1] and conv.weight.numel() >= min_weight)


def eligible(conv: nn.Module) -> bool:
    """A plain 3x3, stride-1, undilated, ungrouped, zero- and symmetrically padded ``nn.Conv2d``."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1] < 3)


def accelerate(model: nn.Module, winograd: bool | None = None, gemm: bool = True) -> int:
    """Turn the eligible convs of ``model`` into :class:`WinogradConv2d` (3x3; by default where
    :func:`winograd_pays`, on request wherever NNPACK runs) and :class:`GemmConv2d` (big kernels,
    e.g. fc6/fc7), in place; returns how many were changed."""
    winograd = winograd_pays() if winograd is None else winograd and nnpack_available()
    count = 0
    for m in model.modules():
        if winograd and eligible(m):
            m.__class__ = WinogradConv2d
        elif gemm and gemm_eligible(m):
            m.__class__ = GemmConv2d
        else:
            continue
        count += 1
    return count


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


def decelerate(model: nn.Module) -> int:
    """Undo :func:`accelerate` (e.g. before ``torch.compile``, which cannot trace NNPACK)."""
    count = 0
    for m in model.modules():
        if type(m) in (WinogradConv2d, GemmConv2d):
            m.__class__ = nn.Conv2d
            count += 1
    return count


__all__ = ["GemmConv2d", "WinogradConv2d", "gemm_eligible", "accelerate", "decelerate", "eligible", "fused_kwargs",
           "nnpack_available", "winograd_pays"]
