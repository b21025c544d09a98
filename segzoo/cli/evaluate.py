"""Evaluate a checkpoint on a dataset split: the paper's four metrics, boundary IoU, per-class IU, and a JSON file."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

from ..api import load_model
from ..core.errors import SegzooError
from ..core.files import check_output_path, read_text_file, url_scheme
from ..data import SegmentationDataset, eval_transform, find_pairs, load_label_map, window_transform
from ..infer.tile import TiledModel
from ..infer.tta import parse_tta
from ..io.hub import is_hub_id
from ..train import evaluate
from ..train.metrics import BOUNDARY_PX, report
from ..train.runtime import setup
from ..train.setup import eval_loader
from ._options import STDOUT, add_json_option, human, tile_options, typed, write_json

COMMAND = "eval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a model or training checkpoint (.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="a VOC folder or a folder pair")
    p.add_argument("--split", default="val", help="split name or list file (default val)")
    p.add_argument("--batch-size", **typed("batch_size"), default=1,
                   help="images per forward pass (default 1: each image at its own size; larger batches pad "
                        "smaller images, which can change predictions near their borders)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--workers", **typed("workers"), default=0, help="data-loading processes (default 0)")
    p.add_argument("--label-map", default=None, metavar="FILE.yaml|NAME",
                   help="the label map the model was trained with (segzoo train --label-map: a file, or cityscapes "
                        "/ ade20k), for data in the dataset's own ids")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad pairs instead of stopping")
    p.add_argument("--boundary-px", **typed("boundary_px"), default=BOUNDARY_PX, metavar="PX",
                   help=f"width of the band around each contour that boundary IoU scores (default {BOUNDARY_PX}; "
                        "docs/metrics.md)")
    p.add_argument("--tile", **typed("tile"), default=None, metavar="S",
                   help="score each image in S x S tiles blended where they overlap (as predict --tile)")
    p.add_argument("--overlap", **typed("overlap"), default=None, metavar="F",
                   help="tile overlap, a fraction (default 0.25; only with --tile)")
    p.add_argument("--tta", action="append", default=[], metavar="AUG",
                   help="test-time augmentation: flip, and/or scales=0.75,1,1.25 (repeat the flag to combine)")
    add_json_option(p, "the metrics", default=" (default: eval-<split>.json beside the checkpoint, or in the "
                    "current folder for a URL or Hub id; an earlier eval's report there is replaced)")


def _eval_report(path: Path) -> bool:
    """Whether ``path`` is a report an earlier ``segzoo eval`` wrote (a JSON object with its keys)."""
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return False
    try:
        data = json.loads(read_text_file(path, "--json file"))
    except (SegzooError, ValueError):
        return False
    return isinstance(data, dict) and {"checkpoint", "split", "model", "pixels"} <= set(data)


def exported_kind(path: str) -> str | None:
    """``ONNX``, ``torch.export`` or ``TorchScript`` for a file segzoo export wrote, else None (a checkpoint, or
    something load_model will name)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return "ONNX"
    if p.suffix.lower() == ".pt2":
        return "torch.export"
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n.endswith("/constants.pkl") for n in names):
        return "TorchScript"
    return "torch.export" if any(n.endswith("/serialized_exported_program.json") for n in names) else None


def check_checkpoint(path: str) -> None:
    """eval runs checkpoints (segzoo train, save_model); an exported model is refused by name, not called corrupt."""
    kind = exported_kind(path)
    if kind is not None:
        raise SegzooError(
            f"{path} is an exported {kind} model; eval takes a checkpoint (.pt from segzoo train or save_model): "
            "evaluate the checkpoint it was exported from, or run the export with segzoo predict --checkpoint "
            f"{path}")


def run(args: argparse.Namespace) -> int:
    args.overlap = tile_options(args)
    check_checkpoint(args.checkpoint)
    name = f"eval-{Path(args.split).stem}.json"
    remote = url_scheme(args.checkpoint) or is_hub_id(args.checkpoint)  # never a name derived from a URL
    target = args.json or str(Path(name) if remote else Path(args.checkpoint).with_name(name))
    replace = args.force
    if target != STDOUT:  # an earlier eval's report it may replace; never its inputs (not even with --force)
        replace = args.force or _eval_report(Path(target))
        check_output_path(target, (args.checkpoint, args.label_map, args.data), force=replace, flag="--json")
    out = human(args)
    rt = setup(args.device)
    model = load_model(args.checkpoint).to(rt.device)
    pairs = find_pairs(args.data, args.split, args.skip_bad)
    label_map = load_label_map(args.label_map) if args.label_map else None
    # a model whose output is a window of its input sees each image mirrored out to the input whose window it is;
    # tiled, it is mirrored tile by tile instead (segzoo.infer.tile) and scores come back at the image's size
    window = None if args.tile else window_transform(model)
    dataset = SegmentationDataset(pairs, model.num_classes, eval_transform(model.normalization, window),
                                  args.skip_bad, label_map=label_map)
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
    written = write_json(target, result, force=replace)
    if written is not None:
        print(f"\nwrote {written}", file=out)
    return 0
