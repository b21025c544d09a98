"""Datasets: write the embedded demo dataset (demo), list every problem in a dataset (check), or measure its
per-channel mean and std (stats)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import DataError
from ..data import SegmentationDataset, check_dataset, find_pairs, load_label_map, write_demo_dataset
from ..data.demo import CLASSES, LABELS_FILE
from ..data.stats import STATS_FILE, dataset_stats, write_stats
from ..data.weak import count_kinds
from ._options import local_folder, typed

COMMAND = "data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    demo = sub.add_parser("demo", help="write the demo dataset (VOC layout, deterministic, no download)")
    demo.add_argument("--out", required=True, metavar="DIR", type=local_folder("--out", "the demo dataset"),
                      help="folder to write (created; reused if it holds the same demo)")
    demo.add_argument("--train", **typed("train"), default=160,
                      help="training images (default 160)")
    demo.add_argument("--val", **typed("val"), default=40, help="validation images (default 40)")
    demo.add_argument("--size", **typed("size"), default=64, help="image side in pixels (default 64)")
    demo.add_argument("--seed", **typed("seed"), default=0)
    check = sub.add_parser("check", help="read every pair of a split and list every bad one")
    check.add_argument("data", metavar="DIR", help="a VOC folder or a folder pair")
    check.add_argument("--split", default="train", help="split name or list file (default train)")
    check.add_argument("--num-classes", **typed("num_classes"), default=None,
                       help="classes (default: from class_names.txt)")
    check.add_argument("--weak-data", default=None, metavar="DIR",
                       help="also count an image-labelled set in ImageFolder layout (DIR/<class>/<image>)")
    check.add_argument("--label-map", default=None, metavar="FILE",
                       help="a label-map YAML (dataset ids -> training ids, names:) the classes are mapped through")
    stats = sub.add_parser("stats", help="per-channel mean and std of a split's images (for --normalization stats)")
    stats.add_argument("data", metavar="DIR", help="a VOC folder or a folder pair")
    stats.add_argument("--split", default="train", help="split name or list file (default train)")
    stats.add_argument("--out", default=None, metavar="FILE", type=local_folder("--out", "the stats file"),
                       help=f"where to write (default DIR/{STATS_FILE})")


def run(args: argparse.Namespace) -> int:
    if args.action == "demo":
        path = write_demo_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed)
        print(f"demo dataset in {path}: VOC layout, {args.train} train + {args.val} val images of "
              f"{args.size}x{args.size}, classes {', '.join(CLASSES)} (255 = void); image-level labels of every "
              f"image in {LABELS_FILE}")
        return 0
    if args.action == "stats":
        stats = dataset_stats(args.data, args.split)
        path = write_stats(stats, args.out or Path(args.data) / STATS_FILE)
        print(f"{args.data} split '{args.split}': {stats['images']} images, {stats['channels']} channel(s) of "
              f"{stats['dtype']}; mean {stats['mean']}, std {stats['std']} (in [0, 1] units); wrote {path}")
        return 0
    label_map = load_label_map(args.label_map) if args.label_map else None
    dataset = SegmentationDataset(find_pairs(args.data, args.split, skip_bad=True), args.num_classes, skip_bad=True,
                                  label_map=label_map)
    problems = check_dataset(dataset)
    kinds = count_kinds(dataset.pairs, dataset.class_names, label_map, args.weak_data)
    for where, names in kinds["unknown"].items():
        problems.append(f"{where} names classes that map to no training class: {', '.join(names)} (use the class "
                        "names or ids, or map them with --label-map)")
    for line in problems:
        print(line)
    print(f"{args.data} split '{args.split}': {len(dataset)} pairs, {dataset.num_classes} classes, "
          f"{len(problems)} problem(s)")
    print(f"images: {kinds['pixel']} with masks, {kinds['listed']} image-labelled (image_labels)"
          + (f", {kinds['folder']} image-labelled in {args.weak_data}" if args.weak_data else ""))
    if problems:
        raise DataError(f"{len(problems)} problem(s) in split '{args.split}' (listed above); fix them, or train "
                        "with --skip-bad to skip bad pairs")
    return 0
