"""Evaluate a checkpoint on a dataset split: the paper's four metrics, boundary IoU, per-class IU, and a JSON file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..api import load_model
from ..core.errors import SegzooError
from ..data import SegmentationDataset, eval_transform, find_pairs, load_label_map
from ..infer.tile import TiledModel
from ..infer.tta import parse_tta
from ..train import evaluate
from ..train.metrics import BOUNDARY_PX, report
from ..train.runtime import setup
from ..train.setup import eval_loader
from ._options import add_json_option, check_json_target, human, int_in, write_json

COMMAND = "eval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a model or training checkpoint (.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="a VOC folder or a folder pair")
    p.add_argument("--split", default="val", help="split name or list file (default val)")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=1,
                   help="images per forward pass (default 1: each image at its own size; larger batches pad "
                        "smaller images, which can change predictions near their borders)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--workers", type=int_in(0, 256), default=0, help="data-loading processes (default 0)")
    p.add_argument("--label-map", default=None, metavar="FILE.yaml|NAME",
                   help="the label map the model was trained with (segzoo train --label-map: a file, or cityscapes "
                        "/ ade20k), for data in the dataset's own ids")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad pairs instead of stopping")
    p.add_argument("--boundary-px", type=int, default=BOUNDARY_PX, metavar="PX",
                   help=f"width of the band around each contour that boundary IoU scores (default {BOUNDARY_PX}; "
                        "docs/metrics.md)")
    p.add_argument("--tile", type=int, default=None, metavar="S",
                   help="score each image in S x S tiles blended where they overlap (as predict --tile)")
    p.add_argument("--overlap", type=float, default=0.25, metavar="F", help="tile overlap, a fraction (default 0.25)")
    p.add_argument("--tta", action="append", default=[], metavar="AUG",
                   help="test-time augmentation: flip, and/or scales=0.75,1,1.25 (repeat the flag to combine)")
    add_json_option(p, "the metrics", default=" (default: eval-<split>.json beside the checkpoint, replaced by "
                    "each evaluation of that checkpoint and split)")


def run(args: argparse.Namespace) -> int:
    if args.boundary_px < 1:
        raise SegzooError(f"--boundary-px must be >= 1, got {args.boundary_px} (the band's width in pixels)")
    check_json_target(args.json, args.force, inputs=[args.checkpoint, args.data, args.split, args.label_map])
    out = human(args)
    rt = setup(args.device)
    model = load_model(args.checkpoint).to(rt.device)
    pairs = find_pairs(args.data, args.split, args.skip_bad)
    label_map = load_label_map(args.label_map) if args.label_map else None
    dataset = SegmentationDataset(pairs, model.num_classes, eval_transform(model.normalization), args.skip_bad,
                                  label_map=label_map)
    names = list(model.recipe.class_names or dataset.class_names)
    loader = eval_loader(dataset, rt, args.batch_size, args.workers)
    scorer = TiledModel(model, args.tile, args.overlap, parse_tta(args.tta)) if args.tile or args.tta else model
    m = evaluate(scorer, loader, rt, model.num_classes, names, boundary_px=args.boundary_px)
    print(f"{model.recipe.name} on {args.data} split '{args.split}' ({len(dataset)} images, "
          f"{m['pixels']:,} labelled pixels" + (f", {m['skipped'] + len(pairs.dropped)} skipped" if
                                                 m["skipped"] or pairs.dropped else "") + ")", file=out)
    print(report(m), file=out)
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
              "model": model.recipe.name, **m}
    # the default file is segzoo's own (named after the checkpoint and split): a new evaluation replaces it
    target = args.json or str(Path(args.checkpoint).with_name(f"eval-{Path(args.split).stem}.json"))
    written = write_json(target, result, force=args.force or not args.json)
    if written is not None:
        print(f"\nwrote {written}", file=out)
    return 0
