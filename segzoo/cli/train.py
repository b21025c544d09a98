"""Train any composed network with pixel-wise cross-entropy; with no --data, on the embedded demo dataset."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import train as training  # looked up at each call, so a test's stand-in for train() never sticks
from ..core.errors import SegzooError
from ..core.model import GEOMETRIES
from ..train import OPTIMIZERS, TrainConfig, load_training_checkpoint
from ..train.demo import backbone_of, demo_defaults, describe
from ..train.metrics import report
from ..train.presets import preset_help
from ..train.run_folder import check_new_run
from ..train.setup import default_run_folder
from ._options import int_in, parse_options

COMMAND = "train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--model", default="vgg16-fcn8s", help="<backbone>-<head> or a recipe of registry.yaml (default vgg16-fcn8s)")
    a("--data", default=None, metavar="DIR", help="a VOC folder or folder pair (default: the demo dataset, written "
                                                   "to runs/demo-data beside the run)")
    a("--train-split", default=None, help="split name or list file (default train)")
    a("--val-split", default=None, help="split name or list file, or 'none' (default val)")
    a("--num-classes", type=int, default=None,
      help="classes (default: the dataset's class_names.txt, else counted in the masks)")
    a("--preset", default=None, metavar="NAME",
      help="train with a registered training preset: " + preset_help()
      + ". A preset sets --batch-size, --loss, --optimizer with its --momentum, --weight-decay and the --lr it gives "
        "this net, --geometry, and head options (the paper's: which upsamplings are fixed, score layers at zero); "
        "any of these given as well wins. A staged preset fine-tunes a net from its coarser one: pass "
        "--init-from. docs/paper.md says which produced which table")
    a("--epochs", type=int, default=None, help="epochs (default 10; demo 8); with --resume, the new total, which "
                                                "the learning-rate schedule then follows")
    a("--batch-size", type=int, default=None, help="images per step and process (default: the preset's, else 8; "
                                                     "demo 4)")
    a("--input-size", type=int, default=None, help="side of the square training crop (default 320; demo 64)")
    a("--scale", default=None, metavar="LOW,HIGH", help="random scale range (default 0.5,2; demo 0.75,1.25; 1,1: off)")
    a("--no-flip", action="store_true", help="no random horizontal flips")
    a("--optimizer", default=None, choices=sorted(OPTIMIZERS),
      help="optimizer (default: the preset's, else adamw). paper: the FCN solver's optimizer alone (SGD, "
           "momentum 0.9, lr 1e-4, weight decay 5e-4, biases at 2x lr without decay, constant lr), what --preset "
           "paper-cvpr uses for its first, coarsest net; --preset also sets the batch, loss, geometry and head")
    a("--lr", type=float, default=None, help="learning rate (default: the preset's for this net, else the "
                                              "optimizer's; demo 3e-4 without --preset)")
    a("--weight-decay", type=float, default=None, help="weight decay (default: the preset's, else the optimizer's)")
    a("--momentum", type=float, default=None, help="SGD momentum (default: the preset's, else 0.9)")
    a("--loss", default=None, choices=["mean", "sum"],
      help="mean over valid pixels or the paper's unnormalised sum (default: the preset's, else mean)")
    a("--class-weights", default=None, metavar="W0,W1,...", help="per-class loss weights")
    a("--backbone-weights", default=None, metavar="FILE", help="a local ImageNet classifier state dict")
    a("--fc-channels", type=int_in(1, 65536), default=None,
      help="fc6/fc7 width, for backbones that take fc_channels (default 4096; demo 512)")
    a("--backbone-opt", action="append", default=[], metavar="KEY=VALUE", help="a backbone option (repeatable)")
    a("--head-opt", action="append", default=[], metavar="KEY=VALUE",
      help="a head option, e.g. learnable_upsampling=false (repeatable)")
    a("--normalization", default=None, metavar="stats|FILE",
      help="stats: standardise by the data's per-channel mean/std (DATA/segzoo_stats.json, measured if absent; "
           "segzoo data stats writes it), or a stats file; default: the backbone's (ImageNet or Caffe)")
    a("--geometry", default=None, choices=list(GEOMETRIES),
      help="modern, or caffe: the paper's nets, for backbones that support it (default: the preset's, else modern)")
    a("--init-from", default=None, metavar="CKPT", help="staged training: start from the checkpoint of the net with "
                                                         "this head's registered parent, as the paper's presets do")
    a("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    a("--amp", default=None, action=argparse.BooleanOptionalAction, help="mixed precision (default: on for CUDA)")
    a("--workers", type=int, default=None, help="data-loading processes (default 0)")
    a("--seed", type=int, default=None, help="random seed (default 0)")
    a("--out", default=None, metavar="RUN_DIR", help="run folder (default runs/<model>, numbered if it exists)")
    a("--resume", nargs="?", const=True, default=False, metavar="CKPT",
      help="continue the run in --out (its last.pt), or the given checkpoint")
    a("--save-every-steps", type=int, default=None, help="also checkpoint every N steps (default 0: not mid-epoch)")
    a("--save-every-epochs", type=int, default=None,
      help="checkpoint (last.pt) every N epochs and after the last (default 1; 0: after the last only)")
    a("--eval-every", type=int, default=None, help="validate every N epochs (default 1)")
    a("--skip-bad", action="store_true", help="skip (and count) bad image/mask pairs instead of stopping")
    a("--progress", default=None, action=argparse.BooleanOptionalAction, help="progress bars (default: on a terminal)")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SegzooError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _is_rank_0() -> bool:
    """Before the run has set up its processes: torchrun's RANK (each process parses the command line)."""
    return os.environ.get("RANK", "0") == "0"


# Options a resumed run may change (CLI name -> config field); the rest of the run's settings come from its checkpoint.
RESUMABLE = {"epochs": "epochs", "device": "device", "amp": "amp", "workers": "workers", "progress": "progress",
             "save_every_steps": "save_every_steps", "save_every_epochs": "save_every_epochs"}


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The checkpoint's own config, with only the runtime options given now changed."""
    if args.resume is True and args.out is None:
        raise SegzooError("--resume needs the run to continue: --out RUN_DIR (its last.pt) or --resume CKPT")
    path = Path(args.out) / "last.pt" if args.resume is True else Path(args.resume)
    stored = load_training_checkpoint(path)["config"]
    given = {field: getattr(args, opt) for opt, field in RESUMABLE.items() if getattr(args, opt) is not None}
    ignored = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
               if k not in RESUMABLE and k not in ("resume", "out", "command", "plugin_flags", "no_external_plugins",
                                                   "model", "backbone_opt", "head_opt", "skip_bad", "no_flip", "debug")
               and v is not None]
    if ignored and _is_rank_0():
        print(f"resuming: {', '.join(ignored)} ignored (a resumed run keeps its own settings; only "
              f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change)")
    return TrainConfig.from_dict({**stored, **given, "out_dir": args.out or str(path.parent), "resume": str(path)})


def build_config(args: argparse.Namespace) -> TrainConfig:
    if args.resume is not False:
        return resume_config(args)
    given = {k: v for k, v in vars(args).items() if v is not None}
    demo = args.data is None
    if demo:  # segzoo.train.demo decides what the demo gets; any setting given wins
        applied = demo_defaults({**given, "backbone_kwargs": {"fc_channels": given.get("fc_channels")}
                                 if given.get("fc_channels") is not None else {}}, [backbone_of(args.model)],
                                args.preset)
        shown = describe(applied)
        given.update({k: v for k, v in applied.items() if k != "backbone_kwargs"}, **applied.get("backbone_kwargs", {}))
        if isinstance(given.get("scale"), tuple):
            given["scale"] = ",".join(map(str, given["scale"]))
        if _is_rank_0():
            print(f"no --data: training on the embedded demo dataset (160 + 40 images of 64x64, 6 classes); demo "
                  f"defaults {shown} (give any of them to change it)")
    if args.out is not None and _is_rank_0():  # rank 0 writes (the other ranks might see its first files)
        check_new_run(args.out)  # before the demo data or a model is made; the trainer checks again, locked
    backbone_kwargs = parse_options(args.backbone_opt, '--backbone-opt')
    if given.get("fc_channels") is not None:
        backbone_kwargs["fc_channels"] = given["fc_channels"]
    cfg = {
        "model": args.model, "data": args.data, "out_dir": args.out or str(default_run_folder(args.model)),
        "train_split": given.get("train_split"), "num_classes": args.num_classes, "epochs": given.get("epochs"),
        "batch_size": given.get("batch_size"), "input_size": given.get("input_size"),
        "optimizer": given.get("optimizer"), "lr": given.get("lr"), "weight_decay": given.get("weight_decay"),
        "momentum": given.get("momentum"), "preset": args.preset, "geometry": args.geometry,
        "loss_reduction": given.get("loss"), "backbone_weights": args.backbone_weights, "init_from": args.init_from,
        "device": given.get("device"), "amp": args.amp, "workers": given.get("workers"), "seed": given.get("seed"),
        "save_every_steps": given.get("save_every_steps"), "save_every_epochs": given.get("save_every_epochs"),
        "eval_every": given.get("eval_every"),
        "progress": args.progress,
        "backbone_kwargs": backbone_kwargs, "head_kwargs": parse_options(args.head_opt, '--head-opt'),
        "skip_bad": args.skip_bad, "flip": not args.no_flip, "normalization": args.normalization,
    }
    if given.get("scale") is not None:
        cfg["scale"] = tuple(_floats(given["scale"], "--scale"))
    if args.class_weights:
        cfg["class_weights"] = _floats(args.class_weights, "--class-weights")
    defaults = TrainConfig()
    cfg = {k: v for k, v in cfg.items() if v is not None or getattr(defaults, k) is None}
    if args.val_split is not None:  # after the filter above: 'none' is a value given, not one left out
        cfg["val_split"] = None if args.val_split.lower() == "none" else args.val_split
    return TrainConfig(**cfg)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    start = time.perf_counter()
    result = training.train(config)
    if result.stopped_early or result.rank != 0:  # under torchrun every rank runs this; rank 0 reports
        return 0
    minutes = (time.perf_counter() - start) / 60
    files = "last.pt, best.pt, metrics.jsonl" if result.best_checkpoint else "last.pt, metrics.jsonl"
    print(f"\nfinished in {minutes:.1f} min; run folder {result.out_dir} ({files})")
    final = result.final_metrics
    if final is not None:
        if result.initial_metrics:
            print(f"mean IU {100 * result.initial_metrics['mean_iu']:.1f} before training -> "
                  f"{100 * final['mean_iu']:.1f} after (best {100 * result.best_metrics['mean_iu']:.1f} at epoch "
                  f"{result.best_epoch})")
        print(f"\nfinal validation metrics (epoch {result.history[-1].epoch}):")
        print(report(final))
    sys.stdout.flush()
    return 0
