"""segzoo.core.accel: the faster convs compute what nn.Conv2d computes (forward and gradients), in place."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import segzoo
from segzoo.core import accel
from segzoo.core.accel import GemmConv2d, WinogradConv2d, accelerate, decelerate, fused_kwargs, nnpack_available
from segzoo.studies import bench

nnpack_conv = accel._nnpack
needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="NNPACK does not run here")


def run_both(ref: nn.Module, fast: nn.Module, x: torch.Tensor):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), fast(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    return (y1, x1.grad, ref.weight.grad, ref.bias.grad if ref.bias is not None else None), \
        (y2, x2.grad, fast.weight.grad, fast.bias.grad if fast.bias is not None else None)


@needs_nnpack
@pytest.mark.parametrize("padding, bias, batch", [(1, True, 1), (0, False, 2), (2, True, 1)])
def test_winograd_conv_matches_conv2d(padding, bias, batch, monkeypatch):
    calls = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: calls.append(a) or nnpack_conv(*a))
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 16, 3, padding=padding, bias=bias)
    fast = copy.deepcopy(ref)
    assert accelerate(fast, winograd=True) == 1 and type(fast) is WinogradConv2d
    for a, b in zip(*run_both(ref, fast, torch.randn(batch, 8, 17, 23))):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert len(calls) == 2  # the forward and the input gradient ran in NNPACK


@pytest.mark.parametrize("cin, k, padding", [(64, 7, 3), (256, 1, 0), (32, 6, 0)])
def test_gemm_conv_matches_conv2d(cin, k, padding):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, 4096, k, padding=padding)
    fast = copy.deepcopy(ref)
    assert accelerate(fast) == 1 and type(fast) is GemmConv2d
    for a, b in zip(*run_both(ref, fast, torch.randn(2, cin, 9, 11))):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_small_or_strided_convs_stay_as_they_are():
    convs = [nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=2),
             nn.Conv2d(8, 8, 3, padding=1, padding_mode="replicate"), nn.Conv2d(256, 21, 1)]
    assert accelerate(nn.Sequential(*convs)) == 0
    assert all(type(c) is nn.Conv2d for c in convs)


@needs_nnpack
def test_accelerated_model_keeps_its_state_dict_and_output():
    torch.manual_seed(0)
    model = segzoo.create_model("vgg16-fcn8s", num_classes=4, backbone_kwargs={"fc_channels": 1024}).eval()
    ref = copy.deepcopy(model)
    keys = list(model.state_dict())
    assert accelerate(model, winograd=True) == 13 + 2  # VGG16's thirteen 3x3 convs; fc6 (7x7) and fc7 as GEMMs
    assert list(model.state_dict()) == keys
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert decelerate(model) == 15 and not any(type(m) in (WinogradConv2d, GemmConv2d) for m in model.modules())


@needs_nnpack
def test_falls_back_where_nnpack_cannot_run(monkeypatch):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    accelerate(conv, winograd=True)
    x = torch.randn(1, 4, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))  # channels-last input: the ordinary conv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 4, 16, 16)).dtype == torch.bfloat16  # autocast still applies
    calls = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: calls.append(a))
    conv(torch.randn(1, 4, 8, 40))  # smaller than MIN_SIZE on one side: oneDNN is faster there
    assert calls == []


@needs_nnpack
@pytest.mark.parametrize("capability, expected", [("AVX2", WinogradConv2d), ("AVX512", nn.Conv2d)])
def test_winograd_is_the_default_only_where_it_beats_onednn(monkeypatch, capability, expected):
    # NNPACK's kernels are AVX2: on AVX-512 oneDNN's direct convs were faster (bench/RESULTS.md)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    accelerate(conv)
    assert type(conv) is expected
    assert bench.default_options(torch.device("cpu"), "fp32")["winograd"] is (expected is WinogradConv2d)
    fc6 = nn.Conv2d(64, 4096, 7, padding=3)
    accelerate(fc6)
    assert type(fc6) is GemmConv2d  # the GEMM lever does not depend on it


def test_fused_optimizer_step_matches_the_default_step():
    kwargs = fused_kwargs(torch.optim.SGD, "cpu")
    if not kwargs:
        pytest.skip("this PyTorch has no fused SGD for CPU")
    assert kwargs == {"fused": True}
    torch.manual_seed(0)
    a = [torch.randn(64, 32, requires_grad=True), torch.randn(32, requires_grad=True)]
    b = [p.detach().clone().requires_grad_() for p in a]
    opts = [torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4, **kw) for ps, kw in ((a, {}), (b, kwargs))]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for ps, opt in zip((a, b), opts):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(q, p)


def test_no_fused_step_keeps_the_default_step():
    def old_sgd(params, lr, **kwargs):  # a PyTorch whose SGD has no ``fused`` argument
        if kwargs:
            raise TypeError(f"SGD got an unexpected keyword argument {next(iter(kwargs))!r}")
        return torch.optim.SGD(params, lr=lr)

    assert fused_kwargs(old_sgd, "cpu") == {}
