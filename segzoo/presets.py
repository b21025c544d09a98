"""The paper's two training settings as plain data, for ``segzoo train --recipe`` and ablation studies.

- ``paper-cvpr``: the CVPR 2015 paper (Sec. 4.3, Optimization; Sec. 4.2 for the skips): minibatches of
  20, momentum 0.9, a per-pixel averaged loss, lr 1e-4 for FCN-VGG16 (1e-3 for FCN-AlexNet), score
  layers zero-initialised, biases at twice the lr, and the lr divided by 100 for the skip nets, each
  fine-tuned from the coarser one. Its 2x upsamplings are learned, the final one fixed to bilinear.
- ``paper-heavy``: the reference implementation's solvers (fcn.berkeleyvision.org ``voc-fcn*/solver.prototxt``),
  described in the PAMI 2016 paper: one image per batch, momentum 0.99 and the loss *summed* over
  pixels (unnormalised), hence the tiny rates (1e-10, 1e-12, 1e-14), with every upsampling fixed.
  The published PASCAL weights (``geometry="caffe"`` + torchfcn's files) were trained this way.

docs/paper.md says which setting produced which table. The presets are data: how the trainer applies
each field is written next to it, :func:`training_preset` resolves one for a model, and
``TrainConfig(recipe=...)`` (``segzoo train --recipe``) fills a run's unset settings from it.
"""

from __future__ import annotations

from typing import Any

from .errors import SegzooError, UnknownNameError

PRESETS: dict[str, dict[str, Any]] = {
    "paper-heavy": {
        "description": "PAMI / reference solvers: batch 1, summed loss, momentum 0.99, fixed upsampling",
        "batch_size": 1,
        "loss_reduction": "sum",  # cross-entropy summed over the image's labelled pixels, not averaged
        "optimizer": "paper",  # segzoo.train.optim's SGD with a constant learning rate
        "momentum": 0.99,
        "weight_decay": 5e-4,
        "bias_lr_mult": 2.0,  # Caffe's lr_mult 2 for biases (the SGD optimizers' parameter groups)
        "bias_weight_decay": 0.0,  # and decay_mult 0
        "lr": {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10},
        "lr_by_model": {},
        "head_kwargs": {"learnable_upsampling": False},  # every transposed conv stays bilinear (lr_mult 0)
        "fixed_final_upsampling": True,  # the FCN head option of that name: head.upscore frozen at bilinear
        "zero_init_scores": True,  # Caffe's default (constant 0) filler for score_fr and the skip scores
        # staged: the net is fine-tuned from the coarser one's checkpoint (--init-from); fcn8s-atonce starts
        # from VGG16. The trainer cannot guess the checkpoint, so without --init-from it says how to pass one.
        "init_from": {"fcn16s": "fcn32s", "fcn8s": "fcn16s"},
        "geometry": "caffe",  # create_model(geometry=...): the paper's pad-100 nets, BGR 0-255 input
    },
    "paper-cvpr": {
        "description": "CVPR 2015: batch 20, averaged loss, momentum 0.9, lr 1e-4 (VGG16), /100 for skip nets",
        "batch_size": 20,
        "loss_reduction": "mean",  # averaged over labelled pixels
        "optimizer": "paper",
        "momentum": 0.9,
        "weight_decay": 5e-4,  # the paper: "5^-4 or 2^-4" (5e-4 or 2e-4), "training insensitive to these"
        "bias_lr_mult": 2.0,  # "doubled the learning rate for biases"
        "bias_weight_decay": 0.0,
        "lr": {"fcn32s": 1e-4, "fcn16s": 1e-6, "fcn8s": 1e-6},
        "lr_by_model": {"alexnet-fcn32s": 1e-3},  # chosen by line search per classifier (GoogLeNet: 5e-5)
        "head_kwargs": {"learnable_upsampling": True},  # 2x upsamplings initialised bilinear, then learned
        "fixed_final_upsampling": True,  # ... but the final one fixed to bilinear interpolation
        "zero_init_scores": True,  # "random initialization yielded neither better performance nor faster convergence"
        "init_from": {"fcn16s": "fcn32s", "fcn8s": "fcn16s"},  # new skip parameters zero-initialised
        "geometry": "caffe",
    },
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def training_preset(name: str, model: str, need_lr: bool = True) -> dict[str, Any]:
    """A preset resolved for one model name (``vgg16-fcn16s``): its ``lr`` becomes the one number for that model.

    A model the preset has no learning rate for is an error, unless ``need_lr`` is False (the caller has
    its own learning rate); its ``lr`` is None then.
    """
    if name not in PRESETS:
        raise UnknownNameError("training preset", name, PRESETS, hint=f"the presets are {list_presets()}")
    preset = {k: v for k, v in PRESETS[name].items() if k not in ("lr", "lr_by_model")}
    head = next((h for h in sorted(PRESETS[name]["lr"], key=len, reverse=True) if model.endswith("-" + h)), None)
    lr = PRESETS[name]["lr_by_model"].get(model, PRESETS[name]["lr"].get(head))
    if lr is None and need_lr:
        raise SegzooError(
            f"preset '{name}' defines learning rates for heads {sorted(PRESETS[name]['lr'])} only, not for "
            f"'{model}'; pass the learning rate yourself (--lr, or lr= in a config)"
        )
    preset["lr"] = lr
    preset["init_from"] = PRESETS[name]["init_from"].get(head)
    return preset
