"""Files by name or URL, cached: torch hub's cache (torchvision's weights, ``https://`` URLs) and huggingface_hub's
(timm's weights, ``hf-hub:`` models).

``backbone_weights="imagenet"`` comes here through the backbone plugins. A cached file is used as it
is, with no network access at all; an absent one is downloaded once (torchvision's hash-checked way),
unless ``SEGZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` is set, in which case nothing is tried. A download
that fails (no network, a firewall) never hangs: sockets time out after ``SEGZOO_DOWNLOAD_TIMEOUT``
seconds (default 20), and the error is one line naming the file to place and where.

The caches are the libraries' own, read at call time: ``$TORCH_HOME/hub/checkpoints`` (torch.hub's,
default ``~/.cache/torch``) and ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default ``~/.cache/huggingface``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import torch

from ..core.errors import CheckpointError, SegzooError

OFFLINE_FLAGS = ("SEGZOO_OFFLINE", "HF_HUB_OFFLINE")


def offline() -> bool:
    """Whether downloads are off: ``SEGZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` set to anything but 0/false/no."""
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in OFFLINE_FLAGS)


def hub_module(name: str = "huggingface_hub") -> ModuleType:
    """``huggingface_hub`` or ``safetensors.torch``, imported when first needed: both come with the optional extra
    ``hub`` (and with timm); missing, they are one line saying what to install."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = (exc.name or name).split(".")[0]
        raise SegzooError(f"this needs the optional package {package}, which is not installed; install it with: "
                          "pip install 'segzoo[hub]'") from None


def torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, where torchvision's weights API caches its files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now (not as it was at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


@contextlib.contextmanager
def _socket_timeout() -> Iterator[None]:
    """Every socket operation of a download gives up after a while instead of waiting forever."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(float(os.environ.get("SEGZOO_DOWNLOAD_TIMEOUT", "20")))
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def torch_hub_file(url: str, what: str, instead: str = "pass a local file as backbone_weights") -> Path:
    """The cached file of ``url`` in torch hub's checkpoint folder, downloaded (hash-checked) if absent and online.

    ``what`` names the weights in messages (``vgg16's ImageNet weights``); ``instead`` is the other way out.
    """
    folder = torch_hub_dir()
    name = Path(urlparse(url).path).name
    path = folder / name
    if path.is_file():
        return path
    place = f"place {name} (from {url}) in {folder} (torch hub's cache: $TORCH_HOME/hub/checkpoints)"
    if offline():
        raise CheckpointError(f"{what}: {name} is not in {folder} and downloads are off (SEGZOO_OFFLINE / "
                              f"HF_HUB_OFFLINE); {place}, or {instead}")
    match = torch.hub.HASH_REGEX.search(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _socket_timeout():  # writes to a temporary file and renames it: never half a file
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None,
                                           progress=False)
    except Exception as exc:  # noqa: BLE001 - no network, a proxy, a bad hash: all end the same way
        raise CheckpointError(f"{what}: could not download {url} ({_why(exc)}); {place}") from None
    return path


def hf_hub_file(repo_id: str, filenames: Sequence[str], what: str, revision: str | None = None,
                instead: str = "pass that file as backbone_weights") -> Path:
    """The first of ``filenames`` of a Hugging Face repo found in the hub cache, else downloaded there if online.

    ``instead`` ends the message of a file that cannot be had: what to do with a file downloaded by hand.
    """
    hf = hub_module()
    cache = hf_cache_dir()
    for filename in filenames:
        hit = hf.try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    first = filenames[0]
    place = (f"fetch it where there is internet (huggingface-cli download {repo_id} {first}) and copy {folder.name} "
             f"into {cache} (the Hugging Face cache: $HF_HOME/hub), or download "
             f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{first} and {instead}")
    if offline():
        raise CheckpointError(f"{what}: {repo_id}'s {first} is not in {cache} and downloads are off "
                              f"(SEGZOO_OFFLINE / HF_HUB_OFFLINE); {place}")
    not_found = hub_module("huggingface_hub.errors").EntryNotFoundError
    for filename in filenames:
        try:
            with _socket_timeout():
                return Path(hf.hf_hub_download(repo_id, filename, cache_dir=str(cache), revision=revision,
                                               etag_timeout=10))
        except not_found:
            continue
        except Exception as exc:  # noqa: BLE001 - no network, no such repo: one line saying what to place
            raise CheckpointError(f"{what}: could not download {repo_id}'s {filename} ({_why(exc)}); {place}") from None
    raise CheckpointError(f"{what}: {repo_id} has none of {list(filenames)}; {instead.replace('that', 'a local')}")


__all__ = ["hf_cache_dir", "hf_hub_file", "hub_module", "offline", "torch_hub_dir", "torch_hub_file"]
