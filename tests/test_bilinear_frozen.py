"""A frozen bilinear upsampling runs as F.interpolate and gives what the transposed conv gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segzoo
from segzoo.core.layers import BilinearUpsample


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
