"""Tiny installed-looking distributions for plugin tests: a module plus a ``*.dist-info`` folder.

importlib.metadata finds a distribution by its ``NAME-VERSION.dist-info/METADATA`` on ``sys.path``,
and its entry points in ``entry_points.txt``, so writing these two files into a folder on the path is
all an install does as far as segzoo's loader can tell; no pip, no network.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

# A valid backbone: four strided convs, 8 channels at strides 4, 8, 16, 32 (maps of ceil(H/s)).
# `LIE` changes what feature_info declares, without changing what forward() returns.
TINY_BACKBONE = '''
import torch
from torch import nn
from segzoo import Backbone, FeatureInfo, hookimpl

LIE = {lie!r}


class Tiny(Backbone):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 3, stride=4, padding=1)]
                                   + [nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(3)])
        self.feature_info = [FeatureInfo(s, LIE.get(s, 8)) for s in (4, 8, 16, 32)]

    def forward(self, x):
        out = {{}}
        for s, conv in zip((4, 8, 16, 32), self.convs):
            x = torch.relu(conv(x))
            out[s] = x
        return out


def make(weights=None):
    """A four-conv test backbone."""
    return Tiny()


@hookimpl
def segzoo_register_backbones(registrar):
    registrar.backbone({name!r}, make)
'''


def backbone_plugin(name: str, lie: dict[int, int] | None = None) -> str:
    """Source of a plugin module registering the backbone ``name``; ``lie`` maps stride -> declared channels."""
    return TINY_BACKBONE.format(name=name, lie=lie or {})


def write_dist(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str],
               version: str = "0.1") -> Path:
    """Write ``modules`` (name -> source) and a dist-info for ``dist`` with ``segzoo`` entry points into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[segzoo]\n{lines}")
    return root
