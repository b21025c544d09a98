"""Training checkpoints: a ``segzoo.load_model``-readable model file that also carries the run's state.

Everything is tensors and plain data (RNG states as tensors or lists), so ``torch.load(weights_only=True)``
reads it back and nothing is ever unpickled.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import CheckpointError
from ..io.checkpoint import FORMAT, read_state_dict, safe_load, save_model


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors and lists."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"bit_generator": np_state["bit_generator"], "key": np_state["state"]["key"].tolist(),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": np_state["has_gauss"],
                  "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": np.array(n["key"], dtype=np.uint32), "pos": n["pos"]}})
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_training_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module, **state: Any) -> Path:
    """Model weights + recipe (a :func:`segzoo.save_model` file, so ``load_model`` reads it) plus the run's state."""
    return save_model(model, path, kind="training", **state)


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "optimizer" not in ckpt:
        raise CheckpointError(f"{path} is not a segzoo training checkpoint (no optimizer state inside); "
                              "resume from the last.pt that 'segzoo train' wrote in its run folder")
    return ckpt


def init_from_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Staged training (FCN-32s → 16s → 8s): copy every tensor whose name and shape match from ``path``.

    The new skip layers of the finer net keep their zero initialisation, so it starts out predicting
    exactly what the coarser net predicted. Returns the names copied and those left as initialised.
    """
    source = read_state_dict(path)
    own = model.state_dict()
    copied = [k for k, v in own.items() if k in source and source[k].shape == v.shape]
    backbone_missing = [k for k in own if k.startswith("backbone.") and k not in copied]
    if not copied or backbone_missing:
        raise CheckpointError(
            f"{path} does not hold this model's backbone ({len(backbone_missing)} backbone tensors missing or of "
            f"another shape, e.g. {backbone_missing[:3]}); staged initialisation needs a checkpoint of the same "
            "backbone and options (the coarser head's run on the same backbone)")
    own.update({k: source[k] for k in copied})
    model.load_state_dict(own)
    return {"copied": copied, "kept": [k for k in own if k not in copied]}
