"""bf16 vs fp32 on the CPU: the matmul peaks, and predict's throughput and agreement (issue 13).

Usage: python bench/bf16_predict.py --model vgg16-fcn8s --size 500 --rounds 3
One process, interleaved: per round a 2048^3 matmul in each type, then one ``predict_image`` of a
SIZE x SIZE image in each (``--dtype bf16`` is autocast: convolutions and matrix products in bf16, the
softmax in fp32). Reports medians, the ratios, and the share of pixels whose predicted class agrees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

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
    args = ap.parse_args()
    import segzoo
    from segzoo.infer.predict import predict_image

    torch.manual_seed(0)
    model = segzoo.create_model(args.model, num_classes=21).eval()
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    secs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    labels = {}
    for r in range(args.rounds + 1):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            gf = matmul_gflops(torch.float32 if name == "fp32" else torch.bfloat16)
            t = time.perf_counter()
            p = predict_image(model, image, dtype=name)
            s = time.perf_counter() - t
            if r:
                peaks[name].append(gf)
                secs[name].append(s)
            labels[name] = p.argmax(0)
    agree = float((labels["fp32"] == labels["bf16"]).float().mean())
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    med = {k: statistics.median(v) for k, v in secs.items()}
    print(json.dumps({"model": args.model, "input": f"3x{args.size}x{args.size}", "threads": torch.get_num_threads(),
                      "matmul_gflops_fp32": round(statistics.median(peaks["fp32"]), 1),
                      "matmul_gflops_bf16": round(statistics.median(peaks["bf16"]), 1),
                      "matmul_bf16_over_fp32": round(statistics.median(peaks["bf16"]) /
                                                     statistics.median(peaks["fp32"]), 2),
                      "predict_s_fp32": round(med["fp32"], 2), "predict_s_bf16": round(med["bf16"], 2),
                      "predict_speedup_bf16": round(med["fp32"] / med["bf16"], 2),
                      "pixels_agreeing": round(agree, 4), "load_after": load}))


if __name__ == "__main__":
    main()
