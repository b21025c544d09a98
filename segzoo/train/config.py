"""What a training run is: one plain dataclass, stored in every checkpoint so a run can be resumed as itself."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..core.errors import SegzooError, UnknownNameError
from ..core.files import local_path, read_text_file
from ..core.settings import SETTINGS
from .optim import optimizer_defaults
from .presets import resolve_preset
from .runtime import check_amp


@dataclass
class TrainConfig:
    """Every setting of a run. ``data=None`` trains on the embedded demo dataset (written next to ``out_dir``).

    ``preset`` names a training preset a plugin registered (``paper-heavy``, ``paper-cvpr``: the
    paper's settings); it fills the settings left at None (batch,
    loss, optimiser, momentum, lr, weight decay, geometry) and adds its head options under the given
    ones, see :meth:`resolved`. Explicit values always win. The trainer runs, and stores in config.json
    and its checkpoints, the resolved config, so a resumed run goes on with the same values.
    """

    model: str = ""  # a model name (<backbone>-<head> or a recipe); required, except when resuming
    out_dir: str = ""  # "": runs/<model>, numbered past runs already there
    data: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation
    num_classes: int | None = None  # None: from the dataset's class names
    epochs: int = 10
    batch_size: int | None = None  # None: the preset's, else 8
    input_size: int = 320  # side of the square training crop
    scale: tuple[float, float] = (0.5, 2.0)  # random scale range; (1, 1) turns it off
    flip: bool = True
    optimizer: str | None = None  # segzoo.train.optim: paper, sgd-poly, adamw; None: the preset's, else adamw
    lr: float | None = None  # None: the preset's, else the optimizer preset's
    weight_decay: float | None = None  # None: the preset's, else the optimizer preset's
    momentum: float | None = None  # SGD only; None: the preset's, else the optimizer preset's (0.9)
    loss_reduction: str | None = None  # "mean" or "sum" (the paper's unnormalised loss); None: the preset's, else mean
    class_weights: list[float] | str | None = None  # one weight per class, or "auto": median-frequency balancing
    loss: str = "cross-entropy"  # the built-in default, or a loss a plugin registered (segzoo_register_losses)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)  # options of a plugin's loss factory
    label_map: str | None = None  # a YAML file of dataset ids to training ids, or a shipped map (cityscapes)
    backbone_weights: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    geometry: str | None = None  # "modern" or "caffe" (the paper's nets); None: the preset's, else the model's
    normalization: str | None = None  # "stats": the data's per-channel mean/std (segzoo data stats), or a stats file
    preset: str | None = None  # a training preset a plugin registered: paper-heavy, paper-cvpr
    init_from: str | None = None  # staged training: a coarser net's checkpoint (fcn32s -> fcn16s -> fcn8s)
    device: str = "auto"
    amp: bool | str | None = None  # None: on for CUDA; on a CPU True trains bf16 only where it pays; "force": always
    workers: int = 0
    seed: int = 0
    eval_every: int = 1  # epochs
    save_every_steps: int = 0  # also checkpoint (last.pt) every N steps; 0: never mid-epoch
    save_every_epochs: int = 1  # checkpoint at the end of every N-th epoch and of the last one; 0: the last only
    save_every_minutes: float = 0.0  # also checkpoint (last.pt) once this many minutes passed since the last; 0: off
    skip_bad: bool = False
    progress: bool | None = None  # None: when stderr is a terminal
    demo: dict[str, int] = field(default_factory=lambda: {"train": 160, "val": 40, "size": 64, "seed": 0})
    resume: bool | str = False  # True: out_dir/last.pt; a checkpoint path; "auto": resume if out_dir has a last.pt
    stop_at_step: int | None = None  # stop (with a checkpoint) after this many steps; the schedule is unchanged
    early_stop: int = 0  # stop after N validations without a better mean IU (by more than min_delta); 0: never
    min_delta: float = 0.0  # how much the validation mean IU must rise to count as better, for early_stop
    accumulate: int = 1  # batches whose gradients make one optimiser step (the loss is divided by it)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over all processes (SyncBatchNorm)
    tensorboard: bool = False  # also write TensorBoard logs (out_dir/tensorboard; needs segzoo[tb])
    compile: bool = False  # torch.compile (inductor) the training forward; off unless asked: docs/performance.md
    # Image-level labels (docs/weak-labels.md): images known only by the classes they hold, trained beside masks.
    weak_data: str | None = None  # an image-labelled set in ImageFolder layout (DIR/<class>/<image>)
    pixel_fraction: float = 1.0  # the share of the training images that keep their masks (chosen by seed)
    weak_weight: float = 0.0  # weight of the image-level loss; 0: image-labelled images are not trained on
    weak_pool: str = "max"  # how class scores are pooled over an image: max, lse or topk
    weak_temperature: float = 5.0  # r of --weak-pool lse
    weak_topk: float = 0.1  # the fraction of pixels --weak-pool topk averages
    weak_suppress: float = 0.0  # weight of the per-pixel suppression of classes absent from the image
    weak_ratio: float = 0.5  # the share of each batch that is image-labelled

    # Settings a resumed run may change; everything else comes from the checkpoint, so the run goes on as itself.
    RUNTIME: ClassVar[tuple[str, ...]] = ("out_dir", "epochs", "device", "amp", "workers", "progress", "resume",
                                          "stop_at_step", "save_every_steps", "save_every_epochs",
                                          "save_every_minutes", "early_stop", "min_delta", "tensorboard", "compile")

    # The settings whose type and range segzoo.core.settings' table states (None, where allowed, is not checked).
    RANGED: ClassVar[tuple[str, ...]] = tuple(n for n, s in SETTINGS.items() if "TrainConfig" in s.read_by)
    MAX_SCALE: ClassVar[float] = 8.0  # the most --scale's HIGH may be

    # What a setting left at None becomes when no preset sets it (the others stay None: "the model's" or
    # "the optimizer preset's", resolved where they are used).
    FALLBACKS: ClassVar[dict[str, Any]] = {"batch_size": 8, "loss_reduction": "mean", "optimizer": "adamw"}

    def check_types(self) -> None:
        """Every setting has its field's type (a YAML ``flip: "no"`` is a string, not false; ``epochs: two`` is
        no number): one :class:`SegzooError` naming the setting, the type it needs and the value given."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _fits(value, hints[f.name]):
                example = json.dumps(_example(f), default=list)
                raise SegzooError(f"setting '{f.name}' must be {_type_name(hints[f.name])}, got {_shown(value)} "
                                  f"({type(value).__name__}); e.g. '{f.name}: {example[:60]}'")

    def check(self) -> None:
        """A :class:`SegzooError` for a setting out of range, named as the CLI option that sets it, before
        anything is built or written (a NaN learning rate or a crop of 0 would otherwise run, or crash later)."""
        check_amp(self.amp)  # before the type check: its message names the one string --amp takes
        self.check_types()
        local_path(self.out_dir or ".", "--out (the run folder: its lock, logs and checkpoints)")
        for name in self.RANGED:  # each one's type and range: segzoo.core.settings, as the CLI's flags check them
            value = getattr(self, name)
            if value is not None:
                SETTINGS[name].check(value)
        if self.early_stop and self.val_split is None:
            raise SegzooError(f"--early-stop {self.early_stop} watches validation mean IU, but validation is off "
                              "(--val-split none); give a --val-split, or leave --early-stop out")
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            raise SegzooError(f"--class-weights {self.class_weights!r}: give 'auto' (median-frequency balancing) or "
                              "one number per class, e.g. --class-weights 1,2,2")
        weights = self.class_weights
        if isinstance(weights, (list, tuple)) and (not all(math.isfinite(w) and w >= 0 for w in weights)
                                                   or not any(w > 0 for w in weights)):
            raise SegzooError(f"--class-weights {_shown(list(weights))}: every weight must be finite and >= 0, and at "
                              "least one > 0 (all 0 would train nothing: the loss is 0 everywhere)")
        scale = self.scale
        if (not isinstance(scale, (tuple, list)) or len(scale) != 2 or not all(_is_number(v) and math.isfinite(v)
                                                                                for v in scale)
                or not 0 < scale[0] <= scale[1] <= self.MAX_SCALE):
            raise SegzooError(f"--scale must be LOW,HIGH with 0 < LOW <= HIGH <= {self.MAX_SCALE:g} (1,1 turns "
                              f"random scaling off), got {_shown(scale)}")

    @property
    def trains_image_labels(self) -> bool:
        """Whether image-labelled images join the training batches (their loss has a weight)."""
        return self.weak_weight > 0

    def resolved(self, per_model: bool = True) -> TrainConfig:
        """The settings a run uses: each one left at None takes the preset's value, then its fallback.

        From the preset: its settings (``batch_size``, ``loss_reduction``, ``optimizer``, ``momentum`` for
        an SGD optimizer only, ``weight_decay``, ``geometry``), ``lr`` (the one for this model) and its
        head options under the given ``head_kwargs``. Resolving a resolved config changes nothing.
        ``per_model=False`` leaves ``lr`` as it is, for settings shared by several models (a study's).
        """
        preset: dict[str, Any] = {}
        head_kwargs = dict(self.head_kwargs)
        if self.preset:
            p = resolve_preset(self.preset, self.model, need_lr=per_model and self.lr is None)
            known = {f.name for f in dataclasses.fields(self)}
            preset = {k: v for k, v in p.items() if k in known and k not in ("lr", "head_kwargs", "init_from")}
            if per_model:
                preset["lr"] = p["lr"]
            head_kwargs = {**p["head_kwargs"], **head_kwargs}
        values = {k: v for k, v in {**self.FALLBACKS, **preset}.items() if getattr(self, k) is None}
        optimizer = values.get("optimizer", self.optimizer)
        defaults = optimizer_defaults(optimizer)
        if "momentum" not in defaults:  # the preset's SGD momentum, with AdamW chosen instead
            values.pop("momentum", None)
        # then the optimizer's own lr, weight decay and momentum, so the values a run trains with are written
        # down (config.json, --print-config); a preset's per-model lr is left to resolve per model
        for key in ("lr", "weight_decay", "momentum"):
            if key in defaults and getattr(self, key) is None and key not in values and not (
                    key == "lr" and self.preset and not per_model):
                values[key] = defaults[key]
        return dataclasses.replace(self, head_kwargs=head_kwargs, **values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a dict (config.json, a checkpoint's, a study's ``train:``) describes.

        A key that is no setting is an :class:`~segzoo.core.errors.UnknownNameError` naming the closest ones,
        never dropped: a misspelt ``batchsize`` would otherwise train with the default without a word.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in known]
        if unknown:
            also = f"; also unknown: {', '.join(map(repr, unknown[1:]))}" if len(unknown) > 1 else ""
            raise UnknownNameError("train setting", str(unknown[0]), known,
                                   hint=f"the settings are the fields of segzoo.train.TrainConfig{also}")
        d = dict(d)
        if "scale" in d:
            d["scale"] = tuple(d["scale"])
        return cls(**d)

    def resumed_from(self, stored: dict[str, Any]) -> TrainConfig:
        """The stored run's config with this one's runtime settings."""
        mine = self.to_dict()
        return TrainConfig.from_dict({**stored, **{k: mine[k] for k in self.RUNTIME}})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from YAML, JSON or the CLI) is of the annotated type: bool is no int, an int is a float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # the length is the range check's (--scale)
            return all(_fits(v, args[0]) for v in value)
        return all(_fits(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    return True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple):
        many = {float: "numbers", int: "whole numbers", str: "strings", bool: "true/false values"}
        count = f"{len(args)} " if origin is tuple and args and args[-1] is not Ellipsis else ""
        return f"a list of {count}{many.get(args[0], 'values')}" if args else "a list"
    if origin is dict:
        return "a mapping"
    return str(hint)


def _example(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING and f.default is not None:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else "..."


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings a YAML file gives (``segzoo train --config``): a mapping keyed by TrainConfig field names.

    The same schema as a study file's ``train:``. Only the keys in the file are returned, so settings
    given elsewhere (command-line flags) can win over them; every key is checked, a misspelt one is an
    error naming the closest.
    """
    try:
        data = yaml.safe_load(read_text_file(path, "config file"))  # regular files only: a pipe would block
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise SegzooError(f"config file {path} is not valid YAML{at}; write one 'setting: value' per line, "
                          "e.g. 'epochs: 20'") from None
    data = {} if data is None else data
    if isinstance(data, dict) and set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]  # a file holding only a study's train: section
    if not isinstance(data, dict):
        raise SegzooError(f"config file {path} must be a mapping of training settings (TrainConfig field names), "
                          f"e.g. 'epochs: 20', not a {type(data).__name__}")
    try:
        TrainConfig.from_dict(data).check_types()
    except (UnknownNameError, TypeError, SegzooError) as exc:
        raise SegzooError(f"config file {path}: {exc}") from None
    return data


def config_yaml(config: TrainConfig) -> str:
    """A config as the YAML ``load_config`` reads back (what ``segzoo train --print-config`` writes); the demo
    dataset's block only when the run trains on it."""
    d = config.to_dict()
    if config.data is not None:
        del d["demo"]
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
