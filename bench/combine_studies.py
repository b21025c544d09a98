"""Several ``segzoo ablate`` studies that differ in one training setting, as one report paired by seed.

Usage: python bench/combine_studies.py OUT KEY STUDY [STUDY ...]
Each STUDY is the ``--out`` folder of a study of the same variants on the same data, one per value of the
training setting KEY (``amp``, ``lr``, ...; a setting ``ablate`` has no axis for), given in a study file's
``train:`` or as a flag. Every run is relabelled ``<variant> KEY=<value>`` from the setting its own
config.json recorded, and all are written as one study report (table, 95% CIs paired by seed, plots) into OUT,
which must not exist yet; the first STUDY's value is the baseline. Further folders of the same value add seeds
(a second study run with ``--seed 3``). docs/performance.md (bf16 against fp32) and docs/training-speed.md
(``--lr-find``) use it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from segzoo.studies.report import write_report


def runs(study: Path, key: str) -> list[dict]:
    """Every run of ``study``, its variant named with the value of ``key`` it trained with."""
    rows = []
    for result in sorted(study.glob("*/seed-*/result.json")):
        row = json.loads(result.read_text())
        value = json.loads((result.parent / "config.json").read_text()).get(key)
        rows.append({**row, "variant": f"{row['variant']} {key}={value}"})
    return rows


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, key = Path(sys.argv[1]), sys.argv[2]
    if out.exists():
        sys.exit(f"{out} exists; give a new folder")
    rows = [r for study in sys.argv[3:] for r in runs(Path(study), key)]
    order = list(dict.fromkeys(r["variant"] for r in rows))
    rows.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    out.mkdir(parents=True)
    write_report(rows, out, order[0])
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
