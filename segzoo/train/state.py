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

from ..core.errors import CheckpointError, TrainingError
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


def save_training_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module, **state: Any) -> Path | str:
    """Model weights + recipe (a :func:`segzoo.save_model` file, so ``load_model`` reads it) plus the run's state."""
    return save_model(model, path, kind="training", **state)


# What a training checkpoint holds beside the model, and the type each must have: a file edited by hand or
# damaged is one CheckpointError naming the field, not a TypeError deep in the resume.
TRAINING_FIELDS: dict[str, tuple[type, ...]] = {
    "config": (dict,), "optimizer": (dict,), "scheduler": (dict,), "epoch": (int,), "step": (int,),
    "batches_done": (int,), "partial": (dict,), "history": (list,), "rng": (dict,),
}


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``last.pt`` checked for everything resuming reads."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "optimizer" not in ckpt:
        raise CheckpointError(f"{path} is not a segzoo training checkpoint (no optimizer state inside); "
                              "resume from the last.pt that 'segzoo train' wrote in its run folder")
    for key, types in TRAINING_FIELDS.items():
        value = ckpt.get(key)
        if not isinstance(value, types) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
            got = "missing" if key not in ckpt else f"a {type(value).__name__}"
            raise CheckpointError(f"{path}: its '{key}' is {got}, not a {types[0].__name__}; the checkpoint is "
                                  "damaged or was not written by segzoo: resume from another one (best.pt cannot "
                                  "resume; it holds the weights only)")
    lacking = sorted({"python", "numpy", "torch"} - set(ckpt["rng"]))
    if lacking:
        raise CheckpointError(f"{path}: its random-number state lacks {lacking}; the checkpoint is damaged or was "
                              "not written by segzoo")
    return ckpt


def check_epochs_left(epochs: int, ckpt: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """A resumed run's total must not be less than what its checkpoint has trained (it would stop at once,
    with a config saying fewer epochs than its logs hold)."""
    done, partial = ckpt["epoch"], ckpt.get("batches_done", 0)
    least = done + (1 if partial else 0)
    if epochs < least:
        part = f" and {partial} step(s) of epoch {done + 1}" if partial else ""
        raise TrainingError(f"--epochs {epochs} is fewer than {path} has trained ({done} epoch(s){part}); with "
                            f"--resume, --epochs is the new total: give --epochs {max(least, done + 1)} or more")


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
