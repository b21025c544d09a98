"""segzoo.train.lr_find: the range test sweeps exponentially, stops on divergence, suggests a rate that trains, and
plots the curve through a temporary file."""

from __future__ import annotations

import math

import pytest
import torch

from segzoo.cli import main
from segzoo.core.errors import SegzooError
from segzoo.train.lr_find import lr_range_test, model_step, plot
from segzoo.train.run_folder import run_files
from tests.conftest import TINY_TRAIN


def bowl(lr: float) -> float:
    """A loss that falls as lr grows towards 1e-2, then explodes."""
    return 1.0 / (1.0 + 300 * lr) + (0.0 if lr < 0.05 else 50 * lr)


def test_sweep_is_exponential_and_suggests_a_tenth_of_the_minimum():
    found = lr_range_test(bowl, start=1e-5, end=10.0, steps=61, beta=0.5)
    ratios = [b / a for a, b in zip(found.lrs, found.lrs[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios) and ratios[0] == pytest.approx(10 ** 0.1)
    assert len(found.lrs) < 61 and "passed 4x its lowest" in found.stopped  # it stopped at the explosion
    low = found.lrs[found.smoothed.index(min(found.smoothed))]
    assert found.suggestion == pytest.approx(low / 10)
    assert 1e-3 <= found.suggestion <= 1e-2
    assert found.steepest is not None and found.steepest < low
    assert "suggested lr" in found.reason and "\n" not in found.reason


def test_a_non_finite_loss_ends_the_sweep_at_once():
    calls = []

    def step(lr: float) -> float:
        calls.append(lr)
        return 1.0 - math.log10(lr) / 100 if lr < 1e-2 else float("nan")

    found = lr_range_test(step, start=1e-6, end=1.0, steps=100)
    assert calls[-1] >= 1e-2 and len(calls) == len(found.lrs) + 1  # the NaN step is not kept
    assert "became nan" in found.stopped


def test_a_loss_that_never_falls_gets_no_suggestion_and_says_so():
    found = lr_range_test(lambda lr: 2.0, start=1e-6, end=1e-1, steps=20)
    assert found.suggestion is None and "never fell" in found.reason
    assert "reached lr" in found.stopped


@pytest.mark.parametrize("kwargs", [{"start": 0.0}, {"start": 1.0, "end": 0.1}, {"steps": 1}, {"steps": 5000}])
def test_a_bad_range_is_a_user_error(kwargs):
    with pytest.raises(SegzooError):
        lr_range_test(bowl, **kwargs)


def _regression() -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    w = torch.randn(8, 1)
    batches = []
    for _ in range(4):
        x = torch.randn(16, 8)
        batches.append((x, x @ w))
    return torch.nn.Linear(8, 1), batches


def _mse(model: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def test_on_a_plain_model_the_suggested_rate_trains_and_groups_keep_their_multiples():
    model, batches = _regression()
    opt = torch.optim.SGD([{"params": [model.weight], "lr_mult": 1.0}, {"params": [model.bias], "lr_mult": 2.0}],
                          lr=0.1)
    step = model_step(model, opt, _mse, batches)
    step(0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]
    found = lr_range_test(step, start=1e-5, end=10.0, steps=80)
    assert found.suggestion is not None

    fresh, _ = _regression()
    opt = torch.optim.SGD(fresh.parameters(), lr=found.suggestion)
    before = sum(_mse(fresh, b).item() for b in batches)
    for _ in range(25):
        for b in batches:
            opt.zero_grad()
            _mse(fresh, b).backward()
            opt.step()
    assert sum(_mse(fresh, b).item() for b in batches) < 0.5 * before


def test_no_batches_is_an_error_not_a_hang():
    model, _ = _regression()
    step = model_step(model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, [])
    with pytest.raises(SegzooError, match="no training batches"):
        step(0.1)


def test_plot_writes_a_png_and_no_temporary_file(tmp_path):
    found = lr_range_test(bowl, start=1e-5, end=10.0, steps=40)
    path = plot(found, tmp_path / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]


def test_cli_lr_find_plots_into_the_run_folder_suggests_and_keeps_no_run(tmp_path, demo_data, capsys):
    run = tmp_path / "run"
    args = ["train", *TINY_TRAIN, "--data", str(demo_data), "--out", str(run), "--lr-find", "--lr-find-steps", "12"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"plot: {run / 'lr_find.png'}")
    assert "suggested lr" in out[-2] or "no suggestion" in out[-2]
    assert (run / "lr_find.png").read_bytes()[:4] == b"\x89PNG" and run_files(run) == []
    assert main(args) == 0  # a second test never replaces the first one's plot
    assert (run / "lr_find-2.png").is_file()
    assert main(["train", "--resume", "--out", str(run), "--lr-find"]) == 2
    assert "cannot --resume" in capsys.readouterr().err
