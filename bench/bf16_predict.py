"""bf16 vs fp32 on the CPU: the matmul peaks, and predict's throughput and agreement (issue 13).

Usage: python bench/bf16_predict.py --model vgg16-fcn8s --size 500 --rounds 3 [--out bench/results/NAME.json]
One process, interleaved: per round a 2048^3 matmul in each type, then one ``predict_image`` of a
SIZE x SIZE image in each type (``dtype="bf16"``: a bf16, channels-last copy of the weights, as
``segzoo predict --dtype bf16`` runs it), and the model's forward alone under ``torch.autocast`` in NCHW (how
segzoo ran bf16 before: every weight cast again at each call). The order rotates each round. Reports
medians, the median per-round ratios, and the share of pixels whose predicted class agrees with fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg16-fcn8s")
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import segzoo
    from segzoo.data.transforms import image_tensor, normalize
    from segzoo.infer.predict import predict_image

    torch.manual_seed(0)
    model = segzoo.create_model(args.model, num_classes=21).eval()
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    x = normalize(image_tensor(image), model.normalization)[None]

    def autocast_forward() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()[0].softmax(0)

    runs = {"fp32": lambda: predict_image(model, image, dtype="fp32"),
            "bf16": lambda: predict_image(model, image, dtype="bf16"),
            "autocast-bf16-nchw (forward only)": autocast_forward}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    secs: dict[str, list[float]] = {k: [] for k in runs}
    labels = {}
    names = list(runs)
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            p = runs[name]()
            s = time.perf_counter() - t
            if r:
                secs[name].append(s)
            labels[name] = p.argmax(0)
        for dt in peaks:
            gf = matmul_gflops(torch.float32 if dt == "fp32" else torch.bfloat16)
            if r:
                peaks[dt].append(gf)
    agree = {k: round(float((labels["fp32"] == v).float().mean()), 4) for k, v in labels.items() if k != "fp32"}
    med = {k: statistics.median(v) for k, v in secs.items()}
    speed = {k: round(statistics.median(a / b for a, b in zip(secs["fp32"], v)), 2) for k, v in secs.items()}
    result = {"model": args.model, "input": f"3x{args.size}x{args.size}", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rounds": args.rounds,
              "matmul_gflops_fp32": round(statistics.median(peaks["fp32"]), 1),
              "matmul_gflops_bf16": round(statistics.median(peaks["bf16"]), 1),
              "matmul_bf16_over_fp32": round(statistics.median(b / a for a, b in zip(peaks["fp32"], peaks["bf16"])), 2),
              "seconds_median": {k: round(v, 3) for k, v in med.items()},
              "fp32_time_over_this": speed, "pixels_agreeing_with_fp32": agree,
              "seconds_per_round": secs, "loadavg_after": list(os.getloadavg())}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
