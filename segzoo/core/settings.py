"""Every numeric or choice setting segzoo takes, with its type and allowed range: one table, :data:`SETTINGS`.

The command line's argparse types (``segzoo.cli._options.typed``), ``TrainConfig.check`` (the Python API and
``--config`` files), study files, the demo dataset, tiling, the lr range test and bench all check a value here,
so a range is written once and a value is refused the same way whichever door it came in by: one line naming the
setting, the range and the value, e.g. ``--epochs must be an integer from 1 to 1000000, got 0 (train at least one
epoch)``. Upper bounds of counts come from :mod:`segzoo.core.limits`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from .errors import SegzooError
from .limits import MAX_BATCH, MAX_EPOCHS, MAX_SEEDS, MAX_TILE, MAX_WORKERS
from .model import GEOMETRIES


@dataclass(frozen=True)
class Setting:
    """A setting's type and allowed values: a range for a number (``low``/``high``, each included unless
    ``low_open``/``high_open``; None: no bound), or ``choices`` for a string.

    ``meaning`` follows the value in the message: what the setting is or what its ends mean. ``flag`` is its
    command-line option where that is not ``--<name with dashes>``. ``read_by`` names the Python entry points
    that check it besides the command line (``TrainConfig``, ``study``, ``demo``, ``tile``, ``lr_find``,
    ``bench``), for the test that walks the table; () for a command-line option only.
    """

    name: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    meaning: str = ""
    flag: str = ""
    read_by: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        """The command-line option that sets it."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def span(self) -> str:
        """The allowed values in words: ``an integer from 1 to 4096``, ``a finite number > 0 and < 1``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is int and self.low is not None and self.high is not None:
            return f"an integer from {_number(self.low)} to {_number(self.high)}"
        ends = [f"{'>' if self.low_open else '>='} {_number(self.low)}" if self.low is not None else "",
                f"{'<' if self.high_open else '<='} {_number(self.high)}" if self.high is not None else ""]
        return f"{'an integer' if self.kind is int else 'a finite number'} {' and '.join(e for e in ends if e)}"

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is of the type (a bool is no number; an int is a float; numpy's numbers count) and in
        the range."""
        if self.choices:
            return isinstance(value, str) and value in self.choices
        if not _is_a(value, self.kind) or (self.kind is float and not _finite(value)):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return low_ok and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def problem(self, value: Any) -> str | None:
        """None for an allowed value, else the message without the setting's name:
        ``must be an integer from 1 to 4096, got 0 (images in one step)``."""
        if self.allows(value):
            return None
        return f"must be {self.span}, got {shown(value)}" + (f" ({self.meaning})" if self.meaning else "")

    def check(self, value: Any, label: str = "", error: type[SegzooError] = SegzooError) -> None:
        """Raise ``error`` naming the setting (``label``, else its option) unless ``value`` is allowed."""
        problem = self.problem(value)
        if problem is not None:
            raise error(f"{label or self.option} {problem}")

    def parse(self, text: str) -> Any:
        """The value a command-line ``text`` gives, or a ValueError holding :meth:`problem`'s message."""
        value: Any = text
        if not self.choices:
            try:
                value = self.kind(text)
            except ValueError:
                value = text
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _is_a(value: Any, kind: type) -> bool:
    """An int for ``int`` (numpy's too), any real number for ``float``; never a bool."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral if kind is int else numbers.Real)


def _finite(value: Any) -> bool:
    """Not NaN or infinite, nor an integer too large for a float (YAML's ``lr: 1000...0``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value: float) -> str:
    """An int as written (2**63 - 1 in full), a float as ``:g`` writes it (0, 1e-05)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def shown(value: Any) -> str:
    """A value as a message shows it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


_CLASSES = "masks hold class indices 0..254; 255 is void"
_LIMIT = "; the most that makes sense on this machine, segzoo.core.limits"
_TABLE = (
    # a training run (segzoo.train.TrainConfig; train's and ablate's flags)
    Setting("epochs", int, 1, MAX_EPOCHS, meaning="train at least one epoch", read_by=("TrainConfig",)),
    Setting("batch_size", int, 1, MAX_BATCH, meaning="images in one step or forward pass",
            read_by=("TrainConfig", "bench")),
    Setting("eval_every", int, 1, MAX_EPOCHS,
            meaning="validate every N epochs; --val-split none turns validation off", read_by=("TrainConfig",)),
    Setting("save_every_steps", int, 0, 1 << 40, meaning="0 checkpoints at epoch ends only",
            read_by=("TrainConfig",)),
    Setting("save_every_epochs", int, 0, MAX_EPOCHS, meaning="0 checkpoints at the end of the run only",
            read_by=("TrainConfig",)),
    Setting("workers", int, 0, MAX_WORKERS, meaning="data-loading processes, 0 loads in the main process" + _LIMIT,
            read_by=("TrainConfig",)),
    Setting("stop_at_step", int, 0, 1 << 40, meaning="stop, with a checkpoint, after this many steps; 0 or null: never",
            read_by=("TrainConfig",)),
    Setting("early_stop", int, 0, MAX_EPOCHS, meaning="0 never stops early", read_by=("TrainConfig",)),
    Setting("accumulate", int, 1, 1_000_000, meaning="1 steps the optimiser after every batch",
            read_by=("TrainConfig",)),
    Setting("num_classes", int, 1, 255, meaning=_CLASSES, read_by=("TrainConfig",)),
    Setting("input_size", int, 16, 8192, meaning="the side of the square training crop, in pixels",
            read_by=("TrainConfig",)),
    Setting("seed", int, 0, 2**63 - 1, meaning="any non-negative integer", read_by=("TrainConfig", "demo")),
    Setting("lr", float, 0.0, low_open=True, meaning="the learning rate", read_by=("TrainConfig",)),
    Setting("weight_decay", float, 0.0, meaning="0 turns it off", read_by=("TrainConfig",)),
    Setting("momentum", float, 0.0, 1.0, high_open=True, meaning="SGD's momentum, e.g. 0.9",
            read_by=("TrainConfig",)),
    Setting("min_delta", float, 0.0, meaning="the rise in mean IU that counts as better for --early-stop",
            read_by=("TrainConfig",)),
    Setting("save_every_minutes", float, 0.0, meaning="0 turns the clock off", read_by=("TrainConfig",)),
    Setting("pixel_fraction", float, 0.0, 1.0, low_open=True,
            meaning="the share of the training images that keep their masks", read_by=("TrainConfig", "study")),
    Setting("weak_weight", float, 0.0, meaning="0 trains from masks only", read_by=("TrainConfig",)),
    Setting("weak_temperature", float, 0.0, low_open=True, meaning="r of --weak-pool lse",
            read_by=("TrainConfig",)),
    Setting("weak_topk", float, 0.0, 1.0, low_open=True, meaning="the fraction of pixels --weak-pool topk averages",
            read_by=("TrainConfig",)),
    Setting("weak_suppress", float, 0.0, meaning="0 turns it off", read_by=("TrainConfig",)),
    Setting("weak_ratio", float, 0.0, 1.0, low_open=True, high_open=True,
            meaning="the share of each batch that is image-labelled", read_by=("TrainConfig",)),
    Setting("weak_pool", str, choices=("max", "lse", "topk"), meaning="how class scores are pooled over an image",
            read_by=("TrainConfig",)),
    Setting("loss_reduction", str, choices=("mean", "sum"), flag="--loss",
            meaning="the mean over valid pixels, or the paper's unnormalised sum", read_by=("TrainConfig",)),
    Setting("geometry", str, choices=GEOMETRIES, meaning="caffe: the paper's nets, for backbones that support it",
            read_by=("TrainConfig",)),
    Setting("fc_channels", int, 1, 65536, meaning="the fc6/fc7 width"),
    Setting("lr_find_steps", int, 2, 1000, meaning="a range test is a few hundred steps", read_by=("lr_find",)),
    # a study (segzoo ablate, study files)
    Setting("seeds", int, 1, MAX_SEEDS, meaning="a study trains every variant once per seed", read_by=("study",)),
    Setting("boundary_px", int, 1, 1024, meaning="the width of the band boundary IoU scores, in pixels",
            read_by=("study",)),
    # the demo dataset (segzoo data demo)
    Setting("train", int, 1, 100_000, meaning="training images", read_by=("demo",)),
    Setting("val", int, 0, 100_000, meaning="validation images", read_by=("demo",)),
    Setting("size", int, 16, 4096, meaning="the image side in pixels", read_by=("demo",)),
    # inference (eval, predict)
    Setting("tile", int, 1, MAX_TILE, meaning="the tile side in pixels; larger is one whole image",
            read_by=("tile",)),
    Setting("overlap", float, 0.0, 1.0, high_open=True, meaning="a fraction of the tile, e.g. 0.25",
            read_by=("tile",)),
    Setting("batch", int, 1, MAX_BATCH, meaning="tiles run together"),
    # bench
    Setting("warmup", int, 1, 100_000, meaning="untimed iterations first", read_by=("bench",)),
    Setting("iters", int, 1, 100_000, meaning="timed iterations", read_by=("bench",)),
    Setting("threads", int, 1, 4096, meaning="torch's CPU threads"),
    Setting("peak_tflops", float, 0.0, low_open=True, meaning="the device's dense bf16 peak in TFLOP/s"),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in _TABLE}
