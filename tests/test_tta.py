"""segzoo.infer.tta: flips and scales averaged as probabilities; a mirror-symmetric model gains nothing from flips."""

from __future__ import annotations

import pytest
import torch

import segzoo
from segzoo.core.batch import Window
from segzoo.core.errors import SegzooError
from segzoo.core.model import SegmentationModel
from segzoo.infer.predict import predict_labels
from segzoo.infer.tile import TiledModel
from segzoo.infer.tta import TTA, parse_tta, tta_probs
from segzoo.zoo.contract import SyntheticBackbone


def model(symmetric: bool) -> SegmentationModel:
    """A small FCN-8s; ``symmetric`` mirrors every kernel onto itself, so the net commutes with a left-right flip."""
    torch.manual_seed(0)
    bb = SyntheticBackbone(strides=(8, 16, 32))
    m = SegmentationModel(bb, segzoo.get_registry().head("fcn8s").obj(list(bb.feature_info), 3)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
            if symmetric and p.dim() == 4:
                p.copy_((p + p.flip(-1)) / 2)
    return m


def run_of(m):
    return lambda x: m(x)


def test_flip_tta_on_a_symmetric_model_equals_plain_inference_and_differs_on_an_asymmetric_one():
    x = torch.randn(2, 3, 96, 128)  # sides on the stride-32 grid: the pools' windows are mirror images too
    sym = model(symmetric=True)
    plain = tta_probs(run_of(sym), x)
    assert torch.allclose(tta_probs(run_of(sym), x, TTA(flip=True)), plain, atol=1e-5)
    asym = model(symmetric=False)
    assert not torch.allclose(tta_probs(run_of(asym), x, TTA(flip=True)), tta_probs(run_of(asym), x), atol=1e-3)


def test_scales_and_flips_average_probabilities_at_the_input_size():
    m = model(symmetric=False)
    x = torch.randn(1, 3, 70, 90)
    p = tta_probs(run_of(m), x, TTA(flip=True, scales=(0.75, 1.0, 1.25)))
    assert p.shape == (1, 3, 70, 90) and torch.allclose(p.sum(1), torch.ones(1, 70, 90), atol=1e-5)
    views = []
    for s in (0.75, 1.0, 1.25):
        xs = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else x
        for flip in (False, True):
            q = m(xs.flip(-1) if flip else xs).softmax(1)
            q = q.flip(-1) if flip else q
            views.append(torch.nn.functional.interpolate(q, size=(70, 90), mode="bilinear", align_corners=False))
    assert torch.allclose(p, torch.stack(views).mean(0), atol=1e-5)


def test_parse_tta():
    assert parse_tta(["flip", "scales=0.75,1,1.25"]) == TTA(True, (0.75, 1.0, 1.25))
    assert parse_tta([]) == TTA()
    with pytest.raises(SegzooError, match="--tta flip"):
        parse_tta(["rotate"])
    with pytest.raises(SegzooError, match="scales"):
        parse_tta(["scales=a,b"])


def test_scales_on_a_one_pixel_image_never_make_an_empty_view():
    """0.05 x 1 px was a 0-px view and an 'unexpected RuntimeError' (issue 21)."""
    from segzoo.infer.tta import TTA, tta_probs

    def run(x):
        return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    p = tta_probs(run, torch.zeros(1, 3, 1, 1), TTA(flip=True, scales=(0.05, 0.5, 1.0, 2.0)))
    assert p.shape == (1, 3, 1, 1) and torch.allclose(p, torch.full_like(p, 1 / 3))


class PixelwiseValid(torch.nn.Module):
    """A valid-convolution stand-in: two classes scored from each pixel's own first channel, its output the input
    less a 10-pixel margin on every side. A rescaled view put back where its pixels lie agrees with plain
    inference (up to the resizing); one stretched over the unscaled window is shifted by up to ten pixels."""

    num_classes, margin = 2, 10
    normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1.0, "bgr": False}

    def output_window(self, height: int, width: int) -> Window:
        m = self.margin
        return Window.centred(height, width, height - 2 * m, width - 2 * m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin
        v = x[:, :1, m:x.shape[-2] - m, m:x.shape[-1] - m]
        return torch.cat([v, -v], 1)


def ramp(h: int, w: int) -> torch.Tensor:
    """A normalized batch whose first channel climbs from -2 to 2 across the width: p(class 0) from 0.02 to 0.98."""
    x = torch.zeros(1, 3, h, w)
    x[:, 0] = torch.linspace(-2, 2, w)
    return x


@pytest.mark.parametrize("tile", [None, 44])
def test_scaled_views_of_a_valid_model_are_scored_where_their_pixels_lie(tile):
    # each view is predicted whole (mirrored borders, overlap-tile) before the average: the window of a rescaled
    # input is another part of the image, and was stretched over the unscaled window (off by up to 10 px here)
    model, x = PixelwiseValid(), ramp(60, 96)
    plain = TiledModel(model, tile)(x)
    scaled = TiledModel(model, tile, tta=TTA(flip=True, scales=(0.5, 2.0)))(x)
    assert scaled.shape == plain.shape == ((1, 2, 60, 96) if tile else (1, 2, 40, 76))
    assert float((scaled - plain).abs().max()) < 0.02
    image = (torch.linspace(0, 255, 96).round().to(torch.uint8)[None, :, None].expand(60, 96, 3)).numpy().copy()
    probs = {}
    for name, tta in (("plain", TTA()), ("scaled", TTA(scales=(0.5, 2.0)))):
        probs[name] = torch.zeros(2, 60, 96).numpy()
        predict_labels(model, image, tile=tile, tta=tta, probs_into=probs[name])
    assert abs(probs["scaled"] - probs["plain"]).max() < 0.02
