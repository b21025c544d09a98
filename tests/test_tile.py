"""segzoo.infer.tile: tiles blend into whole-image inference wherever the receptive field fits, in bounded bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segzoo
from segzoo.core.errors import SegzooError
from segzoo.core.model import SegmentationModel
from segzoo.infer.predict import predict_image, predict_labels
from segzoo.infer.tile import check_tile, tile_spans
from segzoo.zoo.contract import SyntheticBackbone

MARGIN = 96  # more than the small model's receptive-field radius (measured below)


def small_model() -> SegmentationModel:
    """A synthetic backbone (3x3 stem, average pools to strides 8-32) under a real FCN-8s head, every weight random."""
    torch.manual_seed(0)
    bb = SyntheticBackbone(strides=(8, 16, 32))
    head = segzoo.get_registry().head("fcn8s").obj(list(bb.feature_info), 4)
    model = SegmentationModel(bb, head).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_spans_start_on_the_coarsest_grid_overlap_and_cover_the_side():
    spans = tile_spans(1000, 320, 0.5, align=32)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(s % 32 == 0 for s, _ in spans)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # consecutive tiles overlap
    assert all(e - s <= 320 for s, e in spans)
    assert tile_spans(200, 320, 0.5, 32) == [(0, 200)]


def test_the_receptive_field_is_smaller_than_the_margin():
    """The test's premise: an output pixel does not depend on input pixels MARGIN or more away."""
    model = small_model()
    x = torch.randn(1, 3, 320, 320, requires_grad=True)
    model(x)[0, :, 160, 160].sum().backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0)).unbind(1)
    assert (ys - 160).abs().max() < MARGIN and (xs - 160).abs().max() < MARGIN


@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_tiled_prediction_equals_whole_image_prediction_in_the_interior(overlap):
    model = small_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (520, 590, 3), dtype=np.uint8)
    whole = predict_image(model, image)
    tiled = predict_image(model, image, tile=320, overlap=overlap)
    assert torch.allclose(tiled.sum(0), torch.ones(520, 590), atol=1e-5)

    def safe(n: int) -> torch.Tensor:
        """Pixels at least MARGIN from every inner edge of every tile that covers them."""
        ok = torch.ones(n, dtype=torch.bool)
        for s, e in tile_spans(n, 320, overlap, align=32):
            y = torch.arange(s, e)
            bad = ((s > 0) & (y - s < MARGIN)) | ((e < n) & (e - y <= MARGIN))
            ok[s:e] &= ~bad
        return ok

    interior = safe(520)[:, None] & safe(590)[None, :]
    assert interior.float().mean() > 0.1  # a real share of the image, blended pixels included
    assert torch.allclose(tiled[:, interior], whole[:, interior], atol=1e-5)
    assert not torch.allclose(tiled, whole, atol=1e-3)  # near tile edges the context differs: the test can fail


def test_labels_and_probabilities_come_band_by_band_without_the_whole_map():
    model = small_model()
    image = np.random.default_rng(1).integers(0, 256, (400, 330, 3), dtype=np.uint8)
    probs = np.zeros((4, 400, 330), dtype=np.float32)
    labels = predict_labels(model, image, tile=192, overlap=0.25, probs_into=probs)
    assert np.array_equal(labels, probs.argmax(0))
    assert np.array_equal(predict_image(model, image, tile=192, overlap=0.25).numpy(), probs)
    batched = predict_image(model, image, tile=192, overlap=0.25, batch=3)  # tiles of one width run together
    assert np.allclose(batched.numpy(), probs, atol=1e-6)


def test_tile_and_overlap_are_checked():
    with pytest.raises(SegzooError, match="at least 64"):
        check_tile(48, 0.25, align=32, min_size=1)
    with pytest.raises(SegzooError, match="overlap"):
        check_tile(512, 1.0, align=32, min_size=1)


def test_the_tiled_model_scores_a_normalized_batch_as_predict_does():
    from segzoo.data.transforms import image_tensor, normalize
    from segzoo.infer.tile import TiledModel

    model = small_model()
    image = np.random.default_rng(2).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    x = normalize(image_tensor(image), model.normalization)[None]
    with torch.no_grad():
        got = TiledModel(model, 192, 0.25)(x)
    assert torch.allclose(got[0], predict_image(model, image, tile=192, overlap=0.25), atol=1e-6)


def test_cli_eval_takes_tile_and_tta(tmp_path, capsys):
    from segzoo.cli import main
    from segzoo.data import write_demo_dataset

    data = write_demo_dataset(tmp_path / "demo", train=1, val=2, size=64)
    ckpt = tmp_path / "m.pt"
    model = segzoo.create_model("alexnet-fcn32s", num_classes=6, backbone_kwargs={"fc_channels": 16})
    segzoo.save_model(model, ckpt)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--tile", "64", "--overlap", "0.5",
                 "--tta", "flip", "--json", str(tmp_path / "e.json")]) == 0
    assert "mean IU" in capsys.readouterr().out


# -- overlap-tile for a model whose output is a centred window of its input (U-Net's valid convolutions) --------

def small_classic() -> SegmentationModel:
    """The paper's U-Net at depth 2 and width 2 (random weights): valid convs, crop-and-concat, coarsest stride 4."""
    torch.manual_seed(0)
    return segzoo.create_model("unet-classic", num_classes=3, backbone_kwargs={"width": 2, "depth": 2}).eval()


def test_overlap_tile_equals_valid_inference_on_the_whole_mirrored_image():
    from segzoo.core.window import mirror_pad
    from segzoo.infer.tile import predict_windowed, windowed_tile

    model = small_classic()
    x = torch.randn(1, 3, 70, 53, generator=torch.Generator().manual_seed(1))

    def probs(v):
        with torch.no_grad():
            return model(v).softmax(1)

    whole_size = windowed_tile(model, (70, 53), None)  # one input whose window covers the image
    win = model.output_window(*whole_size)
    padded = mirror_pad(x, win.top, whole_size[0] - win.top - 70, win.left, whole_size[1] - win.left - 53)
    direct = probs(padded)[..., :70, :53]  # valid inference on the whole mirror-padded image
    tile = 60  # input tiles of 60 give 20x20 outputs: 4 x 3 tiles, starting at multiples of 20
    assert model.output_window(tile, tile).size == (20, 20)
    tiled = predict_windowed(probs, x, (tile, tile), model.output_window, 3, align=4)
    assert tiled.shape == (1, 3, 70, 53)
    assert torch.allclose(tiled, direct, atol=1e-5), float((tiled - direct).abs().max())
    # the mirror padding is the paper's: the first padded row is the image's second
    assert torch.equal(mirror_pad(x, 1, 0, 0, 0)[..., 0, :], x[..., 1, :])
    assert mirror_pad(x, 200, 3, 0, 0).shape[-2] == 273  # wider than the image: mirrored again


def test_predict_gives_full_size_masks_and_refuses_a_tile_the_geometry_cannot_take():
    model = small_classic()
    image = np.random.default_rng(0).integers(0, 255, (45, 67, 3), dtype=np.uint8)
    whole = predict_image(model, image)
    assert whole.shape == (3, 45, 67) and torch.allclose(whole.sum(0), torch.ones(45, 67), atol=1e-5)
    tiled = predict_image(model, image, tile=60)
    assert torch.allclose(tiled, whole, atol=1e-5)  # the same mirrored image, at the same pooling phase
    assert predict_labels(model, image, tile=60).shape == (45, 67)
    with pytest.raises(SegzooError, match=r"--tile 61: input 61x61 does not fit U-Net's valid geometry .*for 61 use "
                                          r"60 or 64"):
        predict_image(model, image, tile=61)
