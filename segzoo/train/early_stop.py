"""Early stopping: end a run once validation mean IU has stopped rising, keeping ``best.pt``.

Counted in validations (every ``eval_every`` epochs), the way Keras' ``EarlyStopping`` counts: a
validation is better when it beats the best so far by more than ``min_delta``; the best is only
moved by a better one. The count travels in ``last.pt``, so a resumed run keeps its patience.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """``patience`` validations without a better mean IU end the run; 0 never ends it."""

    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None  # the mean IU the next validation must beat by more than min_delta
    best_epoch: int | None = None
    bad: int = 0  # validations since the last better one

    def update(self, mean_iu: float, epoch: int) -> bool:
        """Count one validation; True when it was better."""
        if self.best is None or mean_iu > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad = float(mean_iu), int(epoch), 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def reason(self, epoch: int) -> str:
        """The line that says why the run ended."""
        delta = f" by more than {self.min_delta:g}" if self.min_delta else ""
        best = f"; the best, {100 * self.best:.1f} at epoch {self.best_epoch}, is kept in best.pt" if self.best else ""
        return (f"stopped early after epoch {epoch}: validation mean IU has not risen{delta} for {self.bad} "
                f"validation(s) (--early-stop {self.patience}){best}")

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (the count and the best, not the settings, which the config holds)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}

    def load(self, state: dict[str, Any] | None) -> None:
        for key, value in (state or {}).items():
            if key in ("best", "best_epoch", "bad"):
                setattr(self, key, value)


__all__ = ["EarlyStopping"]
