"""A run's logs: metrics.jsonl (every record, in full) and metrics.csv (the numbers people plot), rewritten
whole and atomically after every epoch, so they never run ahead of what a reader can trust."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..core.files import atomic_write_text
from .records import CSV_FIELDS, EpochRecord


def write_logs(out: Path, history: Sequence[EpochRecord]) -> list[Path]:
    """Write both logs for ``history``; returns the files written."""
    jsonl = "".join(json.dumps(r.to_dict()) + "\n" for r in history)
    rows = [",".join(CSV_FIELDS)]
    for r in history:
        flat = {**r.to_dict(), **{k: v for k, v in (r.val or {}).items() if k in CSV_FIELDS}}
        rows.append(",".join("" if flat.get(k) is None else f"{flat[k]:.6g}" for k in CSV_FIELDS))
    return [atomic_write_text(jsonl, out / "metrics.jsonl"),
            atomic_write_text("\n".join(rows) + "\n", out / "metrics.csv")]
