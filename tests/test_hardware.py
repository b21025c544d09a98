"""segzoo.core.hardware: the matmul peaks, the low-precision speed-up measured in interleaved rounds, and the
malloc setting that keeps a training step's freed buffers for the next step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

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


_KEEP_PROBE = """
import json, torch
from segzoo.core.hardware import keep_freed_memory
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
kept = keep_freed_memory()
before = rss_mib()
x = torch.ones(64 * 2**20)  # 256 MB, touched
del x
print(json.dumps({"kept": kept, "again": keep_freed_memory(), "held_mib": rss_mib() - before}))
"""


def _keep_probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD",
                                                                                              "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _KEEP_PROBE], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="keep_freed_memory tunes glibc's malloc on Linux")


@needs_glibc
def test_keep_freed_memory_keeps_a_freed_256_mb_buffer_for_the_next_step():
    # glibc would unmap a freed 256 MB buffer at once; kept, the next step reuses it without faulting it in
    kept = _keep_probe()
    assert kept["kept"] and kept["again"] and kept["held_mib"] > 200
    default = _keep_probe(SEGZOO_MALLOC="system")
    assert not default["kept"] and default["held_mib"] < 50


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_MAX_": "65536"}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
                                 {"LD_PRELOAD": "libjemalloc.so.2"}, {"SEGZOO_MALLOC": "System"}])
def test_keep_freed_memory_leaves_an_allocator_the_user_chose(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert hardware._set_keep_freed_memory() is False  # decided before any mallopt() call
