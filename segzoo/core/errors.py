"""Errors a user can act on: each message names the problem and the fix.

The CLI turns every :class:`SegzooError` into one line on stderr and exit code 2,
so anything raised as one must read well without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SegzooError(Exception):
    """Base class for errors caused by the user's input, not by a bug in segzoo."""


class UnknownNameError(SegzooError, LookupError):
    """A model, backbone, head or recipe name that nothing registered."""

    def __init__(self, kind: str, name: str, candidates: Iterable[str],
                 hint: str = "run 'segzoo list' to see them all"):
        self.kind, self.name = kind, name
        self.suggestions = close_matches(name, candidates)
        did_you_mean = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} '{shorten(name)}'.{did_you_mean} ({hint})")


class PluginError(SegzooError):
    """A plugin that failed to import, to register, or broke a contract."""


class CheckpointError(SegzooError):
    """A checkpoint or weights file that is missing, corrupt or of the wrong layout."""


class InputError(SegzooError, ValueError):
    """A tensor or image that the model cannot take (too small, wrong channels)."""


class DataError(SegzooError):
    """A dataset that cannot be read as given: a missing pair, a bad mask, an empty split."""


class GeometryError(SegzooError):
    """A backbone or head asked for a geometry (segzoo.core.model.GEOMETRIES) it does not have."""


class TrainingError(SegzooError):
    """A run that cannot go on (a non-finite loss, a checkpoint that does not fit the run)."""


def shorten(text: str, limit: int = 80) -> str:
    """A value echoed in a message, cut to ``limit`` characters: a pasted 100 KB string must not fill the screen."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The closest names first; a prefix match counts even when difflib's ratio is low."""
    pool = sorted(set(candidates))
    name = name[:200]  # difflib is quadratic: a huge name would take minutes
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if len(found) < n:
        stem = name.split("-")[0]
        found += [c for c in pool if c.startswith(stem) and c not in found][: n - len(found)]
    return found
