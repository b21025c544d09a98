"""Train any composed network with pixel-wise cross-entropy; with no --data, on the embedded demo dataset."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import train as training  # looked up at each call, so a test's stand-in for train() never sticks
from ..core.errors import SegzooError
from ..train import OPTIMIZERS, TrainConfig, load_training_checkpoint
from ..train.config import config_yaml, load_config
from ..train.demo import backbone_of, demo_defaults, describe
from ..train.lr_find import find_lr
from ..train.metrics import report
from ..train.presets import preset_help
from ..train.run_folder import KEEP, auto_resume, check_new_run, keep_checkpoints, restart_run
from ..train.runtime import AMP_FORCE, placement
from ..train.setup import default_run_folder
from ._options import parse_options, typed

COMMAND = "train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--config", default=None, metavar="FILE.yaml",
      help="training settings from a YAML file, keyed by TrainConfig's field names (a study file's train: schema, "
           "e.g. 'epochs: 20'); flags given as well win")
    a("--lr-find", action="store_true",
      help="instead of training: a learning-rate range test on the training data (at most --lr-find-steps steps, lr "
           "growing exponentially from 1e-7 to 1, stopped when the smoothed loss diverges); plots loss against lr "
           "(RUN_DIR/lr_find.png), suggests an lr and says why; keeps no weights")
    a("--lr-find-steps", **typed("lr_find_steps"), default=100, metavar="N", help="steps of --lr-find (default 100)")
    a("--print-config", action="store_true",
      help="print the resolved settings as YAML (a file --config reads) and exit without training")
    a("--model", default=None, help="<backbone>-<head> or a recipe of registry.yaml (default vgg16-fcn8s)")
    a("--data", default=None, metavar="DIR", help="a VOC folder or folder pair (default: the demo dataset, written "
                                                   "to runs/demo-data beside the run)")
    a("--train-split", default=None, help="split name or list file (default train)")
    a("--val-split", default=None, help="split name or list file, or 'none' (default val)")
    a("--num-classes", **typed("num_classes"), default=None,
      help="classes (default: the dataset's class_names.txt, else counted in the masks)")
    a("--preset", default=None, metavar="NAME",
      help="train with a registered training preset: " + preset_help()
      + ". A preset sets --batch-size, --loss, --optimizer with its --momentum, --weight-decay and the --lr it gives "
        "this net, --geometry, and head options (the paper's: which upsamplings are fixed, score layers at zero); "
        "any of these given as well wins. A staged preset fine-tunes a net from its coarser one: pass "
        "--init-from. docs/paper.md says which produced which table")
    a("--epochs", **typed("epochs"), default=None,
      help="epochs (default 10; demo 8); with --resume, the new total, which the learning-rate schedule then follows")
    a("--batch-size", **typed("batch_size"), default=None,
      help="images per step and process (default: the preset's, else 8; demo 4)")
    a("--input-size", **typed("input_size"), default=None,
      help="side of the square training crop (default 320; demo 64)")
    a("--scale", default=None, metavar="LOW,HIGH", help="random scale range (default 0.5,2; demo 0.75,1.25; 1,1: off)")
    a("--no-flip", action="store_true", help="no random horizontal flips")
    a("--optimizer", default=None, choices=sorted(OPTIMIZERS),
      help="optimizer (default: the preset's, else adamw). paper: the FCN solver's optimizer alone (SGD, "
           "momentum 0.9, lr 1e-4, weight decay 5e-4, biases at 2x lr without decay, constant lr), what --preset "
           "paper-cvpr uses for its first, coarsest net; --preset also sets the batch, loss, geometry and head")
    a("--lr", **typed("lr"), default=None, help="learning rate (default: the preset's for this net, else the "
                                              "optimizer's; demo 1e-3 without --preset)")
    a("--weight-decay", **typed("weight_decay"), default=None,
      help="weight decay (default: the preset's, else the optimizer's)")
    a("--momentum", **typed("momentum"), default=None, help="SGD momentum (default: the preset's, else 0.9)")
    a("--loss", default=None, **typed("loss_reduction"),
      help="mean over valid pixels or the paper's unnormalised sum (default: the preset's, else mean)")
    a("--class-weights", default=None, metavar="W0,W1,...|auto",
      help="per-class loss weights, or auto: median-frequency balancing from the training split's pixel counts "
           "(counted once, cached as class_weights.json in the run folder, printed)")
    a("--loss-fn", dest="loss_fn", default=None, metavar="NAME",
      help="the training loss: cross-entropy (default, built in) or one a plugin registered (Dice, focal...)")
    a("--loss-opt", action="append", default=[], metavar="KEY=VALUE", help="an option of --loss-fn's loss (repeatable)")
    a("--label-map", default=None, metavar="FILE.yaml|NAME",
      help="remap the dataset's label ids to training ids: a YAML mapping dataset_id: training_id (ids not listed "
           "become 255, void) with an optional names: list, or a map that ships with segzoo by name: cityscapes, "
           "ade20k")
    a("--weak-data", default=None, metavar="DIR",
      help="image-labelled images in ImageFolder layout (DIR/<class>/<image>), trained with --weak-weight > 0; "
           "docs/weak-labels.md")
    a("--pixel-fraction", **typed("pixel_fraction"), default=None, metavar="F",
      help="keep the masks of a seed-chosen share F of the training images; the others are image-labelled (with "
           "--weak-weight > 0) by the classes their masks show, or left out (default 1)")
    a("--weak-weight", **typed("weak_weight"), default=None, metavar="W",
      help="weight of the image-level loss added to the pixel loss; 0 (default) trains from masks only")
    a("--weak-pool", default=None, **typed("weak_pool"),
      help="how class scores are pooled over an image: max (default, FCN-MIL), lse (log-sum-exp) or topk")
    a("--weak-temperature", **typed("weak_temperature"), default=None, metavar="R",
      help="r of --weak-pool lse (default 5)")
    a("--weak-topk", **typed("weak_topk"), default=None, metavar="K",
      help="the fraction of pixels --weak-pool topk averages (default 0.1)")
    a("--weak-suppress", **typed("weak_suppress"), default=None, metavar="W",
      help="weight of the per-pixel loss pushing down the classes an image does not hold (default 0: off)")
    a("--weak-ratio", **typed("weak_ratio"), default=None, metavar="R",
      help="the share of each batch that is image-labelled (default 0.5)")
    a("--backbone-weights", default=None, metavar="FILE|imagenet",
      help="a local ImageNet classifier state dict, or imagenet: torchvision's (vgg16, alexnet) or timm's "
           "pretrained weights from their caches (TORCH_HOME, HF_HOME), fetched once if online; SEGZOO_OFFLINE=1 "
           "never downloads, and an empty cache then says which file to place where")
    a("--fc-channels", **typed("fc_channels"), default=None,
      help="fc6/fc7 width, for backbones that take fc_channels (default 4096; demo 512)")
    a("--backbone-opt", action="append", default=[], metavar="KEY=VALUE", help="a backbone option (repeatable)")
    a("--head-opt", action="append", default=[], metavar="KEY=VALUE",
      help="a head option, e.g. learnable_upsampling=false (repeatable)")
    a("--normalization", default=None, metavar="stats|FILE",
      help="stats: standardise by the data's per-channel mean/std (DATA/segzoo_stats.json, measured if absent; "
           "segzoo data stats writes it), or a stats file; default: the backbone's (ImageNet or Caffe)")
    a("--geometry", default=None, **typed("geometry"),
      help="modern, or caffe: the paper's nets, for backbones that support it (default: the preset's, else modern)")
    a("--init-from", default=None, metavar="CKPT", help="staged training: start from the checkpoint of the net with "
                                                         "this head's registered parent, as the paper's presets do")
    a("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    a("--amp", default=None, nargs="?", const=True, type=_amp_value, metavar="force",
      help="mixed precision (default: on for CUDA). On a CPU bf16 pays only with AMX or AVX-512 BF16: --amp measures "
           "the bf16 matmul peak against fp32's and trains in fp32, saying so, below 2x; --amp force trains in bf16 "
           "anyway")
    a("--no-amp", dest="amp", action="store_const", const=False, help="full float32, also on CUDA")
    a("--workers", **typed("workers"), default=None, help="data-loading processes (default 0)")
    a("--seed", **typed("seed"), default=None, help="random seed (default 0)")
    a("--out", default=None, metavar="RUN_DIR", help="run folder (default runs/<model>, numbered if it exists)")
    a("--resume", nargs="?", const=True, default=False, metavar="CKPT|auto",
      help="continue the run in --out (its last.pt), or the given checkpoint. auto: one command that survives "
           "requeues: start if --out holds no run, continue its last.pt if it does, start again if the run there "
           "stopped before its first checkpoint (give every setting, as for a new run; ./auto is a file named auto)")
    a("--restart", action="store_true",
      help="train again into an --out whose run stopped before its first checkpoint (removes only that run's "
           "config.json, metric logs and class-weight cache; a folder with a checkpoint is refused)")
    a("--keep", default="both", choices=KEEP,
      help="when the run finishes: best removes last.pt (optimizer state included, about twice best.pt's size; the "
           "run can no longer be resumed), last removes best.pt (default both)")
    a("--save-every-steps", **typed("save_every_steps"), default=None,
      help="also checkpoint every N steps (default 0: not mid-epoch)")
    a("--save-every-minutes", **typed("save_every_minutes"), default=None, metavar="M",
      help="also checkpoint (last.pt) when M minutes have passed since the last one, e.g. 30 on a cluster whose "
           "jobs may be stopped at any time (default 0: off)")
    a("--save-every-epochs", **typed("save_every_epochs"), default=None,
      help="checkpoint (last.pt) every N epochs and after the last (default 1; 0: after the last only). metrics.csv "
           "and metrics.jsonl follow last.pt: an epoch's row is written with the checkpoint that holds it")
    a("--eval-every", **typed("eval_every"), default=None, help="validate every N epochs (default 1)")
    a("--accumulate", **typed("accumulate"), default=None, metavar="N",
      help="gradient accumulation: one optimiser step per N batches, with the gradient of one batch of all of them "
           "(the built-in losses' mean over the step's pixels and samples; a plugin's loss divided by N) (e.g. the "
           "paper's batch of 20 on one card: --batch-size 4 --accumulate 5; default 1)")
    a("--sync-bn", action="store_true", default=None,
      help="under torchrun on CUDA GPUs: BatchNorm statistics over all processes (torch.nn.SyncBatchNorm); "
           "PyTorch's SyncBatchNorm does not run on CPU/gloo, and one process has nothing to sync")
    a("--early-stop", **typed("early_stop"), default=None, metavar="N",
      help="stop after N validations without a better mean IU (best.pt keeps the best; a resumed run keeps its "
           "count; default 0: never)")
    a("--min-delta", **typed("min_delta"), default=None, metavar="D",
      help="how much mean IU must rise to count as better for --early-stop (default 0, e.g. 0.001)")
    a("--compile", action="store_true", default=None,
      help="torch.compile (inductor) the training forward: the first step compiles (its time is printed); off by "
           "default, as the compile time did not pay back within a first epoch where measured (docs/performance.md; "
           "segzoo bench --mode train --compile measures it for a model)")
    a("--tensorboard", action="store_true", default=None,
      help="also log to TensorBoard in RUN_DIR/tensorboard: scalars per epoch and a few validation predictions as "
           "images (needs pip install 'segzoo[tb]')")
    a("--skip-bad", action="store_true", help="skip (and count) bad image/mask pairs instead of stopping")
    a("--progress", default=None, action=argparse.BooleanOptionalAction, help="progress bars (default: on a terminal)")


def _amp_value(text: str) -> str:
    if text != AMP_FORCE:
        raise argparse.ArgumentTypeError(f"takes no value, or '{AMP_FORCE}' (bf16 on a CPU even where it does not "
                                         f"pay), not {text!r}")
    return text


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SegzooError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _is_rank_0() -> bool:
    """Before the run has set up its processes (each one parses the command line): the launcher's rank."""
    return placement().rank == 0


# Options a resumed run may change (CLI name -> config field); the rest of the run's settings come from its checkpoint.
RESUMABLE = {"epochs": "epochs", "device": "device", "amp": "amp", "workers": "workers", "progress": "progress",
             "save_every_steps": "save_every_steps", "save_every_epochs": "save_every_epochs",
             "save_every_minutes": "save_every_minutes", "early_stop": "early_stop", "min_delta": "min_delta",
             "tensorboard": "tensorboard", "compile": "compile"}


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The checkpoint's own config, with only the runtime options given now changed."""
    if args.resume is True and args.out is None:
        raise SegzooError("--resume needs the run to continue: --out RUN_DIR (its last.pt) or --resume CKPT")
    path = Path(args.out) / "last.pt" if args.resume is True else Path(args.resume)
    stored = load_training_checkpoint(path)["config"]
    given = {field: getattr(args, opt) for opt, field in RESUMABLE.items() if getattr(args, opt) is not None}
    ignored = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
               if k not in RESUMABLE and k not in ("resume", "out", "command", "plugin_flags", "no_external_plugins",
                                                   "model", "backbone_opt", "head_opt", "skip_bad", "no_flip", "debug",
                                                   "print_config", "loss_opt", "restart", "keep", "lr_find",
                                                   "lr_find_steps")
               and v is not None]
    if ignored and _is_rank_0():
        print(f"resuming: {', '.join(ignored)} ignored (a resumed run keeps its own settings; only "
              f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change)")
    return TrainConfig.from_dict({**stored, **given, "out_dir": args.out or str(path.parent), "resume": str(path)})


# CLI option -> TrainConfig field, where the names differ
FIELDS = {"out": "out_dir", "loss": "loss_reduction", "loss_fn": "loss"}
# Options that are no training setting (the segzoo command's own among them), or that build_config reads itself
NOT_SETTINGS = {"command", "plugin_flags", "no_external_plugins", "debug", "config", "print_config", "resume",
                "lr_find", "lr_find_steps",
                "backbone_opt", "head_opt", "loss_opt", "fc_channels", "scale", "class_weights", "val_split",
                "skip_bad", "no_flip", "restart", "keep"}
DEFAULT_MODEL = "vgg16-fcn8s"


def _note(args: argparse.Namespace, text: str) -> None:
    """A note for people: on stderr under --print-config, whose stdout is the YAML."""
    if _is_rank_0():
        print(text, file=sys.stderr if getattr(args, "print_config", False) else sys.stdout)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the defaults, then the --config file's, then the flags given (which win)."""
    if getattr(args, "restart", False) and args.resume is not False:
        raise SegzooError("--restart trains a run again from the start and --resume continues one; give one")
    if getattr(args, "lr_find", False) and args.resume is not False:
        raise SegzooError("--lr-find starts from fresh weights, so it cannot --resume a run; leave one of them out")
    auto = args.resume == "auto"
    if auto:
        if args.out is None:
            raise SegzooError("--resume auto continues the run in its folder, so it needs one: --out RUN_DIR, the "
                              "same at every restart")
        if (Path(args.out) / "last.pt").exists():
            return resume_config(argparse.Namespace(**{**vars(args), "resume": True}))
    elif args.resume is not False:
        return resume_config(args)
    from_file = load_config(args.config) if getattr(args, "config", None) else {}
    given = {FIELDS.get(k, k): v for k, v in vars(args).items() if v is not None and k not in NOT_SETTINGS}
    if args.skip_bad:
        given["skip_bad"] = True
    if args.no_flip:
        given["flip"] = False
    if args.scale is not None:
        given["scale"] = tuple(_floats(args.scale, "--scale"))
    if args.class_weights:
        given["class_weights"] = ("auto" if args.class_weights.strip().lower() == "auto"
                                  else _floats(args.class_weights, "--class-weights"))
    if args.val_split is not None:
        given["val_split"] = None if args.val_split.lower() == "none" else args.val_split
    merged = {**from_file, **given}
    for key, flag in (("backbone_kwargs", args.backbone_opt), ("head_kwargs", args.head_opt),
                      ("loss_kwargs", args.loss_opt)):
        merged[key] = {**(from_file.get(key) or {}), **parse_options(flag, f"--{key[:-7]}-opt")}
    if args.fc_channels is not None:
        merged["backbone_kwargs"]["fc_channels"] = args.fc_channels
    model = merged.get("model") or DEFAULT_MODEL
    merged["model"] = model
    out = merged.get("out_dir")
    if out and _is_rank_0() and not getattr(args, "print_config", False) and not auto:  # rank 0 writes
        if getattr(args, "restart", False):
            removed = restart_run(out)
            if removed:
                _note(args, f"--restart: removed {', '.join(removed)} of the run that stopped in {out} before its "
                            "first checkpoint")
        check_new_run(out)  # before the demo data or a model is made; the trainer checks again, locked
    if merged.get("data") is None:  # segzoo.train.demo decides what the demo gets; any setting given wins
        applied = demo_defaults(merged, [backbone_of(model)], merged.get("preset"))
        _note(args, f"no --data: training on the embedded demo dataset (160 + 40 images of 64x64, 6 classes); demo "
                    f"defaults {describe(applied)} (give any of them to change it)")
        merged["backbone_kwargs"].update(applied.pop("backbone_kwargs", {}))
        merged.update(applied)
    merged["out_dir"] = out or str(default_run_folder(model))
    if auto and not getattr(args, "print_config", False):  # no last.pt: start, removing a checkpoint-less run's files
        return auto_resume(TrainConfig.from_dict({**merged, "resume": "auto"}), main=_is_rank_0())
    return TrainConfig.from_dict(merged)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_config:
        config.check()  # what it prints is what a run would accept: no 'epochs: two'
        print(config_yaml(config.resolved()), end="")
        return 0
    if args.lr_find:
        found, path = find_lr(config, steps=args.lr_find_steps)
        print(found.reason)
        print(f"plot: {path}" + (f"; train with --lr {found.suggestion:.2g}" if found.suggestion else ""))
        return 0
    start = time.perf_counter()
    result = training.train(config)
    if result.stopped_early or result.rank != 0:  # under torchrun every rank runs this; rank 0 reports
        return 0
    minutes = (time.perf_counter() - start) / 60
    removed = keep_checkpoints(result.out_dir, args.keep)
    files = ", ".join(n for n in ("last.pt", "best.pt") if (Path(result.out_dir) / n).is_file()) + ", metrics.jsonl"
    if removed:
        files += f"; --keep {args.keep} removed {', '.join(removed)}"
    print(f"\nfinished in {minutes:.1f} min; run folder {result.out_dir} ({files})")
    image = sum(r.image_samples for r in result.history)
    if image:
        print(f"trained on {sum(r.mask_samples for r in result.history)} samples with masks and {image} "
              "image-labelled ones (all epochs of this run)")
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
