"""segzoo.infer.predict and ``segzoo predict``: folders and globs mirrored, outputs never over inputs, .onnx models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segzoo
from segzoo.cli import main
from segzoo.core.errors import DataError
from segzoo.data.io import read_mask
from segzoo.infer.predict import default_mode, expand_inputs, predict_files, predict_image


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A narrow AlexNet FCN-32s saved as a checkpoint."""
    torch.manual_seed(0)
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 16}).eval()
    path = tmp_path_factory.mktemp("model") / "m.pt"
    segzoo.save_model(model, path)
    return model, path


def write_images(root, names, size=(70, 90)):
    rng = np.random.default_rng(0)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def test_a_folder_is_mirrored_and_same_stem_images_stay_apart(small, tmp_path):
    model, _ = small
    write_images(tmp_path / "in", ["a/x.png", "b/x.png", "c/d/y.jpg"])
    out = tmp_path / "out"
    written = predict_files(model, [tmp_path / "in"], out, overlays=False)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["a/x.png", "b/x.png", "c/d/y.png"]
    assert read_mask(out / "a" / "x.png").shape == (70, 90)
    assert not list(out.rglob(".*"))  # no temporary files left
    assert (out / "a" / "x.png").stat().st_mode & 0o777 == default_mode()  # not mkstemp's owner-only 0o600


def test_a_glob_is_mirrored_from_its_fixed_folder(small, tmp_path):
    write_images(tmp_path / "in", ["a/x.png", "b/x.png", "b/z.txt.png"])
    found = expand_inputs([str(tmp_path / "in" / "**" / "x.png")])
    assert sorted(rel.as_posix() for _, rel in found) == ["a/x.png", "b/x.png"]


def test_two_files_that_would_share_outputs_are_refused(small, tmp_path):
    write_images(tmp_path, ["a/x.png", "b/x.png"])
    with pytest.raises(DataError, match="would both write x.png"):
        expand_inputs([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])


def test_outputs_never_replace_an_input_and_replace_earlier_outputs_only_with_force(small, tmp_path):
    model, _ = small
    write_images(tmp_path, ["x.png"])
    Image.fromarray(np.zeros((70, 90, 3), np.uint8)).save(tmp_path / "x_overlay.png")  # an input named like an output
    with pytest.raises(DataError, match="overwrite the input"):
        predict_files(model, [tmp_path / "x.png", tmp_path / "x_overlay.png"], tmp_path, force=True)
    out = tmp_path / "out"
    predict_files(model, [tmp_path / "x.png"], out)
    with pytest.raises(DataError, match="--force"):
        predict_files(model, [tmp_path / "x.png"], out)
    assert len(predict_files(model, [tmp_path / "x.png"], out, force=True)) == 2


def test_cli_predicts_a_folder_in_tiles_with_tta_and_workers(small, tmp_path, capsys):
    _, ckpt = small
    write_images(tmp_path / "in", ["p/big.png"], size=(300, 260))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(ckpt), "--out", str(out), "--tile", "128",
                 "--overlap", "0.25", "--tta", "flip", "--tta", "scales=0.75,1", "--workers", "1", "--probs",
                 "--progress"]) == 0
    err = capsys.readouterr().err
    assert "images/s" in err
    probs = np.load(out / "p" / "big_probs.npy")
    assert probs.shape == (3, 300, 260) and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert np.array_equal(read_mask(out / "p" / "big.png"), probs.argmax(0))


def test_predict_runs_an_onnx_file_like_the_checkpoint(small, tmp_path):
    pytest.importorskip("onnxruntime")
    model, ckpt = small
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(onnx_file)]) == 0
    write_images(tmp_path / "in", ["x.png"], size=(97, 131))
    assert main(["predict", str(tmp_path / "in"), "--model", str(onnx_file), "--out", str(tmp_path / "o1"),
                 "--probs", "--quiet", "--workers", "0"]) == 0
    assert main(["predict", str(tmp_path / "in"), "--model", str(ckpt), "--out", str(tmp_path / "o2"),
                 "--probs", "--quiet", "--workers", "0"]) == 0
    a, b = np.load(tmp_path / "o1" / "x_probs.npy"), np.load(tmp_path / "o2" / "x_probs.npy")
    assert np.abs(a - b).max() < 1e-5


def test_a_16_bit_image_is_scaled_not_clipped(small):
    model, _ = small
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257  # the same intensities at 16 bits
    assert torch.allclose(predict_image(model, img16), predict_image(model, img8), atol=1e-5)
