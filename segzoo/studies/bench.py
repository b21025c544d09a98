"""Measuring speed honestly: warm-up, timed iterations, medians and spread, peak memory, GFLOP/s vs the peak.

These machines are shared and noisy, so every figure that is compared is a median, and the hardware's
peak is measured in the same run (a matmul probe interleaved with the timed iterations) rather than
quoted from a spec sheet: the fraction "achieved / peak" then cancels most of the load from other
processes. On CUDA the fraction is also given against the card's dense bf16 peak (a table of known
cards, overridable), which is what MFU usually means.

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
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..core.accel import accelerate, fused_kwargs, winograd_pays
from ..core.errors import SegzooError
from ..data import SegmentationDataset, ShardedSampler, find_pairs, make_loader, train_transform
from ..train.loss import cross_entropy
from ..train.runtime import autocast, resolve_device
from .summary import summarize

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("infer", "train")

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


# -- the machine -----------------------------------------------------------------------------------

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


# -- memory --------------------------------------------------------------------------------------

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


# -- one iteration ---------------------------------------------------------------------------------

def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, dtype: torch.dtype = torch.float32,
              lr: float = 1e-4, momentum: float = 0.9) -> Callable[[], Any]:
    """One iteration as a closure: ``infer`` is a forward in inference mode; ``train`` is forward,
    per-pixel cross-entropy against fixed random labels, backward and an SGD-with-momentum step
    (fused where PyTorch has the kernel, as the trainer does)."""
    device = x.device
    if mode == "infer":
        model.eval()

        def infer() -> torch.Tensor:
            with torch.inference_mode(), autocast(device, dtype):
                return model(x)

        return infer
    if mode != "train":
        raise SegzooError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    model.train()
    num_classes = getattr(model, "num_classes", None) or _output_channels(model, x)
    target = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, **fused_kwargs(torch.optim.SGD, device))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")

    def train() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = cross_entropy(model(x).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    return train


def _output_channels(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


# -- the benchmark ---------------------------------------------------------------------------------

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
        if self.agreement_vs_fp32 is not None:
            rows.append(["argmax agreement vs fp32", f"{self.agreement_vs_fp32:.2%} of pixels"])
        if self.loader_images_per_s is not None:
            rows.append(["loader images/s", f"{self.loader_images_per_s:.3g} ({self.loader_workers} workers), "
                                            f"{self.loader_images_per_s / self.images_per_s:.1f}x the model's"])
        rows += [["note", n] for n in self.notes]
        rows.append(["load average", ", ".join(f"{v:.2f}" for v in self.loadavg)])
        return rows


def time_iterations(step: Callable[[], Any], device: torch.device, warmup: int, iters: int,
                    between: Callable[[], Any] | None = None) -> tuple[float, list[float]]:
    """Seconds of the first call and of each timed call; ``between`` runs untimed after each timed one."""
    synchronize(device)
    t0 = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step()
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if between is not None:
            between()
    return first, times


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles (inclusive method; a single value is all three)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def prepare(model: torch.nn.Module, x: torch.Tensor, channels_last: bool, compile: bool = False,
            winograd: bool = False, gemm: bool = False) -> tuple[torch.nn.Module, torch.Tensor]:
    """Apply the speed options that keep the weights and the maths: NHWC memory format, Winograd 3x3
    convs through NNPACK and fc6/fc7 as GEMMs (CPU fp32; rounding-level differences only; see
    :mod:`segzoo.core.accel`), ``torch.compile``."""
    if winograd or gemm:
        accelerate(model, winograd=winograd, gemm=gemm)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model, x


def default_options(device: torch.device, dtype: str, compile: bool = False) -> dict[str, bool]:
    """What ``segzoo bench`` applies unless told otherwise: the fastest measured (bench/RESULTS.md).

    CPU fp32: fc6/fc7 as GEMMs and, where it pays (AVX2 CPUs), Winograd 3x3 convs via NNPACK, in NCHW
    (channels-last lost there, most in training); otherwise channels-last, which cuDNN's tensor-core
    kernels prefer.
    """
    cpu32 = device.type == "cpu" and dtype == "fp32" and not compile
    winograd = cpu32 and winograd_pays()
    return {"winograd": winograd, "gemm": cpu32, "channels_last": not cpu32}


def benchmark(model: torch.nn.Module, input_size: tuple[int, int, int], *, batch_size: int = 1,
              device: str | torch.device = "cpu", dtype: str = "fp32", mode: str = "infer",
              warmup: int = 3, iters: int = 10, channels_last: bool | None = None, winograd: bool | None = None,
              gemm: bool | None = None, compile: bool = False,
              measure_peak: bool = True, check_agreement: bool = True, device_peak_tflops: float | None = None,
              name: str | None = None, seed: int = 0) -> BenchResult:
    """Time ``iters`` iterations of ``model`` after ``warmup``, on a random batch; see :class:`BenchResult`.

    With ``measure_peak`` a matmul probe of the same dtype runs after each timed iteration (untimed),
    and the fraction of the peak is the median over iterations of achieved / probe.
    """
    if dtype not in DTYPES:
        raise SegzooError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if mode not in MODES:
        raise SegzooError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if warmup < 1 or iters < 1 or batch_size < 1:
        raise SegzooError("--warmup, --iters and --batch-size must be at least 1")
    dev = resolve_device(str(device))
    torch_dtype = DTYPES[dtype]
    if dtype == "fp16" and dev.type == "cpu" and mode == "train":
        raise SegzooError("fp16 training on CPU is not supported (no loss scaling there); use --dtype bf16")
    defaults = default_options(dev, dtype, compile)
    channels_last = defaults["channels_last"] if channels_last is None else channels_last
    winograd = defaults["winograd"] if winograd is None else winograd
    gemm = defaults["gemm"] if gemm is None else gemm
    notes = []
    if dev.type == "cpu" and dtype == "bf16" and not cpu_has_native_bf16():
        notes.append("this CPU has no native bf16 (AVX-512 BF16 or AMX): oneDNN emulates it, far slower than fp32")
    shape = (batch_size, *input_size)
    fwd_gflops = summarize(model, shape).gflops
    gflops_per_iter = fwd_gflops * (3 if mode == "train" else 1)
    gen = torch.Generator().manual_seed(seed)
    model = model.to(dev)
    x = torch.randn(shape, generator=gen).to(dev)
    agreement = None
    if check_agreement and mode == "infer" and torch_dtype != torch.float32:
        agreement = pixel_agreement(model, x, torch_dtype)
    model, x = prepare(model, x, channels_last, compile, winograd, gemm)
    step = make_step(model, x, mode, torch_dtype)

    probes: list[float] = []
    probe = None
    if measure_peak:
        def probe() -> None:
            probes.append(measure_matmul_peak(torch_dtype, dev, reps=2))
    first, times = time_iterations(step, dev, warmup, iters, between=probe)
    with peak_memory(dev) as mem:
        step()
    fp32_peak = None
    if probes and dev.type == "cpu" and torch_dtype != torch.float32:
        fp32_peak = measure_matmul_peak(torch.float32, dev, reps=2)
        ratio = statistics.median(probes) / fp32_peak
        emulated = dtype == "bf16" and not cpu_has_native_bf16()  # already said above
        if ratio < 1.2 and not emulated:
            notes.append(f"this CPU's {dtype} matmul peak is {ratio:.2f}x its fp32 one (measured in this run): "
                         f"{dtype} cannot beat fp32 here; use fp32")
    p25, med, p75 = quantiles(times)
    achieved = gflops_per_iter / med
    frac = None
    if probes:
        frac = statistics.median(gflops_per_iter / t / p for t, p in zip(times, probes))
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    peak_tflops = device_peak_tflops
    if peak_tflops is None and dev.type == "cuda":
        peak_tflops = cuda_bf16_peak_tflops(device_name)
    return BenchResult(
        model=name or type(model).__name__, mode=mode, device=dev.type, device_name=device_name, dtype=dtype,
        input=list(input_size), batch_size=batch_size, channels_last=channels_last, winograd=winograd, gemm=gemm,
        compiled=compile,
        warmup=warmup, iters=iters, ms_median=med * 1e3, ms_p25=p25 * 1e3, ms_p75=p75 * 1e3,
        ms_min=min(times) * 1e3, ms_max=max(times) * 1e3, images_per_s=batch_size / med, first_iter_s=first,
        compile_s=max(first - med, 0.0) if compile else None, gflops_per_image=gflops_per_iter / batch_size,
        achieved_gflops=achieved, peak_memory_mib=mem["peak_mib"],
        matmul_peak_gflops=statistics.median(probes) if probes else None, fraction_of_matmul_peak=frac,
        fp32_matmul_peak_gflops=fp32_peak,
        device_peak_tflops=peak_tflops,
        fraction_of_device_peak=achieved / (peak_tflops * 1e3) if peak_tflops else None,
        agreement_vs_fp32=agreement, notes=notes,
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


def pixel_agreement(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> float:
    """Fraction of pixels whose argmax class under ``dtype`` autocast equals the fp32 prediction."""
    model.eval()
    with torch.inference_mode():
        ref = model(x).argmax(1)
        with autocast(x.device, dtype):
            low = model(x).argmax(1)
    return float((ref == low).float().mean())


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
