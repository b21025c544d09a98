"""The yardstick: segzoo's FCN-8s side by side with a plain textbook PyTorch FCN-8s, in one process.

The textbook net below is written the way FCN-8s is usually ported to PyTorch: VGG16 layer by
layer, fc6/fc7 as convs, eager fp32, NCHW, dense C x C transposed convs, crops by slicing,
``torch.no_grad()`` for inference. It comes in the two geometries:

- ``caffe``: the paper's reference net (conv1_1 padded by 100, ceil pools, unpadded 7x7 fc6,
  upscore2 k4 s2, score_pool4 cropped at 5, upscore_pool4 k4 s2, score_pool3 cropped at 9,
  upscore8 k16 s8, final crop at 31);
- ``modern``: segzoo's default (padding 1 everywhere, ceil pools, fc6 7x7 padded by 3, every
  upsampling replicate-padded by one pixel, maps trimmed at the bottom/right edges).

Given segzoo's weights (:func:`load_segzoo_weights`) each textbook net computes what
``segzoo.create_model("vgg16-fcn8s", geometry=...)`` computes in the same geometry, so timing them
side by side compares like with like.

Timing is interleaved (yardstick, segzoo, ..., then the next repetition, rotating who goes first)
with a matmul probe after each repetition, and every figure is a median of per-repetition ratios,
so load from other processes cancels out as far as it can. Run ``python bench/yardstick.py -h``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import segzoo
from segzoo.core.accel import levers
from segzoo.core.table import format_table
from segzoo.studies import bench
from segzoo.studies.summary import parse_input_size, summarize

GEOMETRIES = ("modern", "caffe")
VGG_BLOCKS = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]


class TextbookFCN8s(nn.Module):
    """FCN-8s on VGG16, written out plainly (the eager fp32 reference)."""

    def __init__(self, num_classes: int = 21, geometry: str = "modern", fc_channels: int = 4096):
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.geometry = geometry
        caffe = geometry == "caffe"
        for b, (cin, cout, n) in enumerate(VGG_BLOCKS, start=1):
            for i in range(1, n + 1):
                pad = 100 if (caffe and b == 1 and i == 1) else 1
                setattr(self, f"conv{b}_{i}", nn.Conv2d(cin if i == 1 else cout, cout, 3, padding=pad))
            setattr(self, f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.relu = nn.ReLU(inplace=True)
        self.fc6 = nn.Conv2d(512, fc_channels, 7, padding=0 if caffe else 3)
        self.drop6 = nn.Dropout()
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop7 = nn.Dropout()
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        pad2, pad8 = (0, 0) if caffe else (3, 12)  # modern: the input is replicate-padded by one first
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=pad2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=pad2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=pad8, bias=False)

    def vgg(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pool3, pool4 and fc7."""
        pools = []
        for b, (_, _, n) in enumerate(VGG_BLOCKS, start=1):
            for i in range(1, n + 1):
                x = self.relu(getattr(self, f"conv{b}_{i}")(x))
            x = getattr(self, f"pool{b}")(x)
            pools.append(x)
        x = self.drop6(self.relu(self.fc6(x)))
        x = self.drop7(self.relu(self.fc7(x)))
        return pools[2], pools[3], x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pool3, pool4, fc7 = self.vgg(x)
        score_fr = self.score_fr(fc7)
        if self.geometry == "caffe":
            upscore2 = self.upscore2(score_fr)
            s4 = self.score_pool4(pool4)[:, :, 5:5 + upscore2.shape[2], 5:5 + upscore2.shape[3]]
            upscore_pool4 = self.upscore_pool4(upscore2 + s4)
            s3 = self.score_pool3(pool3)[:, :, 9:9 + upscore_pool4.shape[2], 9:9 + upscore_pool4.shape[3]]
            out = self.upscore8(upscore_pool4 + s3)
            return out[:, :, 31:31 + h, 31:31 + w].contiguous()
        s4 = self.score_pool4(pool4)
        upscore2 = self.upscore2(F.pad(score_fr, (1, 1, 1, 1), mode="replicate"))
        fuse_pool4 = upscore2[:, :, :s4.shape[2], :s4.shape[3]] + s4
        s3 = self.score_pool3(pool3)
        upscore_pool4 = self.upscore_pool4(F.pad(fuse_pool4, (1, 1, 1, 1), mode="replicate"))
        fuse_pool3 = upscore_pool4[:, :, :s3.shape[2], :s3.shape[3]] + s3
        out = self.upscore8(F.pad(fuse_pool3, (1, 1, 1, 1), mode="replicate"))
        return out[:, :, :h, :w].contiguous()


def load_segzoo_weights(textbook: TextbookFCN8s, model: nn.Module) -> TextbookFCN8s:
    """Copy a segzoo ``vgg16-fcn8s``'s weights into the textbook net (same layers, other names)."""
    backbone, head = model.backbone, model.head
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    names = [f"conv{b}_{i}" for b, (_, _, n) in enumerate(VGG_BLOCKS, start=1) for i in range(1, n + 1)]
    pairs = [(getattr(textbook, n), c) for n, c in zip(names, convs, strict=True)]
    pairs += [(textbook.fc6, backbone.fc6), (textbook.fc7, backbone.fc7), (textbook.score_fr, head.score_fr),
              (textbook.score_pool4, head.score_skip["16"]), (textbook.score_pool3, head.score_skip["8"])]
    ups = [(textbook.upscore2, head.upscore_skip["16"]), (textbook.upscore_pool4, head.upscore_skip["8"]),
           (textbook.upscore8, head.upscore)]
    pairs += [(dst, getattr(src, "deconv", src)) for dst, src in ups]
    with torch.no_grad():
        for dst, src in pairs:
            dst.weight.copy_(src.weight)
            if dst.bias is not None:
                dst.bias.copy_(src.bias)
    return textbook


def segzoo_model(geometry: str, num_classes: int = 21, fc_channels: int = 4096) -> nn.Module:
    """segzoo's vgg16-fcn8s in ``geometry``, with random weights."""
    return segzoo.create_model("vgg16-fcn8s", num_classes=num_classes, backbone_kwargs={"fc_channels": fc_channels},
                               geometry=geometry)


# -- side by side --------------------------------------------------------------------------------

@dataclass
class Contender:
    """One way of running the net: a model, its input, and the options segzoo applies."""

    name: str
    model: nn.Module
    dtype: str = "fp32"
    channels_last: bool = False
    winograd: bool | None = None  # None: the model's own choice (segzoo.core.accel); True/False: forced
    gemm: bool | None = None
    compile: bool = False
    textbook: bool = False  # the textbook net (the yardstick itself)
    plain_loop: bool = False  # driven by the textbook's loop: no_grad forward / plain SGD, nothing of segzoo's
    autocast: bool = False  # inference under torch.autocast in NCHW (how segzoo predicted in bf16 before)
    step: Callable[[], Any] | None = None
    first_s: float = 0.0
    times: list[float] = field(default_factory=list)
    peak_mib: float | None = None


# segzoo's variants, by name: the options each one applies ("segzoo" is what `segzoo bench` does here; "plain" is
# create_model's model in a user's own loop, which gets the speed-ups built into the model and nothing else).
VARIANTS: dict[str, dict[str, Any]] = {
    "segzoo": bench.default_options(torch.device("cpu"), "fp32"),
    "plain": {"plain_loop": True},
    "segzoo-no-levers": {"gemm": False, "winograd": False},
    "plain-no-levers": {"plain_loop": True, "gemm": False, "winograd": False},
    "segzoo-winograd": {"winograd": True},
    "segzoo-cl": {"channels_last": True},
    "segzoo-compile": {"channels_last": True, "compile": True},
    "segzoo-bf16": {"channels_last": True, "dtype": "bf16"},
    "segzoo-bf16-nchw": {"channels_last": False, "dtype": "bf16"},
    "autocast-bf16": {"autocast": True, "dtype": "bf16"},
    "textbook-cl": {"channels_last": True, "textbook": True},
}


def textbook_step(model: nn.Module, x: torch.Tensor, mode: str, num_classes: int) -> Callable[[], Any]:
    """The textbook loop: ``no_grad`` forward, or forward/backward/SGD step with ``zero_grad()``."""
    if mode == "infer":
        model.eval()

        def infer() -> torch.Tensor:
            with torch.no_grad():
                return model(x)

        return infer
    model.train()
    target = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def train() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train


def autocast_step(model: nn.Module, x: torch.Tensor, dtype: str) -> Callable[[], Any]:
    """Inference under ``torch.autocast`` with the fp32 model in NCHW: weights cast again at every call."""
    model.eval()

    def infer() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=bench.DTYPES[dtype]):
            return model(x).float()

    return infer


def with_levers(step: Callable[[], Any], c: Contender) -> Callable[[], Any]:
    """``step`` with the contender's forced GEMM/Winograd choices (segzoo.core.accel.levers) around it."""
    def run() -> Any:
        with levers(gemm=c.gemm, winograd=c.winograd):
            return step()

    return run


def build_contenders(names: list[str], geometry: str, num_classes: int, fc_channels: int,
                     x: torch.Tensor, mode: str) -> list[Contender]:
    """The yardstick first, then segzoo's variants, all with the same weights and input."""
    torch.manual_seed(0)
    reference = segzoo_model(geometry, num_classes, fc_channels)
    contenders = []
    for name in ["yardstick", *names]:
        opts = {"textbook": True} if name == "yardstick" else VARIANTS[name]
        if opts.get("textbook"):
            model = load_segzoo_weights(TextbookFCN8s(num_classes, geometry, fc_channels), reference)
        else:
            model = segzoo_model(geometry, num_classes, fc_channels)
            model.load_state_dict(reference.state_dict())
        c = Contender(name, model, **opts)
        m, xi = bench.prepare(c.model, x, c.channels_last, c.compile)
        if c.textbook or c.plain_loop:
            step = textbook_step(m, xi, mode, num_classes)
        elif c.autocast:
            step = autocast_step(m, xi, c.dtype)
        else:
            step = bench.make_step(m, xi, mode, c.dtype, channels_last=c.channels_last)
        c.step = with_levers(step, c)
        contenders.append(c)
    return contenders


def check_same_output(contenders: list[Contender], x: torch.Tensor) -> float:
    """Largest |difference| between the yardstick's and each fp32 contender's eval output (a sanity check)."""
    outs = []
    for c in contenders:
        if c.dtype == "fp32":
            c.model.eval()
            with torch.no_grad():
                outs.append(c.model(x).float())
    return max(float((o - outs[0]).abs().max()) for o in outs)


def run_interleaved(contenders: list[Contender], reps: int, warmup: int, probe_dtypes: list[str]
                    ) -> dict[str, list[float]]:
    """Warm every contender up, then ``reps`` rounds of one timed step each (rotating the order) and
    one matmul probe per dtype. Returns the probes (GFLOP/s) per dtype, one per round."""
    for c in contenders:
        t0 = time.perf_counter()
        c.step()
        c.first_s = time.perf_counter() - t0
        for _ in range(warmup - 1):
            c.step()
    probes: dict[str, list[float]] = {d: [] for d in probe_dtypes}
    for r in range(reps):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            t0 = time.perf_counter()
            c.step()
            c.times.append(time.perf_counter() - t0)
        for d in probe_dtypes:
            probes[d].append(bench.measure_matmul_peak(bench.DTYPES[d], reps=2))
        print(f"  round {r + 1}/{reps}: " + ", ".join(f"{c.name} {c.times[-1] * 1e3:.0f} ms" for c in contenders)
              + "; matmul " + ", ".join(f"{d} {v[-1]:.0f} GFLOP/s" for d, v in probes.items()), file=sys.stderr)
    return probes


def measure_memory(contenders: list[Contender]) -> None:
    """Each contender's peak memory over one step, one at a time (memory is not noisy, time is)."""
    for c in contenders:
        with bench.peak_memory(torch.device("cpu")) as mem:
            c.step()
        c.peak_mib = mem["peak_mib"]


def summarise(contenders: list[Contender], probes: dict[str, list[float]], gflops: float) -> list[dict[str, Any]]:
    """Per contender: median ms, IQR, median per-round ratio to the yardstick, GFLOP/s, fraction of peak."""
    base = contenders[0].times
    rows = []
    for c in contenders:
        p25, med, p75 = bench.quantiles(c.times)
        peak = probes.get(c.dtype) or probes.get("fp32")
        rows.append({
            "name": c.name, "dtype": c.dtype, "channels_last": c.channels_last, "winograd": c.winograd, "gemm": c.gemm,
            "compile": c.compile,
            "ms_median": med * 1e3, "ms_p25": p25 * 1e3, "ms_p75": p75 * 1e3, "first_s": c.first_s,
            "ratio_vs_yardstick": statistics.median(t / b for t, b in zip(c.times, base)),
            "achieved_gflops": gflops / med,
            "fraction_of_matmul_peak": statistics.median(gflops / t / p for t, p in zip(c.times, peak)),
            "peak_dtype": c.dtype if c.dtype in probes else "fp32",
            "peak_memory_mib": c.peak_mib, "times_ms": [t * 1e3 for t in c.times],
        })
    return rows


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": bench.cpu_name(),
        "nproc": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


def compare(mode: str, geometry: str, size: tuple[int, int, int], batch: int, variants: list[str],
            reps: int, warmup: int, num_classes: int = 21, fc_channels: int = 4096,
            memory: bool = True) -> dict[str, Any]:
    """One side-by-side comparison; returns a JSON-ready dict (the rows, the probes, the machine)."""
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
    contenders = build_contenders(variants, geometry, num_classes, fc_channels, x, mode)
    max_diff = check_same_output(contenders, x) if mode == "infer" else None
    fwd = summarize(contenders[0].model, (batch, *size)).gflops
    gflops = fwd * (3 if mode == "train" else 1)
    before = machine_info()
    probe_dtypes = sorted({"fp32", *(c.dtype for c in contenders)})
    probes = run_interleaved(contenders, reps, warmup, probe_dtypes)
    if memory:
        measure_memory(contenders)
    after = machine_info()
    return {
        "mode": mode, "geometry": geometry, "input": list(size), "batch_size": batch, "reps": reps,
        "warmup": warmup, "num_classes": num_classes, "fc_channels": fc_channels,
        "gflops_per_iter": gflops, "max_abs_diff_vs_yardstick": max_diff,
        "matmul_peak_gflops": {d: statistics.median(v) for d, v in probes.items()}, "probes": probes,
        "machine_before": before, "loadavg_after": after["loadavg"],
        "rows": summarise(contenders, probes, gflops),
    }


def print_result(res: dict[str, Any]) -> None:
    peaks = ", ".join(f"{d} {v:.0f}" for d, v in res["matmul_peak_gflops"].items())
    m = res["machine_before"]
    print(f"\n{res['mode']} | geometry {res['geometry']} | batch {res['batch_size']} x "
          f"{'x'.join(map(str, res['input']))} | {res['gflops_per_iter']:.1f} GFLOPs/iteration | "
          f"{res['reps']} interleaved rounds | matmul peak (median) {peaks} GFLOP/s | load {m['loadavg']} -> "
          f"{res['loadavg_after']} | {m['cpu']}, {m['threads']} threads, torch {m['torch']}")
    if res["max_abs_diff_vs_yardstick"] is not None:
        print(f"outputs agree with the yardstick to {res['max_abs_diff_vs_yardstick']:.2e} (max |diff|, fp32)")
    headers = ["contender", "ms (median)", "IQR ms", "ratio vs yardstick", "GFLOP/s", "of matmul peak", "peak MiB"]
    rows = [[r["name"], round(r["ms_median"], 1), f"{r['ms_p25']:.0f}-{r['ms_p75']:.0f}",
             round(r["ratio_vs_yardstick"], 3), round(r["achieved_gflops"], 1),
             f"{r['fraction_of_matmul_peak']:.1%} ({r['peak_dtype']})",
             "" if r["peak_memory_mib"] is None else round(r["peak_memory_mib"])] for r in res["rows"]]
    print(format_table(headers, rows, markdown=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="infer,train", help="infer, train or both (comma-separated)")
    p.add_argument("--geometry", default="modern", help="modern, caffe or both (comma-separated)")
    p.add_argument("--input", default="3x320x320")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--variants", default="segzoo", help=f"segzoo's contenders, from: {', '.join(VARIANTS)}")
    p.add_argument("--reps", type=int, default=7, help="interleaved timed rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--fc-channels", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    p.add_argument("--out", default=None, help="write the results as JSON here (e.g. bench/results/NAME.json)")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_input_size(args.input)
    results = []
    for geometry in args.geometry.split(","):
        for mode in args.mode.split(","):
            res = compare(mode, geometry, size, args.batch_size, variants, args.reps, args.warmup,
                          args.num_classes, args.fc_channels, args.memory)
            print_result(res)
            results.append(res)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv,
                                              "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
