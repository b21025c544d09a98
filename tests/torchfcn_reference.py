"""An independent reference for the paper's nets: torchfcn's layout and forward, written with plain torch.

torchfcn (the PyTorch port the published Caffe weights are distributed for) names VGG16's convs
conv1_1 .. conv5_3, then fc6 (7x7, unpadded), fc7, score_fr, score_pool4/3 and bias-free transposed
convs. Its forward pads conv1_1 by 100, pools in ceil mode, and crops at fixed offsets: 19 (32s),
5 and 27 (16s), 5, 9 and 31 (8s). Nothing here imports segzoo.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))  # block, convs, channels
HEADS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")


def torchfcn_shapes(head: str, num_classes: int, fc: int = 4096) -> dict[str, tuple[int, ...]]:
    """Every key of a torchfcn state dict for ``head`` and its shape, as the port defines them."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 3
    for block, n, cout in VGG_BLOCKS:
        for i in range(1, n + 1):
            shapes[f"conv{block}_{i}.weight"], shapes[f"conv{block}_{i}.bias"] = (cout, cin, 3, 3), (cout,)
            cin = cout
    c = num_classes
    shapes.update({"fc6.weight": (fc, 512, 7, 7), "fc6.bias": (fc,), "fc7.weight": (fc, fc, 1, 1), "fc7.bias": (fc,),
                   "score_fr.weight": (c, fc, 1, 1), "score_fr.bias": (c,)})
    if head == "fcn32s":
        shapes["upscore.weight"] = (c, c, 64, 64)
        return shapes
    shapes.update({"score_pool4.weight": (c, 512, 1, 1), "score_pool4.bias": (c,), "upscore2.weight": (c, c, 4, 4)})
    if head == "fcn16s":
        shapes["upscore16.weight"] = (c, c, 32, 32)
        return shapes
    shapes.update({"score_pool3.weight": (c, 256, 1, 1), "score_pool3.bias": (c,),
                   "upscore_pool4.weight": (c, c, 4, 4), "upscore8.weight": (c, c, 16, 16)})
    return shapes


def torchfcn_state(head: str, num_classes: int, fc: int = 4096, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in torchfcn's layout, scaled so activations stay of order one through the 15 layers.

    Each key has its own seed, so files of different heads share the trunk's (and score_fr's) weights.
    """
    state = {}
    for key, shape in torchfcn_shapes(head, num_classes, fc).items():
        g = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
        if len(shape) == 1:
            std = 0.1
        elif key.startswith(("conv", "fc")):
            std = (2 / (shape[1] * shape[2] * shape[3])) ** 0.5
        elif key.startswith("score"):
            std = (1 / shape[1]) ** 0.5
        else:  # transposed convs
            std = 0.1
        state[key] = torch.randn(shape, generator=g) * std
    return state


def torchfcn_forward(state: dict[str, torch.Tensor], x: torch.Tensor, head: str) -> torch.Tensor:
    """torchfcn's FCN32s / FCN16s / FCN8s / FCN8sAtOnce forward (eval mode)."""
    return torchfcn_head(state, torchfcn_trunk(state, x), head, x.shape[-2:])


def torchfcn_trunk(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """VGG16 with conv1_1 padded by 100 and ceil-mode pools, fc6 unpadded: pool3, pool4 and fc7."""
    out = {}
    h = x
    for block, n, _ in VGG_BLOCKS:
        for i in range(1, n + 1):
            name, padding = f"conv{block}_{i}", 100 if i == block == 1 else 1
            h = F.relu(F.conv2d(h, state[f"{name}.weight"], state[f"{name}.bias"], padding=padding))
        h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
        out[f"pool{block}"] = h
    h = F.relu(F.conv2d(h, state["fc6.weight"], state["fc6.bias"]))
    out["fc7"] = F.relu(F.conv2d(h, state["fc7.weight"], state["fc7.bias"]))
    return out


def torchfcn_head(state: dict[str, torch.Tensor], trunk: dict[str, torch.Tensor], head: str,
                  size: tuple[int, int]) -> torch.Tensor:
    """The port's score, upsample and crop steps, with its literal offsets."""
    height, width = size
    h = F.conv2d(trunk["fc7"], state["score_fr.weight"], state["score_fr.bias"])
    if head == "fcn32s":
        h = F.conv_transpose2d(h, state["upscore.weight"], stride=32)
        return h[:, :, 19:19 + height, 19:19 + width]
    at_once = head == "fcn8s-atonce"
    upscore2 = F.conv_transpose2d(h, state["upscore2.weight"], stride=2)
    h = F.conv2d(trunk["pool4"] * (0.01 if at_once else 1), state["score_pool4.weight"], state["score_pool4.bias"])
    h = upscore2 + h[:, :, 5:5 + upscore2.shape[2], 5:5 + upscore2.shape[3]]
    if head == "fcn16s":
        h = F.conv_transpose2d(h, state["upscore16.weight"], stride=16)
        return h[:, :, 27:27 + height, 27:27 + width]
    upscore_pool4 = F.conv_transpose2d(h, state["upscore_pool4.weight"], stride=2)
    h = F.conv2d(trunk["pool3"] * (0.0001 if at_once else 1), state["score_pool3.weight"], state["score_pool3.bias"])
    h = upscore_pool4 + h[:, :, 9:9 + upscore_pool4.shape[2], 9:9 + upscore_pool4.shape[3]]
    h = F.conv_transpose2d(h, state["upscore8.weight"], stride=8)
    return h[:, :, 31:31 + height, 31:31 + width]
