"""The contracts every backbone, head and composed model must keep, as checks anyone can run.

segzoo's own tests run these over every registered plugin; ``segzoo check-plugin`` runs them over a
third-party plugin; a plugin author can call :func:`assert_contract` from pytest. Each check returns
a :class:`CheckResult` with the reason of a failure instead of raising, so one report shows them all.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import InputError, PluginError
from ..core.model import Backbone, FeatureInfo, SegmentationModel, check_maps

ODD_SIZES: tuple[tuple[int, int], ...] = ((33, 47), (64, 64), (71, 50))


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


class SyntheticBackbone(Backbone):
    """A tiny backbone with features at the given strides: checks a head without a real encoder's cost."""

    def __init__(self, strides: Sequence[int] = (2, 4, 8, 16, 32), channels: int = 8):
        super().__init__()
        self.feature_info = [FeatureInfo(s, channels + i) for i, s in enumerate(strides)]
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.proj = nn.ModuleDict({str(f.stride): nn.Conv2d(channels, f.channels, 1) for f in self.feature_info})

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = torch.relu(self.stem(x))
        return {f.stride: self.proj[str(f.stride)](nn.functional.avg_pool2d(x, f.stride, ceil_mode=True))
                for f in self.feature_info}


def _check(name: str, fn: Callable[[], str | None]) -> CheckResult:
    try:
        detail = fn()
    except AssertionError as exc:
        return CheckResult(name, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported with its cause
        return CheckResult(name, False, f"raised {type(exc).__name__}: {exc}")
    return CheckResult(name, True, detail or "")


def _input(size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def check_feature_info(backbone: Backbone, sizes: Sequence[tuple[int, int]] = ODD_SIZES) -> str:
    """Declared strides and channels are what forward() returns, at odd sizes and at one large enough to tell
    every stride from its half or double: the same check (:func:`segzoo.core.model.check_maps`) a model runs
    at its first forward."""
    info = list(backbone.feature_info)
    assert info, "feature_info is empty: declare FeatureInfo(stride, channels) for every level forward() returns"
    strides = [f.stride for f in info]
    assert len(set(strides)) == len(strides), f"feature_info repeats strides: {strides}"
    side = int(max(8 * s + 2 * abs(f.offset) for f, s in zip(info, strides)))  # 8 cells at the coarsest level
    sizes = [(next_side(backbone, h), next_side(backbone, w))
             for h, w in fit_sizes([*sizes, (side + 1, side + 3)], backbone.min_input_size)]
    backbone.eval()
    with torch.no_grad():
        for size in sizes:
            try:
                check_maps(info, backbone(_input(size)), size, "the backbone")
            except PluginError as exc:
                raise AssertionError(str(exc).removeprefix("the backbone ")) from None
    return f"strides {strides}, channels {[f.channels for f in info]}"


def fit_sizes(sizes: Sequence[tuple[int, int]], low: int) -> list[tuple[int, int]]:
    """The check sizes, each side raised to the backbone's ``min_input_size`` (odd sizes stay odd above it)."""
    return [(max(h, low + (h % 2 != low % 2)), max(w, low + (w % 2 != low % 2))) for h, w in sizes]


def model_sizes(model: SegmentationModel, sizes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The check sizes for ``model``: each side raised to the backbone's ``min_input_size``, then, for a model whose
    geometry takes only some sizes (valid convolutions), to the next side its ``output_window`` accepts."""
    return [(next_side(model, h), next_side(model, w))
            for h, w in fit_sizes(sizes, model.backbone.min_input_size)]


def next_side(model: SegmentationModel | Backbone, side: int, reach: int = 1024) -> int:
    """The smallest side from ``side`` up that the backbone's ``check_size`` and the model's ``output_window``
    take (probed as a square)."""
    backbone = model.backbone if isinstance(model, SegmentationModel) else model
    for n in range(side, side + reach):
        try:
            backbone.check_size(n, n)
            if isinstance(model, SegmentationModel):
                model.output_window(n, n)
        except InputError:
            continue
        return n
    raise AssertionError(f"check_size or output_window refuses every side from {side} to {side + reach}")


def check_output_shape(model: SegmentationModel, sizes: Sequence[tuple[int, int]] = ODD_SIZES) -> str:
    """N x C x H x W out for N x 3 x H x W in, at odd sizes too (no smaller than the backbone takes); a model that
    declares a smaller output window returns that window's H x W, at the nearest sizes its geometry takes."""
    sizes = model_sizes(model, sizes)
    model.eval()
    with torch.no_grad():
        for h, w in sizes:
            out = model(_input((h, w), batch=2))
            window = model.output_window(h, w)
            want = (2, model.num_classes, window.height, window.width)
            assert tuple(out.shape) == want, f"input 2x3x{h}x{w} gave {tuple(out.shape)}, expected {want}"
            assert torch.isfinite(out).all(), f"non-finite scores at {h}x{w}"
    return "sizes " + ", ".join(f"{h}x{w}" for h, w in sizes)


def check_gradients(model: SegmentationModel, size: tuple[int, int] = (48, 48)) -> str:
    """A loss on the output sends a non-zero gradient to every trainable parameter.

    Zero-initialised weights (FCN's skip scores, timm's zero-init last BatchNorm, a fusion conv that
    starts as the identity on one input and zero on the other) stop gradients at initialisation by
    design, so their zero entries are briefly made non-zero: the check asks whether a gradient path
    exists, which is what a detached or unused parameter lacks. The model is left as it was.
    """
    size = model_sizes(model, [size])[0]
    was_training = model.training
    model.eval()  # no dropout: the check is about the graph, not the noise
    gen = torch.Generator().manual_seed(1)
    zeros = [(p, p == 0) for p in model.parameters()]
    zeros = [(p, mask) for p, mask in zeros if mask.any()]
    try:
        with torch.no_grad():
            for p, mask in zeros:
                p[mask] = torch.randn(int(mask.sum()), generator=gen) * 1e-2
        model.zero_grad(set_to_none=True)
        out = model(_input(size))
        (out * torch.randn(out.shape, generator=gen)).sum().backward()
        dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, mask in zeros:
                p[mask] = 0
        model.train(was_training)
    assert not dead, f"no gradient reaches {len(dead)} trainable parameter(s): {dead[:5]}"
    return f"{sum(p.requires_grad for p in model.parameters())} trainable tensors"


def check_train_step(model: SegmentationModel) -> str:
    """A training step at batch 1 on the smallest input the backbone takes runs (BatchNorm on a 1x1 map does
    not: raise ``min_input_size`` until every level has more than one cell)."""
    low = model.backbone.min_input_size
    was_training = model.training
    model.train()
    try:
        out = model(_input((low, low)))
        out.float().logsumexp(1).mean().backward()
    except (ValueError, RuntimeError) as exc:
        raise AssertionError(f"a training step at batch 1 on a {low}x{low} input (min_input_size) fails: {exc}; "
                             "raise min_input_size so every level has more than one cell, or avoid BatchNorm "
                             "statistics over a single value") from None
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return f"batch 1 at {low}x{low}"


def check_min_input(model: SegmentationModel) -> str:
    """The declared minimum input works; one pixel less fails with a clear InputError."""
    low = model.backbone.min_input_size
    model.eval()
    with torch.no_grad():
        out = model(_input((low, low)))
        want = model.output_window(low, low).size
        assert out.shape[-2:] == want, f"minimum input {low}x{low} gave {tuple(out.shape[-2:])}, expected {want}"
        if low > 1:
            try:
                model(_input((low - 1, low)))
            except InputError:
                pass
            else:
                raise AssertionError(f"input {low - 1}x{low} is below the minimum {low} but raised no InputError")
    return f"minimum {low}x{low}"


def check_state_dict_roundtrip(model: SegmentationModel, rebuild: Callable[[], nn.Module]) -> str:
    """A fresh model from the same recipe, loaded with the state dict, computes the same output."""
    twin = rebuild()
    twin.load_state_dict(model.state_dict())
    return _same_output(model, twin, "state-dict round trip")


def check_pickle(model: SegmentationModel) -> str:
    """The whole model pickles and unpickles (multiprocessing, DDP and deepcopy rely on it)."""
    buf = io.BytesIO()
    pickle.dump(model, buf)
    twin = pickle.loads(buf.getvalue())  # noqa: S301 - our own bytes, just written
    return _same_output(model, twin, "pickle round trip")


def _same_output(a: nn.Module, b: nn.Module, what: str) -> str:
    a.eval()
    b.eval()
    if isinstance(a, SegmentationModel):
        x = _input(model_sizes(a, [(40, 56)])[0])
    else:
        x = _input(fit_sizes([(40, 56)], getattr(getattr(a, "backbone", None), "min_input_size", 1))[0])
    with torch.no_grad():
        ya, yb = a(x), b(x)
    diff = (ya - yb).abs().max().item()
    assert torch.allclose(ya, yb, atol=1e-5, rtol=1e-5), f"{what} changed the output (max diff {diff:.3g})"
    return "same output"


def run_contract(
    model: SegmentationModel, rebuild: Callable[[], nn.Module] | None = None,
    sizes: Sequence[tuple[int, int]] = ODD_SIZES, check_backbone: bool = True,
) -> list[CheckResult]:
    """Every check on one composed model; ``rebuild`` (a fresh model of the same recipe) enables the round trip.

    ``check_backbone=False`` skips the backbone's own check, for a head tested on a :class:`SyntheticBackbone`.
    """
    results = []
    if check_backbone:
        results.append(_check("feature strides and channels", lambda: check_feature_info(model.backbone, sizes)))
    results += [
        _check("output is N x C x H x W", lambda: check_output_shape(model, sizes)),
        _check("gradient reaches every parameter", lambda: check_gradients(model)),
        _check("minimum input size", lambda: check_min_input(model)),
        _check("trains at batch 1", lambda: check_train_step(model)),
        _check("pickle round trip", lambda: check_pickle(model)),
    ]
    if rebuild is not None:
        results.append(_check("state-dict round trip", lambda: check_state_dict_roundtrip(model, rebuild)))
    return results


def assert_contract(model: SegmentationModel, rebuild: Callable[[], nn.Module] | None = None) -> None:
    """For plugin authors' pytest suites: fail with every broken contract listed."""
    failed = [r for r in run_contract(model, rebuild) if not r.passed]
    assert not failed, "; ".join(f"{r.name}: {r.detail}" for r in failed)
