"""What a built network costs: parameters, output shape and FLOPs, measured without running it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import SegzooError


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x500x500', '500x500' or '500' → (C, H, W)."""
    try:
        dims = [int(d) for d in str(text).lower().replace(",", "x").split("x") if d.strip()]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = [3, dims[0], dims[0]]
    elif len(dims) == 2:
        dims = [3, *dims]
    if len(dims) != 3 or min(dims) < 1:
        raise SegzooError(f"cannot read input size {text!r}: write CxHxW (3x500x500), HxW (500x500) or one side (500)")
    return dims[0], dims[1], dims[2]


@dataclass
class Summary:
    params: int
    trainable: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    gflops: float


def meta_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on the meta device: shapes and FLOPs of a 500x500 VGG in milliseconds, no memory."""
    state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
    return functional_call(model, state, (x.to("meta"),), strict=False, tie_weights=False)


def summarize(model: torch.nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Parameters, output shape and forward GFLOPs (multiply-add = 2 FLOPs) for one input batch."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = meta_forward(model, torch.empty(input_shape, device="meta"))
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Summary(params, trainable, tuple(input_shape), tuple(out.shape), counter.get_total_flops() / 1e9)
