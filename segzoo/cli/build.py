"""Build a network by name and print its summary; --out saves it as a checkpoint."""

from __future__ import annotations

import argparse

from ..api import create_model, save_model
from ..core.recipe import DEFAULT_INPUT_SIZE
from ..core.table import format_table
from ..studies.summary import summarize
from ._options import (
    add_json_option,
    check_json_target,
    check_new_file,
    human,
    input_size,
    parse_options,
    typed,
    write_json,
)

COMMAND = "build"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name, <backbone>-<head> (e.g. vgg16-fcn8s) or a recipe")
    p.add_argument("--num-classes", **typed("num_classes"), default=None,
                   help="number of classes (default: the recipe's, or 21)")
    p.add_argument("--input", default=None,
                   help="input size CxHxW for the summary (default: the recipe's, or 3x500x500)")
    p.add_argument("--backbone-weights", default=None, metavar="FILE|imagenet",
                   help="a local ImageNet classifier state dict (torchvision or timm layout), or imagenet: "
                        "torchvision's (vgg16, alexnet) or timm's pretrained weights from their caches "
                        "(TORCH_HOME, HF_HOME), fetched once if online; SEGZOO_OFFLINE=1 never downloads")
    p.add_argument("--backbone-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a backbone option, e.g. fc_channels=512 (repeatable)")
    p.add_argument("--head-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a head option, e.g. learnable_upsampling=false (repeatable)")
    p.add_argument("--geometry", default=None, **typed("geometry"),
                   help="modern (default) or caffe: the paper's reference nets (pad 100, crops), for its weights")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="whole-model weights: a segzoo checkpoint or state dict, or a file in a registered weight "
                        "layout (segzoo list)")
    p.add_argument("--out", default=None, metavar="FILE", help="write a checkpoint (weights + recipe) here")
    add_json_option(p, "the summary", force=False)
    p.add_argument("--force", action="store_true",
                   help="replace the --out or --json file if it exists (default: refuse)")


def run(args: argparse.Namespace) -> int:
    given = input_size(args.input) if args.input else None
    if args.out:
        check_new_file(args.out, args.force)
    check_json_target(args.json, args.force, inputs=[args.weights, args.backbone_weights],
                      outputs=[args.out])
    out = human(args)
    model = create_model(args.model, num_classes=args.num_classes, backbone_weights=args.backbone_weights,
                         backbone_kwargs=parse_options(args.backbone_opt, "--backbone-opt"),
                         head_kwargs=parse_options(args.head_opt, "--head-opt"), geometry=args.geometry,
                         weights=args.weights)
    r = model.recipe
    size = given or tuple(r.input_size or DEFAULT_INPUT_SIZE)
    s = summarize(model, (1, *size))
    strides = " + ".join(str(x) for x in model.head.strides)
    rows: list[list[object]] = [
        ["model", r.name],
        ["backbone", f"{r.backbone}  (plugin {r.backbone_plugin}, {r.backbone_dist})"],
        ["head", f"{r.head}  (plugin {r.head_plugin}, {r.head_dist})"],
        ["classes", r.num_classes],
        ["geometry", r.geometry],
        ["strides fused", f"{strides}  (final upsampling {model.head.strides[-1]}x)"],
        ["parameters", f"{s.params:,} total, {s.trainable:,} trainable"],
        ["input", " x ".join(map(str, s.input_shape))],
        ["output", " x ".join(map(str, s.output_shape))],
        *_window_row(model, size[-2], size[-1]),
        ["GFLOPs", f"{s.gflops:.1f} (forward, at this input)"],
    ]
    if r.backbone_weights:
        rows.insert(3, ["backbone weights", r.backbone_weights])
    if r.weights:
        rows.insert(3, ["weights", r.weights])
    print(format_table(["", ""], rows).split("\n", 2)[2], file=out)
    path = save_model(model, args.out, overwrite=args.force) if args.out else None
    if path is not None:
        print(f"saved {path} (load it with segzoo.load_model)", file=out)
    write_json(args.json, {
        "model": r.name, "backbone": r.backbone, "backbone_plugin": r.backbone_plugin, "head": r.head,
        "head_plugin": r.head_plugin, "num_classes": r.num_classes, "geometry": r.geometry,
        "strides": list(model.head.strides), "parameters": s.params, "trainable": s.trainable,
        "input_shape": list(s.input_shape), "output_shape": list(s.output_shape), "gflops": s.gflops,
        "weights": r.weights, "backbone_weights": r.backbone_weights, "saved": str(path) if path else None,
    }, args.force)
    return 0


def _window_row(model, height: int, width: int) -> list[list[object]]:
    """A row saying where the scores lie, for a model whose output is a centred window of its input."""
    win = model.output_window(height, width)
    if win.is_full(height, width):
        return []
    return [["output window", f"{win.height} x {win.width} at row {win.top}, column {win.left} of the {height} x "
                              f"{width} input (valid convolutions: labels are cropped to it; predict mirrors and "
                              "tiles whole images)"]]
