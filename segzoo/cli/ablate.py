"""Train a grid of backbones x heads on the same data and compare them in a table and two plots."""

from __future__ import annotations

import argparse

from ..studies.ablate import Study, results_table, run_study

COMMAND = "ablate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", default=None, help="a YAML study file (backbones, heads, out, staged, train)")
    p.add_argument("--backbones", default=None, help="comma-separated, e.g. vgg16,alexnet")
    p.add_argument("--heads", default=None, help="comma-separated, e.g. fcn32s,fcn16s,fcn8s,fcn4s")
    p.add_argument("--staged", action=argparse.BooleanOptionalAction, default=None,
                   help="train 32s, then 16s from it, then 8s (and 4s), as in the paper (default: each at once)")
    p.add_argument("--data", default=None, metavar="DIR", help="dataset (default: the embedded demo dataset)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--input-size", type=int, default=None, help="side of the square training crop")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="train every variant with a training preset, e.g. paper-cvpr (segzoo train --help lists them)")
    p.add_argument("--fc-channels", type=int, default=None, help="fc6/fc7 width for VGG16/AlexNet (default 4096)")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default runs/ablation)")
    p.add_argument("--restart", action="store_true",
                   help="delete this study's variants in --out and train them all again (needed to change the "
                        "settings of a study that has begun)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a bar for the study and one for the running variant (default: on a terminal)")


def run(args: argparse.Namespace) -> int:
    study = Study.from_yaml(args.study) if args.study else Study(backbones=["vgg16", "alexnet"],
                                                                  heads=["fcn32s", "fcn16s", "fcn8s"])
    if args.backbones:
        study.backbones = args.backbones.split(",")
    if args.heads:
        study.heads = args.heads.split(",")
    if args.staged is not None:
        study.staged = args.staged
    if args.out:
        study.out = args.out
    for key in ("data", "epochs", "seed", "batch_size", "input_size", "preset"):
        if getattr(args, key) is not None:
            study.train[key] = getattr(args, key)
    if args.fc_channels:
        study.train["backbone_kwargs"] = {**study.train.get("backbone_kwargs", {}), "fc_channels": args.fc_channels}
    rows = run_study(study, progress=args.progress, restart=args.restart)
    print(results_table(rows))
    print(f"\nwrote {study.out}/results.csv, results.md, results.png, curves.png")
    return 0
