"""segzoo.core.accel: the fast convs built into the models compute what nn.Conv2d computes (forward and
gradients), take their fast path where it pays, and step aside for autocast, other layouts, export and small maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segzoo
from segzoo.core import accel
from segzoo.core.accel import GemmConv2d, WinogradConv2d, fused_kwargs, lever_on, levers, nnpack_available

nnpack_conv = accel._nnpack
needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="NNPACK does not run here")


@pytest.fixture
def gemm_calls(monkeypatch):
    """Every call that took GemmConv2d's matrix-product path."""
    calls = []
    real = GemmConv2d._gemm
    monkeypatch.setattr(GemmConv2d, "_gemm", lambda self, *a: calls.append(self) or real(self, *a))
    return calls


def run_both(ref: nn.Module, fast: nn.Module, x: torch.Tensor):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), fast(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    return (y1, x1.grad, ref.weight.grad, ref.bias.grad if ref.bias is not None else None), \
        (y2, x2.grad, fast.weight.grad, fast.bias.grad if fast.bias is not None else None)


def twin(cls: type[nn.Conv2d], *args, **kwargs) -> tuple[nn.Conv2d, nn.Conv2d]:
    """A plain nn.Conv2d and a ``cls`` with the same arguments and weights."""
    torch.manual_seed(0)
    ref = nn.Conv2d(*args, **kwargs)
    fast = cls(*args, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@needs_nnpack
@pytest.mark.parametrize("padding, bias, batch", [(1, True, 1), (0, False, 2), (2, True, 1)])
def test_winograd_conv_matches_conv2d(padding, bias, batch, monkeypatch):
    calls = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: calls.append(a) or nnpack_conv(*a))
    ref, fast = twin(WinogradConv2d, 8, 16, 3, padding=padding, bias=bias)
    with levers(winograd=True):
        pairs = list(zip(*run_both(ref, fast, torch.randn(batch, 8, 17, 23))))
    for a, b in pairs:
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert len(calls) == 2  # the forward and the input gradient ran in NNPACK


@pytest.mark.parametrize("cin, k, padding", [(64, 7, 3), (256, 1, 0), (32, 6, 0)])
def test_gemm_conv_matches_conv2d_and_takes_the_gemm_path(cin, k, padding, gemm_calls):
    ref, fast = twin(GemmConv2d, cin, 512, k, padding=padding)
    for a, b in zip(*run_both(ref, fast, torch.randn(2, cin, 9, 11))):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert gemm_calls == [fast]


@pytest.mark.parametrize("cin, k, padding", [(16, 7, 3), (24, 1, 0), (16, 5, 0)])
def test_gemm_conv_keeps_its_weight_contiguous_in_a_channels_last_model(cin, k, padding, gemm_calls, monkeypatch):
    # --amp on a CPU trains channels-last; fc6's matrix is the NCHW weight's view, so a channels-last weight
    # would be copied (400 MB for fc6) by the forward, by the gradient's return to its layout and by fused SGD
    ref, fast = twin(GemmConv2d, cin, 32, k, padding=padding)
    fast = nn.Sequential(fast).to(memory_format=torch.channels_last)[0]
    assert fast.weight.is_contiguous() and isinstance(fast.weight, nn.Parameter)
    weight_copies = []
    real_reshape = torch.Tensor.reshape

    def spy(t, *shape):
        out = real_reshape(t, *shape)
        if t.numel() == fast.weight.numel() and out.data_ptr() != t.data_ptr():
            weight_copies.append(shape)
        return out

    monkeypatch.setattr(torch.Tensor, "reshape", spy)
    x = torch.randn(2, cin, 9, 11).contiguous(memory_format=torch.channels_last)
    for a, b in zip(*run_both(ref, fast, x)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert gemm_calls == [fast] and weight_copies == [] and fast.weight.grad.is_contiguous()
    assert not nn.Conv2d(cin, 8, 3).to(memory_format=torch.channels_last).weight.is_contiguous()  # others do go


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding=1, groups=2),
                                    dict(padding=1, padding_mode="replicate"), dict(padding=1, dilation=2)])
def test_convs_the_fast_paths_cannot_do_are_ordinary_convs(kwargs, gemm_calls, monkeypatch):
    nnpack = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: nnpack.append(a))
    x = torch.randn(1, 8, 20, 20)
    for cls in (GemmConv2d, WinogradConv2d):
        ref, fast = twin(cls, 8, 8, 3, **kwargs)
        with levers(winograd=True):
            torch.testing.assert_close(fast(x), ref(x))
    assert gemm_calls == [] and nnpack == []


def test_create_model_builds_the_fast_layers_with_the_usual_state_dict(gemm_calls):
    """No class swap afterwards: the model as built has them, keeps nn.Conv2d's keys, and computes what plain convs
    compute; a user's own training step runs fc6/fc7 as GEMMs."""
    torch.manual_seed(0)
    model = segzoo.create_model("vgg16-fcn8s", num_classes=4, backbone_kwargs={"fc_channels": 256})
    backbone = model.backbone
    assert sum(type(m) is WinogradConv2d for m in backbone.features) == 13  # VGG16's thirteen 3x3 convs
    assert type(backbone.fc6) is GemmConv2d and type(backbone.fc7) is GemmConv2d
    assert {"backbone.fc6.weight", "backbone.features.0.weight"} <= set(model.state_dict())
    x = torch.randn(1, 3, 48, 64)
    model.eval()
    with torch.no_grad():
        fast = model(x)
        with levers(gemm=False, winograd=False):
            plain = model(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    assert gemm_calls[:2] == [backbone.fc6, backbone.fc7]
    gemm_calls.clear()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # a user's loop, nothing of segzoo's
    F.cross_entropy(model(x), torch.randint(0, 4, (1, 48, 64))).backward()
    optimizer.step()
    assert gemm_calls == [backbone.fc6, backbone.fc7]


def test_load_model_rebuilds_the_fast_layers(tmp_path, gemm_calls):
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 16})
    segzoo.save_model(model, tmp_path / "m.pt")
    loaded = segzoo.load_model(tmp_path / "m.pt").eval()
    assert type(loaded.backbone.fc6) is GemmConv2d and type(loaded.backbone.features[6]) is WinogradConv2d
    with torch.no_grad():
        loaded(torch.randn(1, 3, 64, 64))
    assert gemm_calls == [loaded.backbone.fc6, loaded.backbone.fc7]


@needs_nnpack
def test_winograd_falls_back_where_nnpack_cannot_run(monkeypatch):
    conv = WinogradConv2d(4, 4, 3, padding=1)
    calls = []
    monkeypatch.setattr(accel, "_nnpack", lambda *a: calls.append(a))
    with levers(winograd=True):
        x = torch.randn(1, 4, 16, 16).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))  # channels-last input: the ordinary conv
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(torch.randn(1, 4, 16, 16)).dtype == torch.bfloat16  # autocast still applies
        conv(torch.randn(1, 4, 8, 40))  # smaller than MIN_SIZE on one side: oneDNN is faster there
    assert calls == []


def test_gemm_runs_in_bf16_under_cpu_autocast_as_the_conv_would(gemm_calls):
    # --amp where bf16 pays: fc6/fc7 as bf16 GEMMs instead of oneDNN's per-call weight reorder
    ref, conv = twin(GemmConv2d, 16, 32, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = conv(x), ref(x)
        assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.05, atol=0.05)
    got.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and conv.bias.grad.dtype == torch.float32  # fp32 masters
    assert gemm_calls == [conv]


def test_gemm_steps_aside_for_other_dtypes_and_when_turned_off(gemm_calls):
    conv = GemmConv2d(16, 64, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.float16):
        conv(torch.randn(1, 16, 8, 8))
    assert conv.to(torch.bfloat16)(torch.randn(1, 16, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with levers(gemm=False):
        conv.float()(torch.randn(1, 16, 8, 8))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(torch.randn(1, 16, 8, 8))
    assert gemm_calls == []


@pytest.mark.parametrize("capability, pays", [("AVX2", True), ("AVX512", False)])
def test_winograd_is_the_default_only_where_it_beats_onednn(monkeypatch, capability, pays):
    # NNPACK's kernels are AVX2: on AVX-512 oneDNN's direct convs were faster (bench/RESULTS.md)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    accel.winograd_pays.cache_clear()
    try:
        assert lever_on("winograd") is (pays and nnpack_available())
        with levers(winograd=not pays):
            assert lever_on("winograd") is (not pays and nnpack_available())
        assert lever_on("gemm")  # the GEMM lever does not depend on it
    finally:
        accel.winograd_pays.cache_clear()


def test_levers_come_back_after_the_block_even_on_an_error():
    before = (lever_on("gemm"), lever_on("winograd"))
    with pytest.raises(RuntimeError), levers(gemm=False, winograd=False):
        assert not lever_on("gemm") and not lever_on("winograd")
        raise RuntimeError
    assert (lever_on("gemm"), lever_on("winograd")) == before


def test_torch_compile_traces_the_gemm_path_in_one_graph(gemm_calls):
    ref, fast = twin(GemmConv2d, 32, 64, 3, padding=1)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 32, 10, 12)
    torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-4)
    assert gemm_calls  # dynamo traced through the matrix product, not around it


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
