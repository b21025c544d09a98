"""Time a network: images/s, ms/iteration (median and spread), peak memory, GFLOP/s and the fraction of peak."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..api import create_model, load_model
from ..core.recipe import DEFAULT_INPUT_SIZE
from ..core.table import format_table
from ..studies.bench import DTYPES, MODES, benchmark, loader_throughput
from ._options import (
    STDOUT,
    add_json_option,
    check_json_target,
    human,
    input_size,
    typed,
    write_json,
)

COMMAND = "bench"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name (e.g. vgg16-fcn8s), or a checkpoint file written by segzoo")
    p.add_argument("--input", default=None, help="input size CxHxW (default: the recipe's, or 3x500x500)")
    p.add_argument("--batch-size", **typed("batch_size"), default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="fp32, or bf16/fp16: inference on a low-precision copy of the weights, as predict runs it, "
                        "timed beside fp32; training under autocast")
    p.add_argument("--mode", choices=list(MODES), default="infer",
                   help="infer: a forward in inference mode; train: forward, backward and an SGD step")
    p.add_argument("--num-classes", **typed("num_classes"), default=None)
    p.add_argument("--warmup", **typed("warmup"), default=3, help="untimed iterations first (default: 3)")
    p.add_argument("--iters", **typed("iters"), default=10, help="timed iterations (default: 10)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format for the model and input (default: on, except CPU fp32)")
    p.add_argument("--winograd", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU fp32: 3x3 convs as Winograd through NNPACK (default: on where it beats oneDNN: AVX2 CPUs)")
    p.add_argument("--gemm", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU fp32: big-kernel convs on small maps (fc6, fc7) as matrix products (default: on)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model; compile time is reported apart")
    p.add_argument("--no-peak", dest="measure_peak", action="store_false",
                   help="skip the matmul peak probe run after each timed iteration")
    p.add_argument("--peak-tflops", **typed("peak_tflops"), default=None,
                   help="the device's dense bf16 peak in TFLOP/s, for a card segzoo's table does not know")
    p.add_argument("--threads", **typed("threads"), default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="also time the training input pipeline alone on this dataset (images/s vs the model's)")
    p.add_argument("--workers", **typed("workers"), default=0,
                   help="loader worker processes for --data (default 0)")
    add_json_option(p, "the results")


def run(args: argparse.Namespace) -> int:
    given_size = input_size(args.input) if args.input else None
    check_json_target(args.json, args.force, inputs=[args.model, args.data])
    out = human(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if Path(args.model).exists() or args.model.endswith((".pt", ".pth")):  # a file, or meant as one
        model = load_model(args.model)
    else:
        model = create_model(args.model, num_classes=args.num_classes)
    recipe = model.recipe
    c, h, w = given_size or (recipe.input_size or DEFAULT_INPUT_SIZE)
    size = (c, h, w)
    result = benchmark(
        model, size, batch_size=args.batch_size, device=args.device, dtype=args.dtype, mode=args.mode,
        warmup=args.warmup, iters=args.iters, channels_last=args.channels_last, winograd=args.winograd, gemm=args.gemm,
        compile=args.compile,
        measure_peak=args.measure_peak, device_peak_tflops=args.peak_tflops, name=recipe.name,
    )
    if args.data:
        result.loader_workers = args.workers
        result.loader_images_per_s = loader_throughput(
            args.data, crop=size[-1], batch_size=args.batch_size, workers=args.workers,
            pin_memory=result.device == "cuda", num_classes=getattr(model, "num_classes", None))
    print(format_table(["", ""], result.rows()).split("\n", 2)[2], file=out)
    if args.json != STDOUT:  # as before: the JSON follows the table on standard output (for '-', write_json does)
        print(f"\n{result.to_json()}")
    write_json(args.json, json.loads(result.to_json()), args.force)
    return 0
