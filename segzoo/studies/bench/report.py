"""What one benchmark run measured, as a record, a table and JSON (the names are documented)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class BenchResult:
    """Everything one benchmark run measured; ``to_json`` keeps these names (they are documented)."""

    model: str
    mode: str
    device: str
    device_name: str
    dtype: str
    input: list[int]
    batch_size: int
    channels_last: bool
    winograd: bool
    gemm: bool
    compiled: bool
    warmup: int
    iters: int
    ms_median: float
    ms_p25: float
    ms_p75: float
    ms_min: float
    ms_max: float
    images_per_s: float
    first_iter_s: float
    compile_s: float | None
    gflops_per_image: float
    achieved_gflops: float
    peak_memory_mib: float | None
    matmul_peak_gflops: float | None
    fraction_of_matmul_peak: float | None
    fp32_matmul_peak_gflops: float | None
    device_peak_tflops: float | None
    fraction_of_device_peak: float | None
    agreement_vs_fp32: float | None
    fp32_ms_median: float | None = None  # the reference's median ms, timed in the same rounds (see ``reference``)
    speedup_vs_fp32: float | None = None  # median per-round reference time / this run's time
    reference: str | None = None  # what the two above time: "fp32" (bf16/fp16, either mode) or "eager" (--compile)
    payback_steps: float | None = None  # --compile: steps after which the compile time is won back (None: never)
    notes: list[str] = field(default_factory=list)
    loader_images_per_s: float | None = None  # the input pipeline alone (loader_throughput), when asked for
    loader_workers: int | None = None
    torch_version: str = torch.__version__
    threads: int = field(default_factory=torch.get_num_threads)
    loadavg: list[float] = field(default_factory=lambda: [round(v, 2) for v in os.getloadavg()])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def rows(self) -> list[list[Any]]:
        counted = "forward + backward (3x)" if self.mode == "train" else "forward"
        mib = self.peak_memory_mib
        memory = "n/a" if mib is None else f"{mib:.0f} MiB (one iteration, over what was resident)"
        spread = f"{self.ms_p25:.1f} .. {self.ms_p75:.1f} (min {self.ms_min:.1f}, max {self.ms_max:.1f})"
        rows = [
            ["model", self.model],
            ["mode", f"{self.mode}, {self.dtype}, batch {self.batch_size}, input {'x'.join(map(str, self.input))}"],
            ["device", f"{self.device_name} ({self.threads} threads)" if self.device == "cpu" else self.device_name],
            ["options", f"channels_last={self.channels_last}, winograd={self.winograd}, gemm={self.gemm}, "
                        f"compile={self.compiled}"],
            ["iterations", f"{self.warmup} warm-up + {self.iters} timed"],
            ["images/s", f"{self.images_per_s:.3g}"],
            ["ms/iteration", f"{self.ms_median:.1f} median; IQR {spread}"],
            ["first iteration", f"{self.first_iter_s:.2f} s"
             + (f" (compile ~{self.compile_s:.1f} s)" if self.compile_s is not None else "")],
            ["GFLOPs/image", f"{self.gflops_per_image:.1f} ({counted})"],
            ["achieved GFLOP/s", f"{self.achieved_gflops:.1f}"],
            ["peak memory", memory],
        ]
        if self.matmul_peak_gflops:
            rows.append(["matmul peak", f"{self.matmul_peak_gflops:.1f} GFLOP/s ({self.dtype}, measured in this run); "
                                        f"fraction {self.fraction_of_matmul_peak:.1%}"])
        if self.fp32_matmul_peak_gflops:
            rows.append(["fp32 matmul peak", f"{self.fp32_matmul_peak_gflops:.1f} GFLOP/s (measured in this run)"])
        if self.device_peak_tflops:
            rows.append(["device bf16 peak", f"{self.device_peak_tflops:.0f} TFLOP/s; fraction (MFU) "
                                             f"{self.fraction_of_device_peak:.1%}"])
        if self.speedup_vs_fp32 is not None:
            ref = self.reference or "fp32"
            rows.append([f"vs {ref}", f"{self.speedup_vs_fp32:.2f}x {ref}'s throughput ({ref} "
                                      f"{self.fp32_ms_median:.1f} ms median, timed in the same rounds)"])
        if self.payback_steps is not None:
            rows.append(["compile pays back", f"after {self.payback_steps:.0f} steps (compile time / time saved a "
                                              "step)"])
        if self.agreement_vs_fp32 is not None:
            rows.append(["argmax agreement vs fp32", f"{self.agreement_vs_fp32:.2%} of pixels"])
        if self.loader_images_per_s is not None:
            rows.append(["loader images/s", f"{self.loader_images_per_s:.3g} ({self.loader_workers} workers), "
                                            f"{self.loader_images_per_s / self.images_per_s:.1f}x the model's"])
        rows += [["note", n] for n in self.notes]
        rows.append(["load average", ", ".join(f"{v:.2f}" for v in self.loadavg)])
        return rows
