"""Benchmarks: the machine (peaks, memory), the timing of a model, and the report."""

from .machine import cpu_has_native_bf16, cpu_name, cuda_bf16_peak_tflops, measure_matmul_peak, peak_memory
from .report import BenchResult
from .timing import (
    DTYPES,
    MODES,
    benchmark,
    default_options,
    loader_throughput,
    make_step,
    prepare,
    quantiles,
)

__all__ = ["DTYPES", "MODES", "BenchResult", "benchmark", "cpu_has_native_bf16", "cpu_name", "cuda_bf16_peak_tflops",
           "default_options", "loader_throughput", "make_step", "measure_matmul_peak", "peak_memory",
           "prepare", "quantiles"]
