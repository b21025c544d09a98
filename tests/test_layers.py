"""Bilinear upsampling (frozen ones run as F.interpolate), size alignment and fc->conv reshaping."""

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.core.layers import BilinearUpsample, bilinear_kernel, conv_from_linear, fit_to


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_fresh_upsampling_is_bilinear_interpolation_everywhere(factor):
    x = torch.randn(2, 3, 5, 7)
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    got = BilinearUpsample(3, factor)(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_bilinear_kernel_keeps_classes_apart():
    w = bilinear_kernel(3, 2)
    assert w.shape == (3, 3, 4, 4)
    assert w[0, 1].abs().sum() == 0 and w[0, 0].sum() > 0
    # 1-D taps of the paper's upsample_filt for factor 2: 1 - |k - 1.5| / 2
    assert torch.allclose(w[0, 0, 0], torch.tensor([0.25, 0.75, 0.75, 0.25]) * 0.25)


def test_upsampling_learnable_or_frozen():
    assert BilinearUpsample(2, 4).deconv.weight.requires_grad
    assert not BilinearUpsample(2, 4, learnable=False).deconv.weight.requires_grad
    with pytest.raises(ValueError, match="even factor"):
        BilinearUpsample(2, 3)


def test_fit_to_crops_bottom_right_and_pads_by_replication():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert torch.equal(fit_to(x, (2, 3)), x[..., :2, :3])
    padded = fit_to(x, (4, 5))
    assert padded.shape[-2:] == (4, 5)
    assert torch.equal(padded[..., :3, :4], x)
    assert torch.equal(padded[..., 3, :4], x[..., 2, :])  # replicated last row


def test_conv_from_linear_is_exact():
    linear = torch.nn.Linear(4 * 3 * 3, 5)
    conv = torch.nn.Conv2d(4, 5, 3)
    conv.weight.data = conv_from_linear(linear.weight.data, 4, 3)
    conv.bias.data = linear.bias.data
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(conv(x).flatten(1), linear(x.flatten(1)), atol=1e-6)
    with pytest.raises(ValueError, match="cannot become"):
        conv_from_linear(linear.weight.data, 5, 3)


# -- a frozen bilinear upsampling runs as F.interpolate and gives what the transposed conv gives --------------

def deconv_path(up: BilinearUpsample, x: torch.Tensor) -> torch.Tensor:
    return up.deconv(F.pad(x, (1, 1, 1, 1), mode="replicate"))


@pytest.mark.parametrize("factor", [2, 4, 8, 32])
def test_frozen_upsampling_equals_the_transposed_conv(factor):
    up = BilinearUpsample(5, factor, learnable=False)
    assert up.is_fixed_bilinear()
    x = torch.randn(2, 5, 7, 9, requires_grad=True)
    fast, ref = up(x), deconv_path(up, x)
    assert fast.shape == ref.shape == (2, 5, 7 * factor, 9 * factor)
    torch.testing.assert_close(fast, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(fast, x, g)[0], torch.autograd.grad(ref, x, g)[0]
    torch.testing.assert_close(*grads, rtol=1e-4, atol=1e-6 * factor**2)  # sums of factor^2 terms


def test_learnable_or_changed_kernels_keep_the_transposed_conv():
    assert not BilinearUpsample(3, 2, learnable=True).is_fixed_bilinear()
    up = BilinearUpsample(3, 2, learnable=False)
    with torch.no_grad():
        up.deconv.weight[0, 1] += 0.5  # cross-channel taps: no longer an interpolation
    assert not up.is_fixed_bilinear()
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(up(x), deconv_path(up, x))
    state = BilinearUpsample(3, 2, learnable=False).state_dict()
    up.load_state_dict(state)  # a bilinear kernel loaded back: the fast path again
    assert up.is_fixed_bilinear()


def test_frozen_fcn8s_keeps_its_output():
    torch.manual_seed(0)
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs={"fc_channels": 16},
                                head_kwargs={"learnable_upsampling": False}).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
        x = torch.randn(1, 3, 64, 80)
        fast = model(x)
        ups = [m for m in model.modules() if isinstance(m, BilinearUpsample)]
        for m in ups:
            m.deconv.weight.requires_grad_(True)  # forces the transposed-conv path
        ref = model(x)
    assert len(ups) == 3
    torch.testing.assert_close(fast, ref)


def test_learnable_upsampling_trains_under_torch_compile_as_it_does_eagerly():
    # inductor (torch 2.14) failed the backward of the replicate pad: "expected size 6==6, stride 1==64 ...
    # Error in op: torch.ops.aten.replication_pad2d_backward.default", so `segzoo train --compile` crashed at its
    # first step; compiled, the pad is the same gathers fit_to uses under a tracer
    torch.manual_seed(0)
    up = BilinearUpsample(6, 2)
    with torch.no_grad():
        up.deconv.weight.add_(0.01 * torch.randn_like(up.deconv.weight))
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    compiled = torch.compile(up)  # inductor, as --compile uses it
    grads = []
    for run in (compiled, up):
        x.grad = up.deconv.weight.grad = None
        y = run(x)
        y.square().sum().backward()
        grads.append((y.detach(), x.grad.clone(), up.deconv.weight.grad.clone()))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
