"""segzoo.data.io reading real image formats: 8/16-bit PNG and TIFF, grey, RGBA, N bands, scaled, never clipped;
datasets of each train; a dataset mixing kinds is an error naming one file of each; segzoo data stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from segzoo.cli import main
from segzoo.core.errors import DataError
from segzoo.data import open_dataset
from segzoo.data.io import read_image
from segzoo.data.stats import dataset_stats
from segzoo.data.transforms import image_tensor
from segzoo.train import TrainConfig
from segzoo.train.trainer import train

RNG = np.random.default_rng(0)


def save(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, a)
    else:
        Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a).save(path)
    return path


def test_16_bit_grey_png_keeps_its_values_and_scales_by_65535(tmp_path):
    a = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    got = read_image(save(tmp_path / "g.png", a))
    assert got.dtype == np.uint16 and got.shape == (20, 30, 1) and np.array_equal(got[..., 0], a)
    t = image_tensor(got)
    assert np.allclose(t[0].numpy(), a / 65535.0) and t.max() <= 1  # not clipped to 255 = 1.0 everywhere


@pytest.mark.parametrize(("shape", "dtype"), [((20, 30, 3), np.uint16), ((20, 30, 4), np.uint8),
                                              ((20, 30, 5), np.uint16), ((20, 30), np.uint8)])
def test_tiff_bands_and_depths_are_read_as_they_are(tmp_path, shape, dtype):
    a = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    got = read_image(save(tmp_path / "x.tif", a))
    assert got.dtype == dtype and np.array_equal(got.reshape(a.shape), a)


def test_rgba_and_grey_png_keep_their_channels(tmp_path):
    assert read_image(save(tmp_path / "a.png", RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8))).shape == (8, 9, 4)
    assert read_image(save(tmp_path / "g.png", RNG.integers(0, 256, (8, 9), dtype=np.uint8))).shape == (8, 9, 1)


def test_a_16_bit_colour_png_is_refused_rather_than_read_at_8_bits(tmp_path):
    import struct
    import zlib

    a = RNG.integers(0, 65536, (4, 5, 3)).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in a)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "c.png").write_bytes(png)
    with pytest.raises(DataError, match="16-bit colour PNG.*TIFF"):
        read_image(tmp_path / "c.png")


def make_dataset(root, kind: str, n: int = 4, size: int = 64):
    """A folder-pair dataset (train and val) whose images are of one kind; masks follow the image's brightness."""
    for split in ("train", "val"):
        for i in range(n):
            base = RNG.random((size, size))
            mask = (base > 0.5).astype(np.uint8)
            if kind == "png16":
                image, ext = (base * 65535).astype(np.uint16), ".png"
            elif kind == "tiff16":
                image, ext = (np.stack([base] * 3, -1) * 65535).astype(np.uint16), ".tif"
            elif kind == "rgba":
                image, ext = np.concatenate([(np.stack([base] * 3, -1) * 255).astype(np.uint8),
                                             RNG.integers(0, 256, (size, size, 1), dtype=np.uint8)], -1), ".png"
            elif kind == "grey":
                image, ext = (base * 255).astype(np.uint8), ".png"
            else:  # 4-band TIFF
                image, ext = (np.stack([base] * 4, -1) * 65535).astype(np.uint16), ".tif"
            save(root / split / "images" / f"{i}{ext}", image)
            save(root / split / "masks" / f"{i}.png", mask)
    (root / "class_names.txt").write_text("dark\nbright\n")
    return root


# grey and 16-bit grey go into an RGB net repeated; RGBA (transparent) and 4 bands need in_chans=4
KINDS = {"png16": 3, "tiff16": 3, "grey": 3, "rgba": 4, "band4": 4}


@pytest.mark.parametrize("kind", list(KINDS))
def test_training_on_each_kind_of_image(tmp_path, kind):
    data = make_dataset(tmp_path / "data", kind, n=2)
    in_chans = KINDS[kind]
    cfg = TrainConfig(model="alexnet-fcn32s", data=str(data), out_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                      input_size=64, backbone_kwargs={"fc_channels": 16, **({"in_chans": 4} if in_chans == 4 else {})},
                      normalization="stats" if in_chans == 4 else None, progress=False)
    result = train(cfg)
    assert result.final_metrics is not None and np.isfinite(result.history[-1].train_loss)
    if in_chans == 4:
        stats = json.loads((data / "segzoo_stats.json").read_text())
        assert stats["channels"] == 4 and len(stats["mean"]) == 4


def test_rgba_with_transparency_into_an_rgb_net_says_to_use_in_chans(tmp_path):
    data = make_dataset(tmp_path / "data", "rgba", n=1)
    ds = open_dataset(data, "train", 2)
    with pytest.raises(DataError, match="in_chans=4"):
        ds[0]


def test_a_dataset_mixing_kinds_names_one_file_of_each(tmp_path):
    data = make_dataset(tmp_path / "data", "grey", n=2)
    save(data / "train" / "images" / "1.png", RNG.integers(0, 65535, (64, 64), dtype=np.uint16))
    with pytest.raises(DataError, match=r"0\.png is 8-bit with 1 channel, .*1\.png is 16-bit with 1 channel"):
        dataset_stats(data, "train")
    ds = open_dataset(data, "train", 2)
    ds[0]
    with pytest.raises(DataError, match="disagree"):
        ds[1]


def test_data_stats_cli_writes_mean_and_std(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", "band4", n=2)
    assert main(["data", "stats", str(data)]) == 0
    stats = json.loads((data / "segzoo_stats.json").read_text())
    assert stats["channels"] == 4 and stats["dtype"] == "uint16"
    assert all(0.4 < m < 0.6 for m in stats["mean"]) and all(0.2 < s < 0.35 for s in stats["std"])
    assert "wrote" in capsys.readouterr().out
