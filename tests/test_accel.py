"""segzoo.accel: the faster convs compute what nn.Conv2d computes (forward and gradients), in place."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import segzoo
from segzoo import accel
from segzoo.accel import GemmConv2d, WinogradConv2d, accelerate, decelerate, nnpack_available

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
    assert accelerate(fast) == 1 and type(fast) is WinogradConv2d
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
    assert accelerate(model) == 13 + 2  # VGG16's thirteen 3x3 convs; fc6 (7x7) and fc7 as GEMMs
    assert list(model.state_dict()) == keys
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert decelerate(model) == 15 and not any(type(m) in (WinogradConv2d, GemmConv2d) for m in model.modules())


@needs_nnpack
def test_falls_back_where_nnpack_cannot_run(monkeypatch):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    accelerate(conv)
    x = torch.randn(1, 4, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))  # channels-last input: the ordinary conv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 4, 16, 16)).dtype == torch.bfloat16  # autocast still applies
    calls = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: calls.append(a))
    conv(torch.randn(1, 4, 8, 40))  # smaller than MIN_SIZE on one side: oneDNN is faster there
    assert calls == []
