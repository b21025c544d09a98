"""Dataset statistics as a model's normalization: grey statistics for an RGB model are repeated, as the image is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.core.errors import DataError
from segzoo.data.stats import normalization_for, stats_normalization
from segzoo.data.transforms import normalize


def grey16(root, n=3, size=32):
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 65535, (size, size), dtype=np.uint16)).save(
                root / split / "images" / f"{i}.png")
            mask = rng.integers(0, 3, (size, size)).astype(np.uint8)
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def test_grey_16_bit_stats_for_a_3_channel_model_repeat_the_grey_channel(tmp_path):
    data = grey16(tmp_path / "d")
    norm = normalization_for("stats", data, "train", channels=3)
    assert len(norm["mean"]) == 3 and len(set(norm["mean"])) == 1 and 0.4 < norm["mean"][0] < 0.6
    image = torch.rand(1, 16, 16)
    x = normalize(image, norm)
    assert x.shape == (3, 16, 16) and torch.allclose(x[0], (image[0] - norm["mean"][0]) / norm["std"][0])
    assert len(normalization_for("stats", data, "train")["mean"]) == 1  # the model's channels not said: as measured


def test_stats_of_other_channels_than_the_model_takes_name_the_fix():
    stats = {"mean": [0.1, 0.2], "std": [0.3, 0.3]}
    assert stats_normalization(stats, 2)["mean"] == [0.1, 0.2]
    with pytest.raises(DataError, match="2 channels but the model takes 3; .*in_chans=2"):
        stats_normalization(stats, 3)
