"""Upper bounds on the counts a user gives, in one place, chosen from the machine where that makes sense.

A count past these is a mistake (``--workers 100000`` forks a process each; ``--seeds 1000000000`` plans a
billion runs), refused in one line before any work rather than found as an out-of-memory kill.
"""

from __future__ import annotations

import os

# Loader processes: more than four per core only queue behind each other (and each holds a copy of the data).
MAX_WORKERS = max(8, (os.cpu_count() or 1) * 4)
MAX_SEEDS = 1000  # a study trains every variant once per seed
MAX_TTA_VIEWS = 64  # test-time views of one image (scales x flips): each is a whole forward pass
MAX_TILE = 16384  # a tile side in pixels; larger is one whole image, not a tile
MAX_BATCH = 4096  # images or tiles in one forward pass
MAX_EPOCHS = 1_000_000
