"""The machine a benchmark runs on: its matmul peak measured in the same run, its memory peak, its name.

These machines are shared and noisy, so the hardware's peak is measured in the same run (a matmul probe
interleaved with the timed iterations) rather than quoted from a spec sheet: the fraction "achieved / peak"
then cancels most of the load from other processes. On CUDA the fraction is also given against the card's
dense bf16 peak (a table of known cards, overridable), which is what MFU usually means.

Peak memory is the peak *during one iteration* over what was resident just before it (weights,
optimiser state, the input): on CUDA ``max_memory_allocated`` after a reset; on CPU the process's
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) after ``malloc_trim`` has
handed freed heap pages back, so pages the step touches count again. Both include activations,
gradients and temporaries, which is what grows with the input.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
from collections.abc import Iterator

import torch

# The matmul probe lives in the core, where the trainer's bf16 decision (segzoo.train.runtime) can reach it too.
from ...core.hardware import cpu_has_native_bf16, measure_matmul_peak, synchronize

__all__ = ["CUDA_BF16_PEAK_TFLOPS", "cpu_has_native_bf16", "cpu_name", "cuda_bf16_peak_tflops", "measure_matmul_peak",
           "peak_memory", "synchronize"]

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets. The first
# substring found in torch.cuda.get_device_name() wins, so the more specific names come first.
CUDA_BF16_PEAK_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
]


def cuda_bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from :data:`CUDA_BF16_PEAK_TFLOPS`, or ``None`` for an unknown card."""
    for key, tflops in CUDA_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Yield a dict that holds, on exit, ``peak_mib``: the peak over what was in use on entry.

    ``None`` where the platform cannot tell (a CPU without ``/proc/self/clear_refs``).
    """
    result: dict[str, float | None] = {"peak_mib": None}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        base = _proc_status_kib("VmRSS")
    except OSError:
        base = None
    yield result
    hwm = _proc_status_kib("VmHWM")
    if base is not None and hwm is not None:
        result["peak_mib"] = (hwm - base) / 1024


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
