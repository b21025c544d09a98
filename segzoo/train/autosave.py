"""Checkpoints by the clock (``--save-every-minutes``), beside the step and epoch cadence.

On a cluster a job may be stopped at any time, and steps may take seconds or minutes: a cadence in minutes
bounds the work a stop loses whatever the step time. The clock is read through :data:`clock` (monotonic),
so a test can drive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

clock: Callable[[], float] = time.monotonic


class SaveClock:
    """Says when ``minutes`` have passed since the last checkpoint (or the start); 0 minutes: never."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * minutes
        self.last = clock()

    def due(self) -> bool:
        return self.seconds > 0 and clock() - self.last >= self.seconds

    def saved(self) -> None:
        """A checkpoint was just written: count from now."""
        self.last = clock()
