"""Any timm model with ``features_only`` as a backbone: ``timm-<model name>``, levels taken by reduction.

``weights`` is a local file holding the state dict of the same timm model as an ImageNet classifier
(timm's layout; torchvision's ResNets share it; ``.safetensors`` or a torch file), or ``"imagenet"``:
timm's own pretrained weights for the model, from the Hugging Face cache (``$HF_HOME``) where timm
keeps them, fetched once if online (see :mod:`segzoo.io.cache`). It is checked strictly against that classifier, only
its classification head (``pretrained_cfg['classifier']``: ``fc``, ``head.fc``, ``classifier``...) may
differ or be absent, and is then loaded by timm itself, which drops what the feature extractor lacks.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import torch

from segzoo import (
    Backbone,
    CheckpointError,
    FeatureInfo,
    InputError,
    UnknownNameError,
    check_fits,
    hf_hub_file,
    hookimpl,
    read_weights_file,
    torch_hub_file,
)
from segzoo.core.model import check_geometry

# timm (with torchvision) takes about 1.3 s to import on these machines (python -X importtime, after torch):
# it is imported inside the functions that need it, so listing models or building VGG16/AlexNet never pays it.

# Listed by name (and so in every contract test); any other timm model is reachable as timm-<name>.
EXAMPLES = ("resnet18", "mobilenetv3_large_100")


class TimmBackbone(Backbone):
    """A timm feature extractor; where several levels share a reduction, the deepest one is kept."""

    def __init__(self, variant: str, state_dict: dict[str, torch.Tensor] | None = None, **timm_kwargs):
        super().__init__()
        import timm

        probe = timm.create_model(variant, features_only=True, pretrained=False, **timm_kwargs)
        reductions = probe.feature_info.reduction()
        keep = [i for i, r in enumerate(reductions) if i == len(reductions) - 1 or reductions[i + 1] != r]
        if keep == list(range(len(reductions))) and state_dict is None:
            self.body = probe
        else:
            extra: dict[str, Any] = {} if keep == list(range(len(reductions))) else {"out_indices": keep}
            if state_dict is not None:  # timm loads it into the classifier before cutting out the features
                extra.update(pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict})
            with _quiet_timm_loading():
                self.body = timm.create_model(variant, features_only=True, **extra, **timm_kwargs)
            for cfg in (getattr(self.body, "pretrained_cfg", None), getattr(self.body, "default_cfg", None)):
                if isinstance(cfg, dict):
                    cfg.pop("state_dict", None)  # the loaded weights live in the body, not twice (and unpickled)
        self.feature_info = [FeatureInfo(int(r), int(c)) for r, c in
                             zip(self.body.feature_info.reduction(), self.body.feature_info.channels())]
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.body.modules()):
            # BatchNorm cannot train on one value per channel: at batch 1 every level needs 2x2 cells or more
            self.min_input_size = 2 * max(f.stride for f in self.feature_info)
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        if "mean" in cfg and "std" in cfg:
            self.normalization = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "scale": 1.0, "bgr": False}

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {f.stride: t for f, t in zip(self.feature_info, self.body(x))}


def timm_backbone(variant: str, weights: str | None = None, geometry: str = "modern", **timm_kwargs) -> TimmBackbone:
    """A timm model (``timm-resnet18``, ...) as a feature extractor; ``weights`` is its classifier state dict."""
    check_geometry(f"backbone 'timm-{variant}'", geometry, ("modern",),
                   hint="; geometry 'caffe' is only defined for vgg16 and alexnet")
    import timm

    if not timm.is_model(variant):
        raise UnknownNameError("timm model", variant, timm.list_models(), hint="see timm.list_models()")
    chans = timm_kwargs.get("in_chans", 3)
    if type(chans) is not int or not 1 <= chans <= 4096:  # timm itself fails deep inside with 0 or -1
        raise InputError(f"backbone 'timm-{variant}': in_chans must be an integer from 1 to 4096, got {chans!r:.40}")
    timm_kwargs = {**dynamic_size_options(variant, timm_kwargs), **timm_kwargs}
    if weights == "imagenet":
        weights = pretrained_file(variant)
    state = checked_state_dict(variant, weights, timm_kwargs) if weights else None
    return TimmBackbone(variant, state, **timm_kwargs)


def dynamic_size_options(variant: str, timm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """For a ViT-like model: ``dynamic_img_size`` and ``dynamic_img_pad``, without which it takes only its
    pretraining size (224); segmentation feeds crops and whole images of any size. Given options win."""
    if "dynamic_img_size" in timm_kwargs:
        return {}
    try:
        from timm.models import _registry

        module = importlib.import_module(f"timm.models.{_registry._model_to_module[_registry.get_arch_name(variant)]}")
    except (ImportError, KeyError, AttributeError):  # another timm layout: leave the model as timm builds it
        return {}
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module.__name__:
            params = inspect.signature(obj.__init__).parameters
            if "dynamic_img_size" in params and "dynamic_img_pad" in params:
                return {"dynamic_img_size": True, "dynamic_img_pad": True}
    return {}


def pretrained_file(variant: str) -> str:
    """timm's default pretrained weights file for ``variant``: its Hugging Face repo's (timm's own source), else its
    URL's, from the cache they live in; fetched once if online."""
    import timm

    cfg = timm.models.get_pretrained_cfg(variant)
    what = f"backbone 'timm-{variant}' ImageNet weights (timm)"
    if cfg is not None and cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return str(hf_hub_file(repo, names, what, revision or None))
    if cfg is not None and cfg.url and not cfg.url.endswith(".npz"):
        return str(torch_hub_file(cfg.url, what))
    raise CheckpointError(f"{what}: timm has no pretrained weights file for '{variant}' that segzoo can read; pass "
                          "a local state dict as backbone_weights, or leave it out")


def classifier(variant: str, timm_kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """timm's ``variant`` as the classifier a weights file comes from, on the meta device when timm allows it."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(variant, pretrained=False, **(timm_kwargs or {}))
    except Exception:  # noqa: BLE001 - a model whose construction needs real tensors: build it for real
        return timm.create_model(variant, pretrained=False, **(timm_kwargs or {}))


def classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classification head, which a features_only model lacks: from timm's
    ``pretrained_cfg['classifier']`` (e.g. ``fc``, ``head.fc``), else the module ``get_classifier()`` returns."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names and hasattr(model, "get_classifier"):
        head = model.get_classifier()
        names = tuple(n for n, m in model.named_modules() if m is head and n)
    return tuple(f"{n}." for n in names)


def checked_state_dict(variant: str, path: str, timm_kwargs: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, once it fits timm's ``variant`` classifier key by key and shape by shape.

    Only the classification head may be missing, extra or of another shape (another number of classes,
    or none); anything else raises segzoo's :class:`~segzoo.core.errors.CheckpointError` listing the keys.
    """
    state = read_weights_file(path)
    # the file is an RGB classifier's: timm widens its first conv to in_chans when it loads it
    reference = classifier(variant, {k: v for k, v in (timm_kwargs or {}).items() if k != "in_chans"})
    head = classifier_prefixes(reference)

    def trunk(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in sd.items() if not (head and k.startswith(head))}

    hint = (f"; backbone_weights must be the state dict of timm's '{variant}' as a classifier "
            f"(timm.create_model('{variant}').state_dict(), any number of classes): is the file another model's? "
            f"Build the backbone it belongs to, or leave backbone_weights out")
    check_fits(trunk(reference.state_dict()), trunk(state), path, "timm", hint, what=f"backbone 'timm-{variant}'")
    return state


@contextlib.contextmanager
def _quiet_timm_loading() -> Iterator[None]:
    """timm warns about the classifier keys a feature extractor drops; the file was checked already."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("timm-*", timm_backbone, "any timm model with features_only, e.g. timm-resnet18")
    for variant in EXAMPLES:
        registrar.backbone(f"timm-{variant}", lambda weights=None, _v=variant, **kw: timm_backbone(_v, weights, **kw),
                           f"timm's {variant} as a feature extractor (strides by reduction)")
