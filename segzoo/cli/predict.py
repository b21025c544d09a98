"""Predict masks for images: a VOC-palette PNG and a side-by-side overlay per image (--probs: softmax .npy).

IMAGE may be files, folders (searched recursively) or quoted globs; the outputs mirror each image's path
relative to its folder or glob. The model is a checkpoint (.pt) or an exported .onnx file (run by
onnxruntime). --tile S --overlap F predicts large images in overlapping tiles in bounded memory; --tta flip
and --tta scales=0.75,1,1.25 average the softmax over mirrored and rescaled views.
"""

from __future__ import annotations

import argparse
import sys

from ..api import load_model
from ..core.errors import SegzooError
from ..infer.predict import predict_files
from ..infer.runtime import DTYPES, OnnxModel
from ..infer.tta import parse_tta
from ..train.runtime import resolve_device
from ._options import local_folder, tile_options, typed

COMMAND = "predict"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or quoted globs ('data/**/*.tif')")
    p.add_argument("--checkpoint", "--model", required=True, metavar="FILE",
                   help="a model or training checkpoint (.pt), or an exported .onnx file")
    p.add_argument("--out", required=True, metavar="DIR", type=local_folder("--out", "the predictions"),
                   help="folder for the outputs (never one of the inputs)")
    p.add_argument("--probs", action="store_true", help="also save per-class softmax probabilities (C x H x W .npy)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tile", **typed("tile"), default=None, metavar="S",
                   help="predict in S x S tiles (e.g. 512), blended where they overlap: bounded memory for any size")
    p.add_argument("--overlap", **typed("overlap"), default=None, metavar="F",
                   help="tile overlap, a fraction (default 0.25; only with --tile)")
    p.add_argument("--tta", action="append", default=[], metavar="AUG",
                   help="test-time augmentation: flip, and/or scales=0.75,1,1.25 (repeat the flag to combine)")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES),
                   help="compute type for a torch model (default fp32; bf16/fp16 run a low-precision, "
                        "channels-last copy of the weights)")
    p.add_argument("--batch", **typed("batch"), default=1, help="tiles run together (default 1; only with "
                                                                          "--tile)")
    p.add_argument("--workers", **typed("workers"), default=2,
                   help="processes reading images (default 2; 0 = none)")
    p.add_argument("--no-overlay", action="store_true", help="write only the masks (and --probs), no overlays")
    p.add_argument("--force", action="store_true", help="replace outputs of an earlier run (inputs never)")
    p.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                   help="a progress bar with images/s on stderr (default: when stderr is a terminal)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no list of files written")


def run(args: argparse.Namespace) -> int:
    args.overlap = tile_options(args)
    if args.batch != 1 and args.tile is None:
        raise SegzooError("--batch runs tiles together, so it needs --tile S (without it each image is one forward "
                          "pass)")
    tta = parse_tta(args.tta)
    if args.checkpoint.lower().endswith(".onnx"):
        model, device = OnnxModel(args.checkpoint), "cpu"
    else:
        model, device = load_model(args.checkpoint), resolve_device(args.device)
    progress = not args.quiet and (sys.stderr.isatty() if args.progress is None else args.progress)
    written = predict_files(model, args.images, args.out, probs=args.probs, device=device, tile=args.tile,
                            overlap=args.overlap, tta=tta, dtype=args.dtype, workers=args.workers, batch=args.batch,
                            force=args.force, overlays=not args.no_overlay,
                            progress=progress)
    if not args.quiet:
        for path in written:
            print(path)
    return 0
