"""Models shared through the Hugging Face Hub, or any folder: safetensors weights, a ``config.json``, a model card.

A pretrained folder (:func:`save_pretrained`) holds three files:

- ``model.safetensors``: the weights (tensors only: nothing to unpickle, readable without torch);
- ``config.json``: the recipe that rebuilds the model, its input normalization, class names and known metrics;
- ``README.md``: a model card (``library_name: segzoo``) saying how to load it and what it scored.

:func:`push_to_hub` writes that folder to a temporary place and uploads it in one commit;
``segzoo.load_model("hf-hub:org/name")`` reads it back from the Hugging Face cache (offline once cached).

These are functions, not methods on the model (smp mixes huggingface_hub's ``ModelHubMixin`` into its
model class): the model class lives in ``segzoo.core``, which imports only torch and pluggy, and rebuilding
a model needs the registry, which only :mod:`segzoo.api` knows; so this module writes and reads the files
and ``segzoo.from_pretrained`` builds the model. huggingface_hub and safetensors come with the extra ``hub``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, SegzooError
from ..core.files import url_scheme
from ..core.recipe import Recipe
from .cache import hf_cache_dir, hf_hub_file, hub_module, offline, torch_hub_dir, torch_hub_file
from .checkpoint import read_weights_file
from .remote import kind, locate, read_bytes, write_file

PREFIX = "hf-hub:"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "segzoo-pretrained"
VERSION = 1


def is_hub_id(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a Hub model (``hf-hub:org/name``, optionally ``@revision``)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """``"hf-hub:org/name@v1"`` -> ``("org/name", "v1")``; a malformed id is one :class:`SegzooError`."""
    repo, _, revision = source.removeprefix(PREFIX).partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise SegzooError(f"{source!r} is not a Hub model id; write hf-hub:ORG/NAME (or hf-hub:ORG/NAME@REVISION)")
    return repo, revision or None


def _join(folder: str | os.PathLike[str], name: str) -> str:
    text = os.fspath(folder)
    return f"{text.rstrip('/')}/{name}" if url_scheme(text) else str(Path(text) / name)


def pretrained_config(model: torch.nn.Module, metrics: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What ``config.json`` holds: the recipe, normalization, class names, metrics (if known), segzoo's version."""
    recipe = getattr(model, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise CheckpointError("only a model built by segzoo.create_model carries the recipe needed to save it")
    num_classes = recipe.num_classes
    names = list(recipe.class_names) if recipe.class_names else [f"class_{i}" for i in range(num_classes)]
    config = {"library_name": "segzoo", "format": FORMAT, "version": VERSION, "segzoo_version": _version(),
              "recipe": recipe.replace(backbone_weights=None, weights=None).to_dict(),
              "num_classes": num_classes, "class_names": names,
              "normalization": dict(getattr(model, "normalization", None) or recipe.normalization or {})}
    if metrics:
        config["metrics"] = {str(k): float(v) for k, v in metrics.items()}
    return config


def model_card(config: Mapping[str, Any], repo_id: str | None = None) -> str:
    """The README.md of a pretrained folder: Hub metadata (``library_name: segzoo``), how to load it, its metrics."""
    recipe = config["recipe"]
    name = recipe.get("name") or f"{recipe['backbone']}-{recipe['head']}"
    tags = ["segzoo", "semantic-segmentation", "image-segmentation", recipe["backbone"], recipe["head"]]
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    lines = ["---", "library_name: segzoo", "pipeline_tag: image-segmentation", "tags:",
             *[f"- {json.dumps(t)}" for t in dict.fromkeys(tags)], "---", "",
             f"# {repo_id or name}", "",
             f"`{name}`: a semantic segmentation model ({recipe['backbone']} backbone, {recipe['head']} head, "
             f"{config['num_classes']} classes, geometry `{recipe.get('geometry') or 'modern'}`), saved by segzoo.",
             "", "## Use", "", "```python", "import segzoo", "", f'model = segzoo.load_model("{source}")',
             "```", "", f"or from the command line: `segzoo predict --model {source} --out OUT IMAGES...`",
             "", "The input normalization, class names and recipe are in `config.json`; the weights in "
             f"`{WEIGHTS_NAME}`.", "", "## Classes", "", ", ".join(f"`{c}`" for c in config["class_names"]), ""]
    if config.get("metrics"):
        lines += ["## Metrics", "", "| metric | value |", "|---|---|",
                  *[f"| {k} | {v:.4g} |" for k, v in config["metrics"].items()], ""]
    return "\n".join(lines)


def save_pretrained(model: torch.nn.Module, folder: str | os.PathLike[str], metrics: Mapping[str, float] | None = None,
                    overwrite: bool = False, repo_id: str | None = None) -> str:
    """Write ``model`` as a pretrained folder (local or a URL): weights, ``config.json`` and a model card.

    ``metrics`` (e.g. ``{"mean_iu": 0.62}``) go into the config and the card. ``overwrite=False`` refuses a folder
    that already holds any of the three files (a README.md of the user's is never replaced unasked).
    Returns the folder.
    """
    st = hub_module("safetensors.torch")
    config = pretrained_config(model, metrics)
    targets = {name: _join(folder, name) for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)}
    if not overwrite:
        there = [t for t in targets.values() if kind(locate(t, writing=True))]
        if there:
            raise FileExistsError(17, f"File exists (pass overwrite=True to replace {len(there)} file(s))", there[0])
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = st.save(_unshared(state), metadata={"format": "pt"})
    write_file(targets[WEIGHTS_NAME], lambda f: f.write(data), what="model weights")
    text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    write_file(targets[CONFIG_NAME], lambda f: f.write(text.encode("utf-8")), what="config")
    card = model_card(config, repo_id)
    write_file(targets[CARD_NAME], lambda f: f.write(card.encode("utf-8")), what="model card")
    return os.fspath(folder)


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; give each shared one its own copy."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, value in state.items():
        mark = (value.untyped_storage().data_ptr(), value.storage_offset())
        out[key] = value.clone() if mark in seen and value.numel() else value
        seen.add(mark)
    return out


def read_pretrained(source: str | os.PathLike[str]) -> tuple[Recipe, dict[str, torch.Tensor], dict[str, Any]]:
    """The recipe, weights and whole config of a pretrained folder (local or URL) or a Hub model (``hf-hub:``).

    A Hub model comes from the Hugging Face cache with no network at all when it is there; otherwise it is
    downloaded once, unless ``HF_HUB_OFFLINE=1`` or ``SEGZOO_OFFLINE=1``, and then the error is one line saying
    what to fetch where.
    """
    config_path: str | Path
    weights_path: str | Path
    if is_hub_id(source):
        repo, revision = parse_hub_id(str(source))
        what = f"Hub model {repo}"
        instead = "pass the folder holding it to segzoo.load_model"
        config_path = hf_hub_file(repo, [CONFIG_NAME], what, revision, instead)
        weights_path = hf_hub_file(repo, [WEIGHTS_NAME], what, revision, instead)
        where = f"{PREFIX}{repo}"
    else:
        config_path, weights_path = _join(source, CONFIG_NAME), _join(source, WEIGHTS_NAME)
        where = os.fspath(source)
    config = _read_config(config_path, where)
    try:
        recipe = Recipe.from_dict(config.get("recipe"), where=f"{where}: {CONFIG_NAME}'s recipe")
    except SegzooError as exc:
        raise CheckpointError(f"{exc}; the config is damaged or was not written by segzoo") from None
    return recipe, read_weights_file(weights_path), config


def _read_config(path: str | os.PathLike[str], where: str) -> dict[str, Any]:
    loc = locate(path, "config")
    try:
        raw = loc.local.read_bytes() if loc.local is not None else read_bytes(loc, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{where} holds no {CONFIG_NAME}; a pretrained folder is written by "
                              "segzoo.save_pretrained (for a .pt checkpoint, pass the file itself)") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not JSON ({exc}); the config is damaged") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{where}: {CONFIG_NAME} was not written by segzoo.save_pretrained (no "
                              f"\"format\": \"{FORMAT}\"); it is another library's model")
    return config


def push_to_hub(model: torch.nn.Module, repo_id: str, metrics: Mapping[str, float] | None = None,
                private: bool | None = None, token: str | None = None, revision: str | None = None,
                commit_message: str = "Upload a segzoo model") -> Any:
    """Create (if needed) the Hub model repo ``repo_id`` and upload :func:`save_pretrained`'s files in one commit.

    Returns huggingface_hub's commit information. ``token`` defaults to the logged-in one (``hf auth login``).
    """
    repo_id = parse_hub_id(PREFIX + repo_id.removeprefix(PREFIX))[0]
    hf = hub_module()
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segzoo-push-") as folder:
        save_pretrained(model, folder, metrics=metrics, overwrite=True, repo_id=repo_id)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                 commit_message=commit_message)


def _version() -> str:
    try:
        return metadata.version("segzoo")
    except metadata.PackageNotFoundError:
        return "unknown"


__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "hf_cache_dir", "hf_hub_file", "is_hub_id", "model_card",
           "offline", "parse_hub_id", "pretrained_config", "push_to_hub", "read_pretrained", "read_weights_file",
           "save_pretrained", "torch_hub_dir", "torch_hub_file"]
