"""What this machine's matrix units can do, measured now: the matmul peak per dtype, and whether bf16 is native.

The bench reports a model's speed against it (:mod:`segzoo.studies.bench.machine`), and the trainer decides from it
whether bf16 training can pay (:func:`segzoo.train.runtime.bf16_matmul_speedup`): on a CPU without AVX-512 BF16 or
AMX oneDNN emulates bf16, several times slower than fp32, and even with AVX-512 BF16 the gain varies by chip, so
the decision is measured, never read from a flag list. Also here: :func:`keep_freed_memory`, the malloc setting
without which a CPU training step spends its time faulting its own buffers in again.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import statistics
import sys
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                        n: int | None = None, reps: int = 3) -> float:
    """GFLOP/s of an n x n x n matmul (2n^3 FLOPs), the median of ``reps`` after one warm-up.

    This is the practical peak a conv net can hope for on this machine, now, under its current load.
    Without ``n``: 2048 on CPU (smaller products suffer most from threads descheduled by other
    processes), except that for a reduced precision the size grows from 256 until one product takes
    ~50 ms, so a dtype the CPU only emulates (bf16 without AVX-512 BF16/AMX) does not take minutes;
    8192 on CUDA.
    """
    device = torch.device(device)
    if n is None and device.type == "cpu" and dtype != torch.float32:
        n = 256
        while n < 2048 and _time_mm(n, dtype, device) < 0.05:
            n *= 2
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = [_time_mm_once(a, b, device) for _ in range(reps + 1)][1:]
    return 2 * n**3 / statistics.median(times) / 1e9


def _time_mm(n: int, dtype: torch.dtype, device: torch.device) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    _time_mm_once(a, a, device)
    return _time_mm_once(a, a, device)


def _time_mm_once(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    torch.mm(a, b)
    synchronize(device)
    return time.perf_counter() - t0


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX-512 BF16 or AMX); otherwise it is emulated, and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def matmul_speedup(dtype: torch.dtype, device: str | torch.device = "cpu", rounds: int = 3, n: int = 1024,
                   screen: int = 256) -> float:
    """How many times ``dtype``'s matmul peak is fp32's on ``device``: the median of ``rounds`` per-round ratios, the
    two probes run back to back in each round so that load from other processes hits both alike.

    A first round at ``screen`` x ``screen`` settles a dtype the device only emulates (bf16 on a CPU without
    AVX-512 BF16 or AMX runs at a fiftieth of fp32: one 1024-sized product would take seconds): below 1x it is
    the answer. Otherwise the rounds run at ``n`` (1024: a tenth of a second a round on a 2-core CPU, and the size
    fc6/fc7 and VGG's middle convolutions reduce to), where a native unit shows its full ratio.
    """
    first = _ratio(dtype, device, screen)
    if first < 1.0:
        return first
    return statistics.median(_ratio(dtype, device, n) for _ in range(max(rounds, 1)))


def _ratio(dtype: torch.dtype, device: str | torch.device, n: int) -> float:
    fp32 = measure_matmul_peak(torch.float32, device, n=n, reps=1)
    return measure_matmul_peak(dtype, device, n=n, reps=1) / fp32


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# what turns keep_freed_memory() off: the user's own allocator or glibc malloc settings, or this variable
_ALLOCATOR_CHOSEN = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a process frees for its next allocations (CPU training, evaluation).

    A training step allocates and frees the same large buffers every step: activations, autocast's bf16 copies
    of the weights, gradients. glibc serves large buffers (always from 32 MB) from a fresh ``mmap`` and unmaps
    them on free, so the kernel faults in and zeroes hundreds of MB again every step: a vgg16-fcn8s bf16 step
    on a 2-core AVX-512 BF16 EPYC took 1.82 s, and 0.62 s with this (docs/performance.md). This turns ``mmap``
    off for allocations and never trims the heap, which jemalloc and tcmalloc do in their own way: the process
    keeps its peak memory until it exits.

    Once per process; only on Linux with glibc, and never where the user chose: ``SEGZOO_MALLOC=system``, an
    allocator in ``LD_PRELOAD``, or glibc malloc settings in the environment (``MALLOC_*_``, ``GLIBC_TUNABLES``
    naming ``glibc.malloc``). Returns whether the setting is in force.
    """
    return _set_keep_freed_memory()


def _set_keep_freed_memory() -> bool:
    env = os.environ
    if (env.get("SEGZOO_MALLOC", "").strip().lower() == "system" or env.get("LD_PRELOAD", "").strip()
            or any(k in env for k in _ALLOCATOR_CHOSEN) or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False
