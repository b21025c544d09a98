"""What an ablation study is: its axes (backbones x heads x staged, each with some seeds), the settings every
run shares, and the runs that plan makes of them. Everything here is checked before anything is trained or
written, so a bad study is one line and an untouched ``--out``.

A run is one variant (``vgg16-fcn8s``, ``vgg16-fcn8s-staged``) trained with one seed, in
``<out>/<variant>/seed-<seed>/``. Seeds are ``train.seed`` (default 0) and the ``seeds - 1`` after it; the
runs go seed by seed, so an interrupted study has whole seeds behind it. ``staged`` trains the heads coarse
to fine per backbone and seed, each initialised from the previous one's final checkpoint, as in the paper
(32s -> 16s -> 8s -> 4s); at once (the default) trains every head from the backbone's initialisation.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..api import get_registry
from ..core.errors import SegzooError, UnknownNameError
from ..core.files import read_text_file
from ..core.settings import SETTINGS
from ..train import TrainConfig
from ..train.metrics import BOUNDARY_PX


@dataclass
class Study:
    """The grid, how many seeds, what the differences are measured against, and the shared training settings.

    ``staged``: a bool or a list of them (``[False, True]`` puts both in one table). ``baseline``: a head
    (each variant against that head of its backbone and staging) or a variant name; None: the first head.
    ``test_split``: the split the metrics are reported on (each run's last epoch and its best one, chosen on
    the validation split); None reports on the validation split.
    ``train``: any ``TrainConfig`` field; on the demo dataset (no ``data``) the demo's settings fill the
    ones left out (:func:`segzoo.train.demo.demo_defaults`).
    """

    backbones: list[str]
    heads: list[str]
    out: str = "runs/ablation"
    staged: bool | list[bool] = False
    seeds: int = 1
    baseline: str | None = None
    boundary_px: int = BOUNDARY_PX
    test_split: str | None = None  # report on this split; the best epoch is still chosen on validation
    train: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # extra rows by model or recipe name (unet-classic)
    pixel_fraction: float | list[float] = 1.0  # the share of training images keeping their masks (by seed)
    weak: bool | list[bool] = False  # whether the others train from image labels read off their hidden masks

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Study:
        try:
            data = yaml.safe_load(read_text_file(path, "study file"))  # a regular file only: a pipe would block
        except yaml.YAMLError as exc:
            raise SegzooError(f"cannot read study file {path}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise SegzooError(f"{path}: a study file is a mapping with 'backbones' and 'heads' lists of names "
                              "('segzoo list' shows them)")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise SegzooError(f"{path}: unknown keys {unknown}; a study may set {', '.join(known)} "
                              "(training settings go under 'train:')")
        missing = [k for k in ("backbones", "heads") if k not in data]
        if missing:
            raise SegzooError(f"{path}: a study needs {' and '.join(map(repr, missing))}: lists of names "
                              "('segzoo list' shows them)")
        study = cls(**data)
        try:
            study.check()
        except SegzooError as exc:
            raise SegzooError(f"{path}: {exc}") from exc
        return study

    @property
    def stagings(self) -> list[bool]:
        return list(self.staged) if isinstance(self.staged, list) else [self.staged]

    @property
    def fractions(self) -> list[float]:
        return list(self.pixel_fraction) if isinstance(self.pixel_fraction, list) else [self.pixel_fraction]

    @property
    def weak_values(self) -> list[bool]:
        return list(self.weak) if isinstance(self.weak, list) else [self.weak]

    def seed_values(self) -> list[int]:
        base = int(self.train.get("seed") or 0)
        return list(range(base, base + self.seeds))

    def check(self) -> None:
        """Every axis of the right type and not empty, every name known, the baseline in the grid, the training
        settings ones a run has: a :class:`SegzooError` naming the first problem and its fix."""
        for axis in ("backbones", "heads"):
            value = getattr(self, axis)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise SegzooError(f"'{axis}' must be a list of names, got {value!r} (--{axis} NAME,NAME; "
                                  "'segzoo list' shows them)")
            if not value:
                raise SegzooError(f"'{axis}' is empty: nothing to train; name at least one (--{axis} NAME,NAME; "
                                  "'segzoo list' shows them)")
            if len(set(value)) != len(value):
                raise SegzooError(f"'{axis}' names {sorted({v for v in value if value.count(v) > 1})} twice; "
                                  "name each once")
        staged = self.staged if isinstance(self.staged, list) else [self.staged]
        if not staged or not all(isinstance(s, bool) for s in staged) or len(set(staged)) != len(staged):
            raise SegzooError(f"'staged' must be true, false or a list of them such as [false, true], got "
                              f"{self.staged!r}")
        fractions = self.fractions
        for f in fractions:
            SETTINGS["pixel_fraction"].check(f, label="'pixel_fraction'")
        if not fractions or len(set(fractions)) != len(fractions):
            raise SegzooError(f"'pixel_fraction' must be a number or a list of different ones such as [0.1, 0.25, 1], "
                              f"got {self.pixel_fraction!r}")
        weak = self.weak_values
        if not weak or not all(isinstance(w, bool) for w in weak) or len(set(weak)) != len(weak):
            raise SegzooError(f"'weak' must be true, false or a list of them such as [false, true], got {self.weak!r}")
        if "pixel_fraction" in self.train:
            raise SegzooError("train: 'pixel_fraction' is a study axis (pixel_fraction:, --pixel-fraction), set per "
                              "variant; leave it out of train:")
        for key in ("seeds", "boundary_px"):  # their ranges: segzoo.core.settings
            SETTINGS[key].check(getattr(self, key), label=f"'{key}'")
        if not isinstance(self.out, str | os.PathLike) or not str(self.out):
            raise SegzooError(f"'out' must be a folder, got {self.out!r}")
        if not isinstance(self.train, dict):
            raise SegzooError(f"'train' must be a mapping of training settings, e.g. 'train: {{epochs: 2}}', got "
                              f"{self.train!r}")
        registry = get_registry()
        for b in self.backbones:
            registry.backbone_factory(b)  # an unknown name fails before anything is trained
        for h in self.heads:
            registry.head(h)
        if not isinstance(self.models, list) or not all(isinstance(m, str) and m.strip() for m in self.models):
            raise SegzooError(f"'models' must be a list of model or recipe names, got {self.models!r} (--models "
                              "NAME,NAME; 'segzoo list' shows them)")
        for m in self.models:
            registry.resolve(m)
        if self.baseline is not None:
            names = self.heads + [v.name for v in plan(self)]
            if not isinstance(self.baseline, str) or self.baseline not in names:
                raise SegzooError(f"baseline {self.baseline!r} is not in the study; give one of its heads "
                                  f"({', '.join(self.heads)}) or variants ({', '.join(names[len(self.heads):])})")
        if self.test_split is not None:
            val = self.train.get("val_split", "val")
            if not isinstance(self.test_split, str) or not self.test_split.strip():
                raise SegzooError(f"'test_split' must be a split name or file, got {self.test_split!r}")
            if val is None or self.test_split == val:
                raise SegzooError(f"test split {self.test_split!r} " + (
                    "needs a validation split to choose the best epoch on; give train: val_split"
                    if val is None else "is the split the best epoch is chosen on; name another split "
                    "(--test-split test), or leave it out to report on validation"))
        if "model" in self.train:
            raise SegzooError("train: 'model' is not a study setting; a study's models are its backbones x heads")
        try:
            config = TrainConfig.from_dict({**self.train, "model": f"{self.backbones[0]}-{self.heads[0]}"})
            config.check()
            config.resolved(per_model=False)
        except UnknownNameError as exc:
            raise SegzooError(f"train: {exc}") from exc
        except TypeError as exc:
            raise SegzooError(f"train: {exc}") from exc
        if not isinstance(config.backbone_kwargs, dict):
            raise SegzooError("train: 'backbone_kwargs' must be a mapping, e.g. {fc_channels: 512}")

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples as lists, as JSON stores them (so a setting read back compares equal)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


@dataclass(frozen=True)
class Variant:
    """One cell of the grid; ``init_from`` is the variant whose final checkpoint (same seed) starts it (staged)."""

    name: str
    backbone: str
    head: str
    staged: bool = False
    init_from: str | None = None
    model: str | None = None  # the model or recipe name a row trains, when it is not <backbone>-<head>
    pixel_fraction: float = 1.0
    weak: bool = False
    paired_with: str | None = None  # the variant its difference is measured from (weak: the same without)


@dataclass(frozen=True)
class Run:
    """One variant trained with one seed."""

    variant: Variant
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.variant.name}/seed-{self.seed}"


def plan(study: Study) -> list[Variant]:
    """The variants in training order: per backbone, at once before staged; staged heads coarse to fine; each of
    them at every pixel fraction, without and with image labels (see :func:`label_variants`)."""
    return [v for base in _model_plan(study) for v in label_variants(study, base)]


def label_variants(study: Study, base: Variant) -> list[Variant]:
    """``base`` at each pixel fraction (``-px25``: 25% of the images keep masks) and, with ``weak``, also trained
    from the others' image labels (``-weak``, compared with the same variant without). Names gain a suffix only
    for an axis the study sets; at fraction 1 there is no image left to label, so no ``-weak`` variant."""
    tag_px = study.fractions != [1.0]
    out = []
    for f in study.fractions:
        for weak in study.weak_values:
            if weak and f >= 1:
                continue

            def named(name: str | None, weak: bool = weak, f: float = f) -> str | None:
                if name is None:
                    return None
                return name + (f"-px{f * 100:g}" if tag_px else "") + ("-weak" if weak else "")

            out.append(dataclasses.replace(base, name=named(base.name) or base.name, init_from=named(base.init_from),
                                           pixel_fraction=float(f), weak=weak,
                                           paired_with=named(base.name, False) if weak else None))
    return out


def _model_plan(study: Study) -> list[Variant]:
    registry = get_registry()
    variants = []
    for b in study.backbones:
        for staged in study.stagings:
            if not staged:
                variants += [Variant(f"{b}-{h}", b, h) for h in study.heads]
                continue
            previous = None
            # coarse to fine: fixed heads by how many strides they fuse; a head that adapts (a rule) last
            for h in sorted(study.heads, key=lambda h: len(s) if isinstance(s := registry.head(h).strides, tuple)
                            else 99):
                name = f"{b}-{h}-staged"
                variants.append(Variant(name, b, h, True, previous))
                previous = name
    for m in study.models:  # a named model as one more row, trained at once with the same settings
        recipe = registry.resolve(m)
        variants.append(Variant(m, recipe.backbone, recipe.head, model=m))
    return variants


def runs(study: Study) -> list[Run]:
    """Every run, seed by seed (each seed's variants in :func:`plan`'s order)."""
    variants = plan(study)
    return [Run(v, s) for s in study.seed_values() for v in variants]
