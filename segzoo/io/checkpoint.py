"""Reading and writing weights safely: atomic writes, ``weights_only`` reads, errors that say what to do.

Every path goes through :func:`segzoo.io.remote.locate`: a local file, or a URL (``s3://``, ``hf://``,
``memory://``, ``https://``...) where fsspec (or torch hub's cache, for http) can reach it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, SegzooError
from ..core.recipe import Recipe
from .cache import hub_module
from .remote import locate, read_bytes, write_file

__all__ = ["FORMAT", "VERSION", "atomic_save", "load_exported_program", "read_archive_file", "read_checkpoint",
           "read_state_dict", "read_weights_file", "safe_load", "save_model", "state_dict_of"]

FORMAT = "segzoo-model"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str], overwrite: bool = True) -> Path | str:
    """``torch.save`` that never leaves a partial file behind (``overwrite=False``: never replaces a file).

    ``path`` may be a URL (:mod:`segzoo.io.remote`); the return value is the local Path or the URL. A local file is
    written through :func:`~segzoo.core.files.atomic_write`, which keeps the disk's own error (torch would turn a
    full disk into "unexpected pos")."""
    return write_file(path, lambda f: torch.save(obj, f), overwrite=overwrite, what="weights")


def safe_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never arbitrary pickles.

    Whatever is wrong with the file (missing, a folder or a pipe, empty, truncated, pickled code) is one
    :class:`CheckpointError` that names it and says what to do.
    """
    loc = locate(path, "weights")
    if loc.local is None:
        data = read_bytes(loc, CheckpointError)
        if not data:
            raise CheckpointError(f"{loc.text} is empty (0 bytes): an interrupted upload; upload it again")
        return _torch_load(io.BytesIO(data), loc.text, map_location)
    path = loc.local
    if not path.exists():
        raise CheckpointError(f"no such weights file: {path}; check the path")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a folder, pipe or device); pass a .pt file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted copy or download; copy it again")
    return _torch_load(path, path, map_location)


def _torch_load(source: Path | io.BytesIO, path: Any, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` of a file or the bytes of a remote one; ``path`` names it in errors."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).lower()  # torch's refusal of what it would have to run (a global, a class, a reduce)
        if "weights only load failed" in text and "unsupported operand" not in text:
            raise CheckpointError(
                f"cannot read {path}: it holds pickled Python code (objects beyond tensors and plain data), which "
                "segzoo never runs; "
                "if you trust its source, load it once yourself with torch.load(weights_only=False) and save its "
                "state_dict() with torch.save, then pass that file") from None
        raise CheckpointError(_unreadable(path, exc)) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(_unreadable(path, exc)) from None


def _unreadable(path: Any, exc: BaseException) -> str:
    text = str(exc)
    if "Unsupported operand" in text:  # torch's weights-only unpickler met bytes that are no pickle at all
        text = "not a pickle"
    lines = text.strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0][:100].rstrip('.')}" if lines else type(exc).__name__
    return (f"cannot read {path} as PyTorch weights ({detail}); the file is corrupt, truncated or not saved "
            "with torch.save: copy it again")


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


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file (``weights_only``: nothing is unpickled).

    ``path`` may be a URL, as for :func:`safe_load`."""
    if not os.fspath(path).endswith(".safetensors"):
        return read_state_dict(path)
    loc = locate(path, "weights")
    st = hub_module("safetensors.torch")
    try:
        if loc.local is None:
            return st.load(read_bytes(loc, CheckpointError))
        return st.load_file(str(loc.local))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        text = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"cannot read {path} as safetensors ({type(exc).__name__}: {text}); the file is "
                              "corrupt or truncated: delete it so it is fetched again") from None


def save_model(model: torch.nn.Module, path: str | os.PathLike[str], overwrite: bool = True,
               **extra: Any) -> Path | str:
    """Save weights plus the recipe that rebuilds them, so ``load_model`` needs no other argument.

    ``overwrite=False``: an existing ``path`` is a :class:`FileExistsError`, the file untouched. ``path`` may be a
    URL (``s3://``, ``memory://``...; :mod:`segzoo.io.remote`): the return value is then that URL."""
    recipe = getattr(model, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise CheckpointError("only a model built by segzoo.create_model carries the recipe needed to save it")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save({"format": FORMAT, "version": VERSION, "recipe": recipe.to_dict(), "state_dict": state,
                        **extra}, path, overwrite=overwrite)


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


# Archives torch writes (``torch.export``'s .pt2, TorchScript) hold several members; a hostile one is refused
# before anything in it is unpickled.
MAX_ARCHIVE_BYTES = 1 << 34  # 16 GiB: far above any segzoo model, below what would exhaust memory silently
_GUARD = threading.Lock()


def read_archive_file(path: str | os.PathLike[str], name: str) -> bytes | None:
    """The bytes of the member ``<archive>/extra/<name>`` (or ``extra_files/<name>``) of a torch zip archive,
    read as plain zip data: nothing in the archive is unpickled or run. ``None`` when there is no such member."""
    path = _regular_file(path)
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if parts[-1] == name and len(parts) >= 2 and parts[-2] in ("extra", "extra_files"):
                    if info.file_size > 64 << 20:
                        raise CheckpointError(f"{path}: its {name} is {info.file_size:,} bytes; metadata is a few KB, "
                                              "so the file is not one segzoo wrote")
                    return z.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a torch archive (.pt2 or TorchScript) ({exc}); export it again"
                              ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    return None


def load_exported_program(path: str | os.PathLike[str]) -> Any:
    """``torch.export.load`` that never unpickles code: torch itself falls back to ``torch.load(weights_only=False)``
    and plain ``pickle.loads`` for members it cannot read safely. Here every ``torch.load`` inside is
    ``weights_only=True`` and every other unpickler refuses, so a hostile .pt2 is one :class:`CheckpointError`.
    The file is read once, so it cannot change between the check and the load."""
    path = _regular_file(path)
    size = path.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{path} is {size:,} bytes, more than the {MAX_ARCHIVE_BYTES:,} segzoo reads")
    data = path.read_bytes()
    try:
        with _no_unsafe_unpickling(path):
            return torch.export.load(io.BytesIO(data))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise CheckpointError(f"cannot load {path} as a torch.export program ({_first_line(exc)}); export it again"
                              ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


@contextlib.contextmanager
def _no_unsafe_unpickling(path: Path) -> Iterator[None]:
    """While torch reads ``path``: ``torch.load`` is forced to ``weights_only=True``; ``pickle.load(s)`` and
    torch's C++ object unpickler refuse. One loader at a time (the patches are process-wide)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise CheckpointError(f"cannot read {path}: it holds pickled Python objects, which segzoo never unpickles; "
                              "export the model again with segzoo export")

    real_load = torch.load

    def weights_only_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError:
            refuse()

    patches = [(torch, "load", weights_only_load), (pickle, "load", refuse), (pickle, "loads", refuse),
               (torch._C, "_pickle_load_obj", refuse)]
    with _GUARD:
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
        try:
            for obj, name, value in patches:
                setattr(obj, name, value)
            yield
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)


def _regular_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}; check the path")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a folder, pipe or device); pass the file itself")
    return path
