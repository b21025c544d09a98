"""segzoo.core.hardware: the matmul peaks, and the low-precision speed-up measured in interleaved rounds."""

from __future__ import annotations

import pytest
import torch

from segzoo.core import hardware


@pytest.fixture
def fake_peaks(monkeypatch):
    """measure_matmul_peak replaced by a table of GFLOP/s per dtype; the calls (dtype, n) are recorded."""
    calls = []

    def install(peaks: dict[torch.dtype, float]) -> list[tuple[torch.dtype, int]]:
        monkeypatch.setattr(hardware, "measure_matmul_peak",
                            lambda dtype, device, n, reps: calls.append((dtype, n)) or peaks[dtype])
        return calls

    return install


def test_an_emulated_dtype_is_settled_by_one_small_round(fake_peaks):
    calls = fake_peaks({torch.float32: 100.0, torch.bfloat16: 2.0})
    assert hardware.matmul_speedup(torch.bfloat16, rounds=3) == pytest.approx(0.02)
    assert calls == [(torch.float32, 256), (torch.bfloat16, 256)]  # no second-long 1024-sized bf16 product


def test_a_native_dtype_is_measured_in_interleaved_rounds_at_full_size(fake_peaks):
    calls = fake_peaks({torch.float32: 100.0, torch.bfloat16: 500.0})
    assert hardware.matmul_speedup(torch.bfloat16, rounds=3) == pytest.approx(5.0)
    assert calls[2:] == [(torch.float32, 1024), (torch.bfloat16, 1024)] * 3


def test_the_real_probe_gives_a_positive_ratio():
    assert hardware.matmul_speedup(torch.float32, rounds=1, n=64, screen=64) > 0
