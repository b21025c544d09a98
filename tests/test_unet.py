"""plugins/unet.py: U-Net's decoder on every backbone, and the paper's valid network trained, evaluated and predicted
with its output window (labels cropped to it, full-size masks by overlap-tile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import segzoo
from segzoo.core.batch import Window
from segzoo.data import find_pairs, read_mask
from segzoo.data.transforms import eval_transform, window_transform
from segzoo.infer.predict import predict_image
from segzoo.train import TrainConfig, train

SMALL = {"width": 2, "depth": 2}  # the paper's network at depth 2 and width 2: the same geometry rules, tiny


class PlainUNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015), Fig. 1, written out in plain PyTorch for comparison."""

    def __init__(self, in_chans: int = 3, classes: int = 2):
        super().__init__()

        def double(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3), nn.ReLU(), nn.Conv2d(o, o, 3), nn.ReLU())

        widths = [64, 128, 256, 512, 1024]
        self.down = nn.ModuleList([double(in_chans, 64)] + [double(a, b) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:])][::-1])
        self.dec = nn.ModuleList([double(b, a) for a, b in zip(widths, widths[1:])][::-1])
        self.out = nn.Conv2d(64, classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(nn.functional.max_pool2d(x, 2) if i else x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            skip = skips.pop()
            t = (skip.shape[-1] - x.shape[-1]) // 2
            x = dec(torch.cat([skip[..., t:t + x.shape[-2], t:t + x.shape[-1]], x], 1))
        return self.out(x)


def test_unet_classic_is_the_papers_network_572_to_388():
    with torch.device("meta"):  # 31 million weights: their shapes are what is compared
        model = segzoo.create_model("unet-classic")
        plain = PlainUNet(3, model.num_classes)
        out = model(torch.empty(1, 3, 572, 572))
    assert tuple(out.shape) == (1, 2, 388, 388) == tuple(plain(torch.empty(1, 3, 572, 572)).shape)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) == 31_031_810
    assert model.output_window(572, 572) == Window(92, 92, 388, 388)
    assert [f.channels for f in model.backbone.feature_info] == [64, 128, 256, 512, 1024]


def test_a_size_the_valid_geometry_cannot_take_is_refused_with_the_nearest_ones():
    model = segzoo.create_model("unet-classic", backbone_kwargs=SMALL)
    with pytest.raises(segzoo.InputError, match=r"input 61x64 does not fit U-Net's valid geometry \(depth 2: .*sides "
                                                r"are 44 \+ 4k\): for 61 use 60 or 64"):
        model(torch.randn(1, 3, 61, 64))
    with pytest.raises(segzoo.InputError, match=r"input 570x572 .*sides are 188 \+ 16k\): for 570 use 556 or 572"):
        segzoo.create_model("unet-classic", backbone_kwargs={"width": 1}).output_window(570, 572)


@pytest.mark.parametrize("name", ["vgg16-unet", "alexnet-unet", "timm-resnet18-unet"])
def test_the_unet_head_composes_by_name_and_keeps_the_input_size(name):
    kwargs = {} if name.startswith("timm") else {"backbone_kwargs": {"fc_channels": 16}}
    model = segzoo.create_model(name, num_classes=3, head_kwargs={"decoder_channels": 8}, **kwargs).eval()
    low = model.backbone.min_input_size
    with torch.no_grad():
        assert model(torch.randn(2, 3, low + 1, low + 7)).shape == (2, 3, low + 1, low + 7)
    assert model.head.strides == tuple(sorted(model.backbone.strides(), reverse=True))
    assert model.output_window(low + 1, low + 7).is_full(low + 1, low + 7)


def test_unet_options_are_checked():
    with pytest.raises(segzoo.SegzooError, match=r"norm 'layer' is not one of \['group', 'batch', 'none'\]"):
        segzoo.create_model("alexnet-unet", head_kwargs={"norm": "layer"}, backbone_kwargs={"fc_channels": 16})
    with pytest.raises(segzoo.SegzooError, match="decoder_channels needs 3 positive widths"):
        segzoo.create_model("alexnet-unet", head_kwargs={"decoder_channels": [8, 8]},
                            backbone_kwargs={"fc_channels": 16})
    options = {"upsample": "bilinear", "norm": "batch", "decoder_channels": 8}
    model = segzoo.create_model("alexnet-unet", head_kwargs=options, backbone_kwargs={"fc_channels": 16})
    assert model.eval()(torch.randn(1, 3, 45, 50)).shape == (1, 21, 45, 50)


def test_the_window_transform_mirrors_the_image_out_and_pads_the_mask_with_void():
    model = segzoo.create_model("unet-classic", num_classes=3, backbone_kwargs=SMALL)
    assert window_transform(segzoo.create_model("alexnet-fcn8s", backbone_kwargs={"fc_channels": 16})) is None
    image = torch.rand(3, 30, 41)
    mask = torch.randint(0, 3, (30, 41))
    x, m = eval_transform(None, window_transform(model))(image, mask, np.random.default_rng(0))
    win = model.output_window(*x.shape[-2:])
    assert win.top == 20 and x.shape[-2:] == m.shape and torch.equal(win.crop(m)[:30, :41], mask)
    assert (win.crop(m)[30:] == 255).all() and (win.crop(m)[:, 41:] == 255).all() and (m[:20] == 255).all()


def test_a_valid_model_trains_an_epoch_on_cropped_labels_evaluates_and_predicts_full_size(tmp_path, demo_data):
    cfg = TrainConfig(model="unet-classic", backbone_kwargs=SMALL, data=str(demo_data), out_dir=str(tmp_path / "run"),
                      input_size=32, batch_size=4, epochs=1, scale=(1.0, 1.0), progress=False, device="cpu",
                      lr=1e-3)
    result = train(cfg, log=lambda _: None)
    assert np.isfinite(result.history[-1].train_loss)
    # validation scored every labelled pixel of the whole images (the window covers each image, the rest is void)
    labelled = sum(int((read_mask(m) != 255).sum()) for _, m in find_pairs(demo_data, "val").pairs)
    assert result.final_metrics["pixels"] == labelled
    model = segzoo.load_model(result.last_checkpoint)
    assert model.output_window(60, 60) == Window(20, 20, 20, 20)
    image = np.random.default_rng(0).integers(0, 255, (50, 71, 3), dtype=np.uint8)
    assert predict_image(model, image).shape == (model.num_classes, 50, 71)
    assert predict_image(model, image, tile=64).shape == (model.num_classes, 50, 71)


def test_build_prints_the_window_and_refuses_a_size_with_the_nearest_ones(capsys):
    from segzoo.cli import main

    assert main(["build", "unet-classic", "--backbone-opt", "width=1", "--input", "3x572x572"]) == 0
    assert "output window  388 x 388 at row 92, column 92 of the 572 x 572 input" in capsys.readouterr().out
    assert main(["build", "unet-classic", "--backbone-opt", "width=1", "--input", "3x570x572"]) == 2
    err = capsys.readouterr().err
    assert "for 570 use 556 or 572" in err and len(err.splitlines()) == 1
