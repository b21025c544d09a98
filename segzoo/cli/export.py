"""Export a checkpoint for use outside Python: ONNX (onnxruntime), TorchScript or a torch.export program.

The file carries the class names, the input normalization and the recipe, and every export is checked
against torch at three input sizes it was not made at (one odd) before it is written; the differences
are printed.
"""

from __future__ import annotations

import argparse

from ..api import load_model
from ..infer.export import FORMATS, OPSET, export_model
from ._options import check_new_file

COMMAND = "export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a model or training checkpoint (.pt)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (dynamic batch, height, width; needs pip install 'segzoo[export]'), torchscript "
                        "(traced), or exported (torch.export's .pt2)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset, 17 or newer (default {OPSET})")


def run(args: argparse.Namespace) -> int:
    check_new_file(args.out, args.force, inputs=(args.checkpoint,))
    report = export_model(load_model(args.checkpoint), args.format, args.out, force=args.force, opset=args.opset)
    for line in report.lines():
        print(line)
    return 0
