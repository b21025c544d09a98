"""The clock-driven checkpoint cadence, on a fake clock (no test waits for minutes to pass)."""

from __future__ import annotations

import pytest

from segzoo.train import autosave
from segzoo.train.autosave import SaveClock


@pytest.fixture
def now(monkeypatch):
    t = [1000.0]
    monkeypatch.setattr(autosave, "clock", lambda: t[0])
    return t


def test_due_once_the_minutes_have_passed_since_the_last_save(now):
    timer = SaveClock(1.5)
    now[0] += 89.9
    assert not timer.due()
    now[0] += 0.1
    assert timer.due() and timer.due()  # stays due until a checkpoint is written
    timer.saved()
    now[0] += 60
    assert not timer.due()
    now[0] += 30
    assert timer.due()


def test_zero_minutes_is_never(now):
    timer = SaveClock(0)
    now[0] += 1e9
    assert not timer.due()
