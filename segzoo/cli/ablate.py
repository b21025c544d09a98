"""Train a grid of backbones x heads (x staged) with one or more seeds on the same data, and compare them in a table
and two plots; with no --data, on the embedded demo dataset with its CPU-sized settings."""

from __future__ import annotations

import argparse

from ..core.errors import SegzooError
from ..core.settings import SETTINGS
from ..studies.ablate import run_study
from ..studies.report import results_table
from ..studies.study import Study
from ..train.demo import DEMO_BACKBONE_OPTIONS, DEMO_STUDY_SETTINGS
from ..train.metrics import BOUNDARY_PX
from ._options import local_folder, typed

COMMAND = "ablate"

# The grid when none is given: the paper's Table 2 question on VGG16 (does each finer skip help?), plus the one
# users bring next, "does a further 4x stage (pool2) still help?"
DEFAULT_BACKBONES = ["vgg16"]
DEFAULT_HEADS = ["fcn32s", "fcn16s", "fcn8s", "fcn4s"]

_STAGED = {"true": [True], "yes": [True], "staged": [True], "false": [False], "no": [False], "at-once": [False],
           "both": [False, True]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("study", nargs="?", default=None,
      help="a YAML study file (backbones, heads, staged, seeds, baseline, boundary_px, out, train); flags override it")
    a("--backbones", default=None, help=f"comma-separated (default {','.join(DEFAULT_BACKBONES)})")
    a("--heads", default=None, help=f"comma-separated (default {','.join(DEFAULT_HEADS)})")
    a("--models", default=None, metavar="NAME,NAME",
      help="more rows by model or recipe name, trained with the same settings (e.g. unet-classic-16)")
    a("--staged", nargs="?", const="true", default=None, metavar="false,true",
      help="train 32s, then 16s from it, then 8s (and 4s), as in the paper; '--staged false,true' (or both) puts "
           "at once and staged in one table (default: at once)")
    a("--seeds", **typed("seeds"), default=None, metavar="N",
      help="train every variant with N seeds (--seed and the N-1 after it): mean ± std and paired 95%% intervals "
           "(default 1)")
    a("--pixel-fraction", default=None, metavar="F,F", type=_fractions,
      help="the share of training images that keep their masks, e.g. 0.1,0.25,1 (chosen by seed: the same images "
           "for every variant of a seed); the others are image-labelled (--weak) or left out (default 1)")
    a("--weak", default=None, metavar="false,true",
      help="train the images without masks from image-level labels read off their hidden masks; 'false,true' (or "
           "both) puts both in one table, with the gain paired by seed (default false)")
    a("--weak-weight", **typed("weak_weight"), default=None, metavar="W",
      help="weight of the image-level loss in the --weak variants (default 1; docs/weak-labels.md)")
    a("--baseline", default=None, metavar="NAME",
      help="the head (per backbone) or variant the others are compared with (default: the first head)")
    a("--boundary-px", **typed("boundary_px"), default=None, metavar="PX",
      help=f"band width of boundary IoU in pixels (default {BOUNDARY_PX}; docs/metrics.md)")
    a("--data", default=None, metavar="DIR", help="dataset (default: the embedded demo dataset)")
    a("--test-split", default=None, metavar="SPLIT",
      help="report every run's last and best epoch on this split, the best epoch chosen on the validation split "
           "(default: report on the validation split, where the best epoch is optimistic)")
    a("--num-classes", **typed("num_classes"), default=None,
      help="classes (default: the dataset's class_names.txt, else counted in the masks)")
    demo = DEMO_STUDY_SETTINGS
    a("--epochs", **typed("epochs"), default=None, help=f"(default 10; demo {demo['epochs']})")
    a("--seed", **typed("seed"), default=None, help="the first seed (default 0)")
    a("--batch-size", **typed("batch_size"), default=None,
      help=f"(default: the preset's, else 8; demo {demo['batch_size']})")
    a("--input-size", **typed("input_size"), default=None,
      help=f"side of the square training crop (default 320; demo {demo['input_size']})")
    a("--lr", **typed("lr"), default=None,
      help=f"learning rate (default: the preset's, else the optimizer's; demo {demo['lr']:g})")
    a("--preset", default=None, metavar="NAME",
      help="train every variant with a training preset, e.g. paper-cvpr (segzoo train --help lists them)")
    a("--fc-channels", **typed("fc_channels"), default=None,
      help=f"fc6/fc7 width, for the backbones that take it (default 4096; demo "
           f"{DEMO_BACKBONE_OPTIONS['fc_channels']})")
    a("--out", default=None, metavar="DIR", type=local_folder("--out", "a study's run folders"),
      help="results folder (default runs/ablation)")
    a("--restart", action="store_true",
      help="delete this study's variants in --out and train them all again (needed to change the settings of a "
           "study that has begun)")
    a("--progress", action=argparse.BooleanOptionalAction, default=None,
      help="a bar for the study and one for the running variant (default: on a terminal)")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _bools(text: str, flag: str = "--staged") -> bool | list[bool]:
    values = []
    for word in _names(text.lower()) or [""]:
        if word not in _STAGED:
            raise SegzooError(f"{flag} takes true, false or both (or false,true), got {text!r}")
        values += [v for v in _STAGED[word] if v not in values]
    return values if len(values) > 1 else values[0]


def _fractions(text: str) -> float | list[float]:
    """``--pixel-fraction F,F``: each F in the setting's range (segzoo.core.settings), as train's flag takes one."""
    try:
        values = [SETTINGS["pixel_fraction"].parse(v) for v in _names(text) or [text]]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; several are separated by commas, e.g. 0.1,0.25,1") from None
    return values if len(values) != 1 else values[0]


def build_study(args: argparse.Namespace) -> Study:
    """The study file's (or the default) study with the flags given applied."""
    study = Study.from_yaml(args.study) if args.study else Study(list(DEFAULT_BACKBONES), list(DEFAULT_HEADS))
    if args.backbones is not None:
        study.backbones = _names(args.backbones)
    if args.heads is not None:
        study.heads = _names(args.heads)
    if args.models is not None:
        study.models = _names(args.models)
    if args.staged is not None:
        study.staged = _bools(args.staged)
    if args.pixel_fraction is not None:
        study.pixel_fraction = args.pixel_fraction
    if args.weak is not None:
        study.weak = _bools(args.weak, "--weak")
    for key in ("seeds", "baseline", "boundary_px", "out", "test_split"):
        if getattr(args, key) is not None:
            setattr(study, key, getattr(args, key))
    study.train = dict(study.train)
    for key in ("data", "num_classes", "epochs", "seed", "batch_size", "input_size", "lr", "preset", "weak_weight"):
        if getattr(args, key) is not None:
            study.train[key] = getattr(args, key)
    if args.fc_channels is not None:
        study.train["backbone_kwargs"] = {**(study.train.get("backbone_kwargs") or {}),
                                          "fc_channels": args.fc_channels}
    study.check()
    return study


def run(args: argparse.Namespace) -> int:
    study = build_study(args)
    rows = run_study(study, progress=args.progress, restart=args.restart)
    print(results_table(rows, study.baseline or study.heads[0]))
    print(f"\nwrote {study.out}/results.md (with per-class IU), results.json, results.csv, runs.csv, results.png, "
          "curves.png")
    return 0
