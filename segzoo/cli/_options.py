"""Parsing what several commands share: ``KEY=VALUE`` options for a backbone or head."""

from __future__ import annotations

from typing import Any

import yaml

from ..core.errors import SegzooError


def parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["fc_channels=512", "dropout=0.1"]`` → ``{"fc_channels": 512, "dropout": 0.1}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise SegzooError(f"{flag} {pair[:80]!r} must be KEY=VALUE with KEY a Python name, e.g. {flag} dropout=0.1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SegzooError(f"{flag} {pair[:80]!r}: cannot read the value {value[:40]!r}; write a number, "
                              "true/false, a word, or a [list]") from None
    return out
