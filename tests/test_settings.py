"""The one table of settings (segzoo.core.settings): every entry's command-line flags and its Python doors refuse
the same out-of-range value with the same line, so a range is written once; a new entry is tested by being added."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segzoo.cli import build_parser
from segzoo.core.errors import SegzooError
from segzoo.core.settings import SETTINGS, Setting
from segzoo.data.demo import write_demo_dataset
from segzoo.infer.tile import check_tile
from segzoo.studies.bench import benchmark
from segzoo.studies.study import Study
from segzoo.train import TrainConfig
from segzoo.train.lr_find import lr_range_test

# The Python doors of Setting.read_by: each calls its API with one setting set to a value
DOORS: dict[str, Callable[[str, Any, Path], object]] = {
    "TrainConfig": lambda name, value, tmp: TrainConfig(model="alexnet-fcn8s", **{name: value}).check(),
    "study": lambda name, value, tmp: Study(backbones=["alexnet"], heads=["fcn32s"], **{name: value}).check(),
    "demo": lambda name, value, tmp: write_demo_dataset(tmp / "demo", **{name: value}),
    "tile": lambda name, value, tmp: check_tile(**{"tile": 512, "overlap": 0.25, name: value}, align=32,
                                                min_size=1),
    "lr_find": lambda name, value, tmp: lr_range_test(lambda lr: 1.0, steps=value),
    "bench": lambda name, value, tmp: benchmark(None, (3, 32, 32), **{name: value}),  # type: ignore[arg-type]
}
# Numeric flags outside the table, and why
NOT_IN_TABLE = {"--opset": "its newest value is the installed onnx package's (segzoo.infer.export.check_opset)"}


def _options(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows: ``int | None`` -> (int, NoneType); ``dict[str, int]`` -> (dict[str, int],)."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def bad_values(s: Setting) -> list[Any]:
    """Just past each end of the range (the end itself where it is excluded), NaN for a number, a made-up choice."""
    if s.choices:
        return [f"no-such-{s.name}"]
    step = 1 if s.kind is int else 0.5
    out: list[Any] = []
    if s.low is not None:
        out.append(s.low if s.low_open else s.low - step)
    if s.high is not None:
        out.append(s.high if s.high_open else s.high + step)
    return out + ([math.nan] if s.kind is float else [])


CASES = [pytest.param(s, v, id=f"{s.name}={v}") for s in SETTINGS.values() for v in bad_values(s)]


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(command words, parser) for every (sub-)command, ``data demo`` included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


@pytest.fixture(scope="module")
def parsers() -> list[tuple[tuple[str, ...], Any]]:
    return list(commands(build_parser()[0]))


def flag_users(parsers, option: str) -> list[tuple[str, ...]]:
    return [path for path, p in parsers if any(option in a.option_strings for a in p._actions)]


@pytest.mark.parametrize("setting, value", CASES)
def test_the_flags_and_the_python_doors_refuse_a_value_with_the_same_line(setting, value, parsers, tmp_path,
                                                                          capsys):
    line = setting.problem(value)  # "must be an integer from 1 to 4096, got 0 (...)"
    assert line is not None and line.startswith(f"must be {setting.span}, got ")
    users = flag_users(parsers, setting.option)
    assert users or setting.read_by, f"{setting.name}: neither a flag nor a Python door reads it"
    full = dict(parsers)
    for path in users:  # every command with the flag: refused while parsing, exit 2, one line with the table's
        with pytest.raises(SystemExit) as stop:
            full[path].parse_args([setting.option, str(value)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1, (path, err)
        assert f"error: {setting.option} {line}" in err, (path, err)
    for door in setting.read_by:  # and the Python API, config files' path included, says the same
        with pytest.raises(SegzooError) as refused:
            DOORS[door](setting.name, value, tmp_path)
        assert str(refused.value).endswith(f" {line}"), (door, str(refused.value))
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("setting", [s for s in SETTINGS.values() if "TrainConfig" in s.read_by], ids=str)
def test_the_table_states_each_training_setting_with_its_field_type(setting):
    assert setting.kind in _options(typing.get_type_hints(TrainConfig)[setting.name])


def test_every_numeric_training_field_and_flag_is_in_the_table(parsers):
    """A new number gets its range in the table (or a reason here), not a check of its own."""
    hints = typing.get_type_hints(TrainConfig)
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if set(_options(hints[f.name])) & {int, float}}
    assert numeric - {"amp"} - set(TrainConfig.RANGED) == set()
    plain = {(" ".join(path), a.option_strings[0]) for path, p in parsers for a in p._actions
             if a.type in (int, float) and a.option_strings[0] not in NOT_IN_TABLE}
    assert plain == set()


def test_a_flag_parses_an_allowed_value_to_its_type(parsers):
    full = dict(parsers)
    args = full[("train",)].parse_args(["--epochs", "3", "--lr", "1e-3", "--weak-pool", "lse", "--loss", "sum"])
    assert (args.epochs, args.lr, args.weak_pool, args.loss) == (3, 1e-3, "lse", "sum")
    assert SETTINGS["momentum"].problem(0.0) is None and SETTINGS["momentum"].problem(True) is not None
