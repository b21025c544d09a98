"""segzoo.infer.runtime: what predicts. The torch runner's low-precision path (a bf16 copy of the weights, in
channels-last layout, made once; the model untouched), and its refusals."""

from __future__ import annotations

import pytest
import torch

import segzoo
from segzoo.core.errors import SegzooError
from segzoo.infer.runtime import describe, low_precision_weights, runner


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segzoo.create_model("vgg16-fcn8s", num_classes=4, backbone_kwargs={"fc_channels": 32}).eval()


def test_fp32_runs_the_model_as_it_is(model):
    x = torch.randn(1, 3, 64, 72)
    with torch.no_grad():
        torch.testing.assert_close(runner(model)(x), model(x), rtol=0, atol=0)


def test_bf16_runs_a_channels_last_copy_and_leaves_the_model_alone(model):
    seen = []
    first = model.backbone.features[0]
    hook = first.register_forward_hook(lambda m, args, out: seen.append(
        (args[0].dtype, m.weight.dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
    before = {k: (v.data_ptr(), v.dtype) for k, v in model.state_dict().items()}
    try:
        run = runner(model, dtype="bf16")
        out = run(torch.randn(2, 3, 64, 72))
        run(torch.randn(1, 3, 96, 64))  # the copy is made once and reused at any size
    finally:
        hook.remove()
    assert seen == [(torch.bfloat16, torch.bfloat16, True)] * 2
    assert out.dtype == torch.float32 and out.shape == (2, 4, 64, 72)
    assert {k: (v.data_ptr(), v.dtype) for k, v in model.state_dict().items()} == before
    assert not model.backbone.fc6.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_scores_stay_close_to_fp32(model):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    want = runner(model)(x)
    got = runner(model, dtype="bf16", channels_last=False)(x)
    assert float((got - want).abs().max()) <= 0.05 * float(want.abs().max())


def test_unknown_dtype_names_the_choices(model):
    with pytest.raises(SegzooError, match="choose one of fp32, bf16, fp16"):
        runner(model, dtype="int8")


def test_low_precision_needs_a_torch_model():
    class Onnxish:  # anything callable that is not a torch module, such as an OnnxModel
        def __call__(self, x):
            return x

    with pytest.raises(SegzooError, match="needs a torch checkpoint"):
        runner(Onnxish(), dtype="bf16")


def test_describe_reads_what_prediction_needs(model):
    info = describe(model)
    assert info["num_classes"] == 4 and info["in_chans"] == 3 and info["align"] == 32


def test_the_copy_is_reused_until_a_weight_changes():
    torch.manual_seed(0)
    m = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 16}).eval()
    first = low_precision_weights(m, torch.bfloat16)
    assert low_precision_weights(m, torch.bfloat16) is first  # predicting image after image casts once
    with torch.no_grad():
        m.head.score_fr.weight.add_(1.0)  # an in-place update, as an optimizer step makes
    second = low_precision_weights(m, torch.bfloat16)
    assert second is not first
    assert torch.equal(second["head.score_fr.weight"], m.head.score_fr.weight.to(torch.bfloat16))
