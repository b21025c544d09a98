"""Convert published weights (torchfcn's layout of the paper's FCNs) into a segzoo checkpoint.

The checkpoint carries its recipe (model, classes, the paper's geometry and its BGR 0-255 input
normalization), so segzoo.load_model and the other commands need no further flags.
"""

from __future__ import annotations

import argparse

from ..api import convert, get_registry
from ._options import check_new_file, typed

COMMAND = "convert"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="IN", help="the weights file to convert (a state dict saved with torch.save)")
    p.add_argument("out", metavar="OUT", help="where to write the segzoo checkpoint")
    p.add_argument("--from", dest="source", required=True, metavar="LAYOUT",
                   help="the layout of IN, one a plugin registered: " + "; ".join(
                       f"{name} ({layout.description})" for name, layout in get_registry().weight_layouts().items()))
    p.add_argument("--model", required=True,
                   help="the model IN holds, as <backbone>-<head> (the layout's error names the ones that fit)")
    p.add_argument("--num-classes", **typed("num_classes"), default=None,
                   help="default: the number of classes IN scores")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")


def run(args: argparse.Namespace) -> int:
    check_new_file(args.out, args.force, inputs=(args.src,))
    model = convert(args.src, args.model, args.out, source=args.source, num_classes=args.num_classes,
                    overwrite=args.force)
    r = model.recipe
    print(f"wrote {args.out}: {r.name} with {r.num_classes} classes in geometry '{r.geometry}' "
          f"(load it with segzoo.load_model)")
    return 0
