"""Tiled prediction on one large image: wall seconds and peak RSS of ``segzoo predict --tile`` (issue 13).

Usage: python bench/predict_large.py --size 8000 --model alexnet-fcn8s --tile 512 [--work DIR]
Writes a random-weights checkpoint and a smooth synthetic RGB TIFF of SIZE x SIZE, then runs the real CLI in a
child process; peak RSS is the child's ru_maxrss (so it covers reading, tiling, the outputs and the overlay).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--model", default="alexnet-fcn8s")
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--work", default="/tmp/segzoo-bench-large")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import tifffile

    import segzoo

    ckpt = work / f"{args.model}.pt"
    if not ckpt.exists():
        segzoo.save_model(segzoo.create_model(args.model, num_classes=args.classes), ckpt)
    image = work / f"image_{args.size}.tif"
    if not image.exists():
        y, x = np.mgrid[0:args.size, 0:args.size].astype(np.float32) / 97.0
        rgb = np.stack([np.sin(x) * np.cos(y), np.sin(x + y), np.cos(x * 0.7 - y)], -1)
        tifffile.imwrite(image, ((rgb + 1) * 127.5).astype(np.uint8))
        del y, x, rgb
    out = work / "out"
    cmd = [sys.executable, "-m", "segzoo", "predict", str(image), "--checkpoint", str(ckpt), "--out", str(out),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--workers", "0", "--force", "--quiet",
           "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(json.dumps({"model": args.model, "classes": args.classes, "size": args.size, "tile": args.tile,
                      "overlap": args.overlap, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib),
                      "load_after": load, "command": " ".join(cmd[1:])}))


if __name__ == "__main__":
    main()
