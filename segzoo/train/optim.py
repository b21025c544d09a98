"""Optimizers: the paper's SGD, and modern ones with a poly schedule.

* ``paper``: SGD, momentum 0.9, lr 1e-4, weight decay 5e-4; biases get twice the learning rate and
  no weight decay (the FCN Caffe solvers' ``lr_mult: 2, decay_mult: 0``); constant learning rate.
  Only the optimizer: the paper's whole setting (batch, loss, geometry, head initialisation, lr per
  net) is a training preset (``TrainConfig(preset="paper-cvpr")``), which uses this optimizer with its
  own momentum, lr and weight decay.
* ``sgd-poly``: the same SGD groups with lr 1e-2 and the poly schedule ``lr * (1 - step/total) ** 0.9``.
* ``adamw``: AdamW, lr 1e-4, weight decay 1e-4 (none on biases), poly schedule; trains from scratch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.accel import fused_kwargs
from ..core.errors import SegzooError, UnknownNameError

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 1e-4, "weight_decay": 5e-4, "momentum": 0.9, "schedule": "constant"},
    "sgd-poly": {"lr": 1e-2, "weight_decay": 5e-4, "momentum": 0.9, "schedule": "poly"},
    "adamw": {"lr": 1e-4, "weight_decay": 1e-4, "schedule": "poly"},
}


def optimizer_defaults(name: str) -> dict[str, Any]:
    """An optimizer's default lr, weight decay, momentum (SGD) and schedule."""
    if name not in OPTIMIZERS:
        raise UnknownNameError("optimizer", name, OPTIMIZERS, hint=f"choose one of {sorted(OPTIMIZERS)}")
    return dict(OPTIMIZERS[name])


def param_groups(model: nn.Module, lr: float, weight_decay: float, bias_lr_mult: float) -> list[dict[str, Any]]:
    """Weights with decay; biases (any 1-D parameter) at ``bias_lr_mult`` x lr without decay; frozen ones left out."""
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (biases if p.ndim <= 1 else weights).append(p)
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "lr_mult": 1.0}]
    if biases:
        groups.append({"params": biases, "lr": lr * bias_lr_mult, "weight_decay": 0.0, "lr_mult": bias_lr_mult})
    return groups


def make_optimizer(model: nn.Module, name: str = "adamw", lr: float | None = None,
                   weight_decay: float | None = None, momentum: float | None = None) -> torch.optim.Optimizer:
    """The optimizer over :func:`param_groups`; ``lr``, ``weight_decay`` and (SGD) ``momentum`` override it.

    It takes the fused step where PyTorch has one for the parameters' device (:func:`segzoo.core.accel.fused_kwargs`:
    on a CPU 27x faster than the default step for SGD over VGG16 FCN-8s): build it after the model is on its device.
    """
    cfg = optimizer_defaults(name)
    lr = cfg["lr"] if lr is None else lr
    wd = cfg["weight_decay"] if weight_decay is None else weight_decay
    device = next(model.parameters()).device
    if "momentum" not in cfg:
        if momentum is not None:
            sgd = sorted(k for k, v in OPTIMIZERS.items() if "momentum" in v)
            raise SegzooError(f"optimizer '{name}' has no momentum; leave --momentum out, or pick an SGD "
                              f"optimizer ({', '.join(sgd)})")
        return torch.optim.AdamW(param_groups(model, lr, wd, bias_lr_mult=1.0), lr=lr,
                                 **fused_kwargs(torch.optim.AdamW, device))
    momentum = cfg["momentum"] if momentum is None else momentum
    return torch.optim.SGD(param_groups(model, lr, wd, bias_lr_mult=2.0), lr=lr, momentum=momentum,
                           **fused_kwargs(torch.optim.SGD, device))


class PolyLR:
    """``(1 - step / total) ** power`` for LambdaLR, as an object so its state is plain data in checkpoints."""

    def __init__(self, total_steps: int, power: float = 0.9):
        self.total_steps, self.power = max(int(total_steps), 1), float(power)

    def __call__(self, step: int) -> float:
        return max(1.0 - step / self.total_steps, 0.0) ** self.power


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR whose multiplier always comes from the run's config, never from a checkpoint.

    Its state is only the step reached (and the base learning rates): a plain LambdaLR would also
    restore ``PolyLR.total_steps`` from the checkpoint, so a run resumed with more ``--epochs`` would
    go on at the end of the old, shorter schedule (lr 0). Loading continues *this* schedule at the step
    reached, and sets the optimizer's learning rates to its value there at once (the optimizer's own
    state holds the old schedule's last value). With an unchanged total that value is the one stored,
    so a resumed run still repeats an uninterrupted one exactly.
    """

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(self.lr_lambdas)})
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base_lr * fn(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def _constant(step: int) -> float:
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> StepSchedule:
    """Stepped once per optimiser step. ``paper`` keeps the learning rate constant."""
    return StepSchedule(optimizer, PolyLR(total_steps) if optimizer_defaults(name)["schedule"] == "poly" else _constant)
