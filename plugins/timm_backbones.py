"""Any timm model with ``features_only`` as a backbone: ``timm-<model name>``, levels taken by reduction."""

from __future__ import annotations

import torch

from segzoo import Backbone, FeatureInfo, hookimpl
from segzoo.checkpoint import read_state_dict
from segzoo.errors import CheckpointError, UnknownNameError
from segzoo.model import check_geometry

# Listed by name (and so in every contract test); any other timm model is reachable as timm-<name>.
EXAMPLES = ("resnet18", "mobilenetv3_large_100")


class TimmBackbone(Backbone):
    """A timm feature extractor; where several levels share a reduction, the deepest one is kept."""

    def __init__(self, variant: str, **timm_kwargs):
        super().__init__()
        import timm

        probe = timm.create_model(variant, features_only=True, pretrained=False, **timm_kwargs)
        reductions = probe.feature_info.reduction()
        keep = [i for i, r in enumerate(reductions) if i == len(reductions) - 1 or reductions[i + 1] != r]
        if keep == list(range(len(reductions))):
            self.body = probe
        else:
            self.body = timm.create_model(variant, features_only=True, pretrained=False, out_indices=keep,
                                          **timm_kwargs)
        self.feature_info = [FeatureInfo(int(r), int(c)) for r, c in
                             zip(self.body.feature_info.reduction(), self.body.feature_info.channels())]
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
    model = TimmBackbone(variant, **timm_kwargs)
    if weights:
        state = read_state_dict(weights)
        missing, _unexpected = model.body.load_state_dict(state, strict=False)
        if missing:
            raise CheckpointError(
                f"{weights} does not fit timm model '{variant}': missing {sorted(missing)[:6]}; "
                "is it a state dict of that same model?"
            )
    return model


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone("timm-*", timm_backbone, "any timm model with features_only, e.g. timm-resnet18")
    for variant in EXAMPLES:
        registrar.backbone(f"timm-{variant}", lambda weights=None, _v=variant, **kw: timm_backbone(_v, weights, **kw),
                           f"timm's {variant} as a feature extractor (strides by reduction)")
