"""Timing a model honestly: warm-up, timed iterations, medians and spread, GFLOP/s against the peak.

Every figure that is compared is a median with its spread; inference runs the way ``segzoo predict`` runs
it (:func:`segzoo.infer.runtime.runner`: bf16/fp16 on a low-precision, channels-last copy of the weights,
timed in the same run as fp32), and the training step is the trainer's (its loss, 255 ignored; the fused
optimiser step). The model's own speed-ups (:mod:`segzoo.core.accel`) apply as they do anywhere;
``gemm=``/``winograd=`` force them on or off for comparisons.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ...core.accel import fused_kwargs, lever_on, levers
from ...core.errors import SegzooError
from ...core.hardware import keep_freed_memory
from ...core.settings import SETTINGS
from ...data import SegmentationDataset, ShardedSampler, find_pairs, make_loader, train_transform
from ...infer.runtime import DTYPES, runner
from ...train.loss import PixelCrossEntropy
from ...train.runtime import Runtime, compile_payback_steps, resolve_device
from ...train.step import TrainStep
from ..summary import summarize
from .machine import (
    cpu_has_native_bf16,
    cpu_name,
    cuda_bf16_peak_tflops,
    measure_matmul_peak,
    peak_memory,
    synchronize,
)
from .report import BenchResult

MODES = ("infer", "train")


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, dtype: str = "fp32",
              lr: float = 1e-4, momentum: float = 0.9, channels_last: bool = True) -> Callable[[], Any]:
    """One iteration as a closure: ``infer`` is a forward as ``segzoo predict`` runs it (``dtype`` bf16/fp16: on
    a low-precision copy of the weights, in ``channels_last`` layout); ``train`` is forward under ``dtype``
    autocast, per-pixel cross-entropy against fixed random labels, backward and an SGD-with-momentum step
    (fused where PyTorch has the kernel), through the trainer's own step (:class:`segzoo.train.step.TrainStep`)."""
    device = x.device
    if mode == "infer":
        run = runner(model, device, dtype, channels_last)
        return lambda: run(x)
    if mode != "train":
        raise SegzooError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    model.train()
    num_classes = getattr(model, "num_classes", None) or _output_channels(model, x)
    batch = {"image": x, "mask": torch.randint(0, num_classes, (x.shape[0], x.shape[-2], x.shape[-1]), device=device),
             "index": torch.arange(x.shape[0]), "skipped": 0}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, **fused_kwargs(torch.optim.SGD, device))
    low = DTYPES[dtype]
    rt = Runtime(device, amp_dtype=None if low == torch.float32 else low, channels_last=channels_last)
    step = TrainStep(model, model, PixelCrossEntropy(), optimizer, rt,
                     scaler=torch.amp.GradScaler(device.type, enabled=low == torch.float16 and device.type == "cuda"))
    return lambda: step(batch)


def _train_reference(model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype: str, channels_last: bool,
                     low: bool) -> tuple[Callable[[], Any], str]:
    """The training step a low-precision or compiled one is compared with, timed in the same rounds: fp32 (eager,
    in fp32's own default layout) for a low precision, else the same dtype uncompiled. It trains a copy of the
    model, so the two never share weights or optimiser state."""
    twin = copy.deepcopy(model)
    layout = default_options(device, "fp32")["channels_last"] if low else channels_last
    twin, x = prepare(twin, x.clone(), layout)
    return make_step(twin, x, "train", "fp32" if low else dtype, channels_last=layout), ("fp32" if low else "eager")


def _output_channels(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def timed_call(step: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``step``, the device synchronised before and after (CUDA runs asynchronously)."""
    synchronize(device)
    t0 = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - t0


def time_iterations(step: Callable[[], Any], device: torch.device, warmup: int, iters: int,
                    between: Callable[[], Any] | None = None) -> tuple[float, list[float]]:
    """Seconds of the first call and of each timed call; ``between`` runs untimed after each timed one."""
    first = timed_call(step, device)
    for _ in range(max(warmup - 1, 0)):
        step()
    times = []
    for _ in range(iters):
        times.append(timed_call(step, device))
        if between is not None:
            between()
    return first, times


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles (inclusive method; a single value is all three)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def prepare(model: torch.nn.Module, x: torch.Tensor, channels_last: bool,
            compile: bool = False) -> tuple[torch.nn.Module, torch.Tensor]:
    """Apply the options that are the caller's, not the model's: NHWC memory format, ``torch.compile``."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model, x


def default_options(device: torch.device, dtype: str, compile: bool = False) -> dict[str, bool]:
    """The memory format ``segzoo bench`` uses unless told otherwise: the fastest measured (bench/RESULTS.md).

    CPU fp32: NCHW, in which the model's GEMM and Winograd paths run (channels-last lost there, most in
    training); otherwise channels-last, which oneDNN's bf16 kernels and cuDNN's tensor cores prefer.
    """
    return {"channels_last": not (device.type == "cpu" and dtype == "fp32" and not compile)}


def benchmark(model: torch.nn.Module, input_size: tuple[int, int, int], *, batch_size: int = 1,
              device: str | torch.device = "cpu", dtype: str = "fp32", mode: str = "infer",
              warmup: int = 3, iters: int = 10, channels_last: bool | None = None, winograd: bool | None = None,
              gemm: bool | None = None, compile: bool = False,
              measure_peak: bool = True, check_agreement: bool = True, device_peak_tflops: float | None = None,
              name: str | None = None, seed: int = 0) -> BenchResult:
    """Time ``iters`` iterations of ``model`` after ``warmup``, on a random batch; see :class:`BenchResult`.

    With ``measure_peak`` a matmul probe of the same dtype (and, for bf16/fp16 on a CPU, an fp32 one) runs
    after each timed iteration (untimed), and the fraction of the peak is the median over iterations of
    achieved / probe. Inference in bf16/fp16 also times an fp32 forward after each timed iteration, so
    ``speedup_vs_fp32`` is a median of per-round ratios, and checks the argmax agreement with fp32.
    ``gemm``/``winograd`` force the model's own fast paths on or off (:func:`segzoo.core.accel.levers`).
    """
    if dtype not in DTYPES:
        raise SegzooError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if mode not in MODES:
        raise SegzooError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    for key, value in (("warmup", warmup), ("iters", iters), ("batch_size", batch_size)):
        SETTINGS[key].check(value)
    dev = resolve_device(str(device))
    if dev.type == "cpu" and mode == "train":
        keep_freed_memory()  # as the trainer does (segzoo.train.runtime.setup)
    torch_dtype = DTYPES[dtype]
    low = torch_dtype != torch.float32
    if dtype == "fp16" and dev.type == "cpu" and mode == "train":
        raise SegzooError("fp16 training on CPU is not supported (no loss scaling there); use --dtype bf16")
    channels_last = default_options(dev, dtype, compile)["channels_last"] if channels_last is None else channels_last
    notes = []
    if dev.type == "cpu" and dtype == "bf16" and not cpu_has_native_bf16():
        notes.append("this CPU has no native bf16 (AVX-512 BF16 or AMX): oneDNN emulates it, far slower than fp32")
    shape = (batch_size, *input_size)
    fwd_gflops = summarize(model, shape).gflops
    gflops_per_iter = fwd_gflops * (3 if mode == "train" else 1)
    gen = torch.Generator().manual_seed(seed)
    model = model.to(dev)
    x = torch.randn(shape, generator=gen).to(dev)
    with levers(gemm=gemm, winograd=winograd):
        used = {"gemm": lever_on("gemm"), "winograd": lever_on("winograd")}
        reference, against = None, None
        if mode == "infer" and low:
            reference, against = make_step(model, x, "infer"), "fp32"  # as predict runs it, before any layout change
        elif mode == "train" and (low or compile):
            reference, against = _train_reference(model, x, dev, dtype, channels_last, low)
        # low-precision inference lays out its own weight copy and input (runner); the model stays as it is
        model, x = prepare(model, x, channels_last and not (mode == "infer" and low), compile)
        step = make_step(model, x, mode, dtype, channels_last=channels_last)
        agreement = None
        if reference is not None and check_agreement and mode == "infer":
            agreement = float((step().argmax(1) == reference().argmax(1)).float().mean())
        probes: list[float] = []
        probes32: list[float] = []
        times32: list[float] = []

        def between() -> None:
            if reference is not None:
                times32.append(timed_call(reference, dev))
            if measure_peak:
                probes.append(measure_matmul_peak(torch_dtype, dev, reps=2))
                if low and dev.type == "cpu":
                    probes32.append(measure_matmul_peak(torch.float32, dev, reps=2))

        if reference is not None:
            reference()  # warm the reference path too
        first, times = time_iterations(step, dev, warmup, iters, between=between)
        with peak_memory(dev) as mem:
            step()
    fp32_peak = statistics.median(probes32) if probes32 else None
    if fp32_peak:
        ratio = statistics.median(probes) / fp32_peak
        emulated = dtype == "bf16" and not cpu_has_native_bf16()  # already said above
        if ratio < 1.2 and not emulated:
            notes.append(f"this CPU's {dtype} matmul peak is {ratio:.2f}x its fp32 one (measured in this run): "
                         f"{dtype} cannot beat fp32 here; use fp32")
    p25, med, p75 = quantiles(times)
    payback = None
    if compile and times32:  # the steps after which the compile time is won back, against the eager reference
        payback = compile_payback_steps(max(first - med, 0.0), statistics.median(times32), med)
        if math.isinf(payback):
            payback = None
            notes.append("a compiled step was no faster than the eager one here: compiling never pays back")
    achieved = gflops_per_iter / med
    frac = None
    if probes:
        frac = statistics.median(gflops_per_iter / t / p for t, p in zip(times, probes))
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    peak_tflops = device_peak_tflops
    if peak_tflops is None and dev.type == "cuda":
        peak_tflops = cuda_bf16_peak_tflops(device_name)
    return BenchResult(
        model=name or type(model).__name__, mode=mode, device=dev.type, device_name=device_name, dtype=dtype,
        input=list(input_size), batch_size=batch_size, channels_last=channels_last, winograd=used["winograd"],
        gemm=used["gemm"], compiled=compile,
        warmup=warmup, iters=iters, ms_median=med * 1e3, ms_p25=p25 * 1e3, ms_p75=p75 * 1e3,
        ms_min=min(times) * 1e3, ms_max=max(times) * 1e3, images_per_s=batch_size / med, first_iter_s=first,
        compile_s=max(first - med, 0.0) if compile else None, gflops_per_image=gflops_per_iter / batch_size,
        achieved_gflops=achieved, peak_memory_mib=mem["peak_mib"],
        matmul_peak_gflops=statistics.median(probes) if probes else None, fraction_of_matmul_peak=frac,
        fp32_matmul_peak_gflops=fp32_peak,
        device_peak_tflops=peak_tflops,
        fraction_of_device_peak=achieved / (peak_tflops * 1e3) if peak_tflops else None,
        agreement_vs_fp32=agreement,
        fp32_ms_median=statistics.median(times32) * 1e3 if times32 else None,
        speedup_vs_fp32=statistics.median(t32 / t for t32, t in zip(times32, times)) if times32 else None,
        reference=against, payback_steps=payback,
        notes=notes,
    )


def loader_throughput(data: str | os.PathLike[str], crop: int, batch_size: int, workers: int = 0,
                      split: str = "train", batches: int = 20, pin_memory: bool = False, seed: int = 0,
                      num_classes: int | None = None) -> float:
    """Images/s of the training input pipeline alone: read, decode, check, augment (train transform,
    ``crop`` x ``crop``), collate, through the loader the trainer uses (``workers`` persistent processes).

    Compare it with the model's images/s: a loader slower than the model leaves the device waiting.
    The first batch (worker start-up) is not timed; epochs repeat until ``batches`` batches are timed.
    Labels are checked against the dataset's ``class_names.txt``, or else ``num_classes``.
    """
    pairs = find_pairs(data, split)
    dataset = SegmentationDataset(pairs, None if pairs.class_names else num_classes, train_transform(crop), seed=seed)
    if len(dataset) == 0:
        raise SegzooError(f"split '{split}' of {data} has no samples to time the loader on")
    sampler = ShardedSampler(len(dataset), True, seed, tag_epoch=True)
    loader = make_loader(dataset, sampler, batch_size, workers, pin_memory, seed)
    images, timed, t0, epoch = 0, -1, 0.0, 0
    while timed < batches:
        sampler.set_epoch(epoch)
        for batch in loader:
            if timed < 0:
                t0 = time.perf_counter()  # from the end of the first batch: workers are up
            else:
                images += len(batch["image"])
            timed += 1
            if timed >= batches:
                break
        epoch += 1
    return images / (time.perf_counter() - t0)
