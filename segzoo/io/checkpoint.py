"""Reading and writing weights safely: atomic writes, ``weights_only`` reads, errors that say what to do."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..core.errors import CheckpointError, SegzooError
from ..core.recipe import Recipe

FORMAT = "segzoo-model"
VERSION = 1


def _atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` that never leaves a partial file behind."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Text (JSON, CSV) written the same all-or-nothing way."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def safe_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never arbitrary pickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}; check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read {path} as PyTorch weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the file is corrupt, truncated or not a state dict saved with torch.save"
        ) from exc


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a file, unwrapping the common ``{"state_dict": ...}`` / ``{"model": ...}`` shells."""
    return state_dict_of(safe_load(path), path)


def state_dict_of(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file's object (see :func:`read_state_dict`); ``path`` is for the message."""
    for key in ("state_dict", "model", "model_state", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def save_model(model: torch.nn.Module, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Save weights plus the recipe that rebuilds them, so ``load_model`` needs no other argument."""
    recipe = getattr(model, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise CheckpointError("only a model built by segzoo.create_model carries the recipe needed to save it")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save({"format": FORMAT, "version": VERSION, "recipe": recipe.to_dict(), "state_dict": state,
                        **extra}, path)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[Recipe, dict[str, Any]]:
    """A segzoo model checkpoint's recipe and its whole (plain-data) content, checked for both."""
    ckpt = safe_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "recipe" not in ckpt:
        raise CheckpointError(
            f"{path} is not a segzoo model checkpoint (no recipe inside); for a plain state dict use "
            "create_model(name, ...) and model.load_state_dict(...)"
        )
    try:
        recipe = Recipe.from_dict(ckpt["recipe"], where=f"{path}: its recipe")
    except SegzooError as exc:
        raise CheckpointError(f"{exc}; the checkpoint is damaged or was not written by segzoo") from None
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no state_dict; the checkpoint is damaged or was not written by segzoo")
    # The file's own weights replace any weights its recipe names.
    return recipe.replace(backbone_weights=None, weights=None), ckpt
