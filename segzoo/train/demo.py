"""The settings a run on the embedded demo dataset gets unless told otherwise, for ``train`` and ``ablate`` alike.

The demo is 160 + 40 images of 64x64 (6 classes): the library defaults (320-pixel crops, 4096-wide
fc6/fc7, 10 epochs) are sized for PASCAL VOC on a GPU, and on 2 CPU cores would take an hour to
predict background everywhere. These were chosen, and measured, so a run takes a couple of minutes
there and the FCN heads come out in the paper's order. Which of them a run gets is decided here; the
command line only prints it.
"""

from __future__ import annotations

from typing import Any

from ..api import get_registry

# Training settings (TrainConfig fields) and backbone options (given only to backbones whose factory takes them).
# lr 1e-3 (AdamW, poly schedule): at the former 3e-4 `make demo` (VGG16 FCN-8s) ended at 45.1 mean IU with the
# triangles at 0 IU after 8 epochs; the demo study, the same net and settings at 1e-3, reached 75.1 with every
# class at 50.7-82.0 in the same steps (README, "The demo study, measured"); docs/training-speed.md has this
# machine's runs of both.
DEMO_SETTINGS: dict[str, Any] = {"epochs": 8, "batch_size": 4, "input_size": 64, "scale": (0.75, 1.25), "lr": 1e-3}
DEMO_BACKBONE_OPTIONS: dict[str, Any] = {"fc_channels": 512}
# A study compares heads, and the coarse ones leave the all-background start later than FCN-8s (at 64 pixels
# FCN-32s scores a 2x2 map, FCN-16s a 4x4 one): at lr 3e-4 FCN-16s still predicted background everywhere after
# 8 epochs (as FCN-32s did); at 1e-3 it leaves it at epoch 3. A run now gets the same rate, so the two are one.
DEMO_STUDY_SETTINGS: dict[str, Any] = DEMO_SETTINGS
# A preset brings its own batch and learning rate (the paper's); the demo's would override them.
PRESET_OWNS = ("batch_size", "lr")


def backbone_of(model: str) -> str:
    """The backbone of a model name (``<backbone>-<head>`` or a recipe)."""
    return get_registry().resolve(model).backbone


def options_for(backbone: str, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``options`` split into those ``backbone``'s factory names (:meth:`Registry.backbone_takes`; a ``**kwargs``
    catch-all does not count: timm's pass theirs on to ``timm.create_model``, which fails on ``fc_channels``) and
    the names of those it does not."""
    kept = {k: v for k, v in options.items() if get_registry().backbone_takes(backbone, k)}
    return kept, [k for k in options if k not in kept]


def demo_defaults(given: dict[str, Any], backbones: list[str], preset: str | None = None,
                  settings: dict[str, Any] = DEMO_SETTINGS) -> dict[str, Any]:
    """The demo ``settings`` (a run's, or :data:`DEMO_STUDY_SETTINGS`) a run on the demo dataset adds to the
    ``given`` ones.

    ``given`` holds TrainConfig fields set explicitly (``backbone_kwargs`` included); a setting given
    is never replaced. Backbone options go in ``backbone_kwargs`` and count as applied when at least one
    of ``backbones`` takes them (the others never receive them: see :func:`options_for`).
    """
    applied = {k: v for k, v in settings.items() if given.get(k) is None}
    if preset:
        applied = {k: v for k, v in applied.items() if k not in PRESET_OWNS}
    options = {k: v for k, v in DEMO_BACKBONE_OPTIONS.items() if k not in (given.get("backbone_kwargs") or {})
               and any(get_registry().backbone_takes(b, k) for b in backbones)}
    if options:
        applied["backbone_kwargs"] = options
    return applied


def describe(applied: dict[str, Any]) -> str:
    """``--epochs 8 --fc-channels 512 ...``: the applied demo settings as the flags that set them."""
    flat = {**{k: v for k, v in applied.items() if k != "backbone_kwargs"}, **applied.get("backbone_kwargs", {})}
    return " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple | list) else v}"
                    for k, v in flat.items())
