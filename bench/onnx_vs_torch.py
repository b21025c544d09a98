"""onnxruntime vs torch inference on the CPU, one process, interleaved (issue 13).

Usage: python bench/onnx_vs_torch.py --model vgg16-fcn8s --geometry modern --size 500 --rounds 5
Exports the model (random weights, full width) to ONNX with segzoo.infer.export, then times one forward of
each per round at 1 x 3 x SIZE x SIZE, the starting contender alternating; reports the median milliseconds,
the median per-round ratio onnxruntime / torch, and the largest logit difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg16-fcn8s")
    ap.add_argument("--geometry", default="modern")
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--classes", type=int, default=21)
    args = ap.parse_args()
    import segzoo
    from segzoo.infer.export import export_model
    from segzoo.infer.runtime import OnnxModel

    torch.manual_seed(0)
    model = segzoo.create_model(args.model, num_classes=args.classes, geometry=args.geometry).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        t = time.perf_counter()
        export_model(model, "onnx", path, check=False)
        export_s = time.perf_counter() - t
        ort = OnnxModel(path, threads=torch.get_num_threads())
        x = torch.randn(1, 3, args.size, args.size)
        with torch.inference_mode():
            want = model(x)
        diff = float((ort(x) - want).abs().max())
        times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        runners = {"torch": lambda: model(x), "onnxruntime": lambda: ort(x)}
        for r in range(args.rounds + 1):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                with torch.inference_mode():
                    t = time.perf_counter()
                    runners[name]()
                    ms = (time.perf_counter() - t) * 1000
                if r:  # round 0 warms up
                    times[name].append(ms)
    ratios = [o / t for o, t in zip(times["onnxruntime"], times["torch"])]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(json.dumps({"model": args.model, "geometry": args.geometry, "input": f"1x3x{args.size}x{args.size}",
                      "threads": torch.get_num_threads(), "torch_ms": round(statistics.median(times["torch"])),
                      "onnxruntime_ms": round(statistics.median(times["onnxruntime"])),
                      "ort_over_torch": round(statistics.median(ratios), 3), "max_abs_diff": diff,
                      "logit_scale": float(want.abs().max()), "export_s": round(export_s, 1), "load_after": load,
                      "rounds": times}))


if __name__ == "__main__":
    main()
