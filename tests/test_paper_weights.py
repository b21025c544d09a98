"""Whole-model weights: the published FCN weights in torchfcn's layout, segzoo's own files, conversion.

The strongest check is fidelity: a random state dict in torchfcn's layout, loaded by segzoo, must
give the same scores as torchfcn's own forward (tests/torchfcn_reference.py, plain torch) on it.
fc6/fc7 are narrowed to a few channels where the test is not about their shapes.
"""

from __future__ import annotations

import pytest
import torch
from segzoo_plugins.fcn import from_torchfcn, to_torchfcn, torchfcn_names

import segzoo
from segzoo.cli import main
from segzoo.core.errors import CheckpointError
from segzoo.core.model import CAFFE_NORM
from segzoo.io.checkpoint import safe_load
from segzoo.io.weights import detect_format
from tests.torchfcn_reference import HEADS, torchfcn_head, torchfcn_shapes, torchfcn_state, torchfcn_trunk

C, FC = 3, 16  # classes and fc6/fc7 width of the small test files


@pytest.fixture(scope="module")
def torchfcn_files(tmp_path_factory):
    """One torchfcn-layout file per head, with shared random weights, and the state dicts themselves."""
    folder = tmp_path_factory.mktemp("torchfcn")
    files = {}
    for head in HEADS:
        state = torchfcn_state(head, C, FC, seed=0)
        torch.save(state, folder / f"{head}.pth")
        files[head] = (folder / f"{head}.pth", state)
    return files


def paper_model(head: str, path=None, num_classes: int = C, fc: int = FC, **kwargs):
    return segzoo.create_model(f"vgg16-{head}", num_classes=num_classes, geometry="caffe", weights=path,
                               backbone_kwargs={"fc_channels": fc}, **kwargs)


@pytest.fixture(scope="module", params=[(33, 47), (64, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def runs(request, torchfcn_files):
    """One FCN-8s forward through segzoo and through the port; segzoo's backbone features kept for the other heads.

    The files share their trunk weights, so these features are what every head's model would compute.
    """
    path, state = torchfcn_files["fcn8s"]
    model = paper_model("fcn8s", path).eval()
    x = torch.randn(1, 3, *request.param, generator=torch.Generator().manual_seed(1))
    seen = {}
    model.backbone.register_forward_hook(lambda _m, _i, out: seen.update(out))
    with torch.no_grad():
        return {"x": x, "ours": model(x), "features": seen, "trunk": torchfcn_trunk(state, x)}


def assert_same_scores(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert theirs.abs().max() > 0.1  # not a comparison of two near-zero maps
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_fcn8s_outputs_equal_the_ports_end_to_end(runs, torchfcn_files):
    _, state = torchfcn_files["fcn8s"]
    assert runs["ours"].shape == (1, C, *runs["x"].shape[-2:])
    assert_same_scores(runs["ours"], torchfcn_head(state, runs["trunk"], "fcn8s", runs["x"].shape[-2:]))


def test_backbone_equals_the_ports_trunk(runs):
    for stride, name in ((8, "pool3"), (16, "pool4"), (32, "fc7")):
        assert_same_scores(runs["features"][stride], runs["trunk"][name])


@pytest.mark.parametrize("head", HEADS)
def test_every_head_equals_the_ports(runs, torchfcn_files, head):
    path, state = torchfcn_files[head]
    model = paper_model(head, path).eval()
    size = runs["x"].shape[-2:]
    with torch.no_grad():
        ours = model.head(runs["features"], size)
    assert_same_scores(ours, torchfcn_head(state, runs["trunk"], head, size))


def test_at_once_differs_from_fcn8s_by_the_skip_scaling(runs, torchfcn_files):
    """Same weights, so only the 0.01 / 0.0001 scaling separates the two; the port's at-once agrees (above)."""
    _, state = torchfcn_files["fcn8s"]
    size = runs["x"].shape[-2:]
    diff = torchfcn_head(state, runs["trunk"], "fcn8s-atonce", size) - runs["ours"]
    assert diff.abs().max() > 0.1


@pytest.mark.parametrize("head", HEADS)
def test_full_size_layout_maps_onto_the_model(head):
    """The published shapes (fc6 4096x512x7x7, 21 classes) map key for key; built on the meta device, no memory."""
    with torch.device("meta"):
        model = paper_model(head, num_classes=21, fc=4096)
        state = {k: torch.empty(s) for k, s in torchfcn_shapes(head, 21).items()}
    converted = from_torchfcn(model, state)
    assert set(converted) == set(model.state_dict())
    names = torchfcn_names(model)
    assert names["backbone.features.0.weight"] == "conv1_1.weight"
    assert names["backbone.features.28.bias"] == "conv5_3.bias"
    assert names["backbone.fc6.weight"] == "fc6.weight"
    assert names["head.score_fr.weight"] == "score_fr.weight"
    final = {"fcn32s": "upscore", "fcn16s": "upscore16"}.get(head, "upscore8")
    assert names["head.upscore.weight"] == f"{final}.weight"
    if head != "fcn32s":
        assert names["head.score_skip.16.weight"] == "score_pool4.weight"
        assert names["head.upscore_skip.16.weight"] == "upscore2.weight"


def test_wrong_head_for_the_file_lists_what_differs(torchfcn_files):
    path, _ = torchfcn_files["fcn32s"]
    with pytest.raises(CheckpointError) as err:
        paper_model("fcn8s", path)
    msg = str(err.value)
    assert str(path) in msg and "torchfcn" in msg
    assert "score_pool4.weight" in msg and "upscore8.weight" in msg  # missing from the file
    assert "upscore.weight" in msg  # in the file, not in the model
    assert "build vgg16-fcn32s" in msg


def test_wrong_number_of_classes_lists_shapes(torchfcn_files):
    path, _ = torchfcn_files["fcn16s"]
    shapes = r"score_fr\.weight: file \(3, 16, 1, 1\) vs model \(5, 16, 1, 1\)"
    with pytest.raises(CheckpointError, match=shapes) as err:
        paper_model("fcn16s", path, num_classes=5)
    assert "num_classes=3" in str(err.value)


def test_torchfcn_weights_need_the_paper_geometry(torchfcn_files):
    path, _ = torchfcn_files["fcn8s"]
    with pytest.raises(CheckpointError, match="geometry='caffe'"):
        segzoo.create_model("vgg16-fcn8s", num_classes=C, weights=path, backbone_kwargs={"fc_channels": FC})


@pytest.mark.parametrize("name", ["alexnet-fcn32s", "vgg16-fcn4s"])
def test_torchfcn_weights_only_fit_vgg16_fcn32_16_8(torchfcn_files, name):
    with pytest.raises(CheckpointError, match="vgg16-fcn8s-atonce"):
        segzoo.create_model(name, num_classes=C, geometry="caffe", weights=torchfcn_files["fcn32s"][0],
                            backbone_kwargs={"fc_channels": FC})


def test_unknown_layout_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="unknown weights layout.*encoder.weight"):
        segzoo.create_model("vgg16-fcn32s", weights=path, backbone_kwargs={"fc_channels": FC})


@pytest.mark.parametrize("geometry", ["modern", "caffe"])
def test_segzoo_checkpoints_and_state_dicts_load_as_weights(tmp_path, geometry):
    source = segzoo.create_model("alexnet-fcn16s", num_classes=C, geometry=geometry,
                                 backbone_kwargs={"fc_channels": FC})
    segzoo.save_model(source, tmp_path / "m.pt")
    torch.save(source.state_dict(), tmp_path / "m.pth")
    for path, fmt in ((tmp_path / "m.pt", "segzoo-checkpoint"), (tmp_path / "m.pth", "segzoo")):
        assert detect_format(safe_load(path), segzoo.get_registry().weight_layouts()) == fmt
        model = segzoo.create_model("alexnet-fcn16s", num_classes=C, geometry=geometry, weights=path,
                                    backbone_kwargs={"fc_channels": FC})
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key


def test_checkpoint_of_another_geometry_says_so(tmp_path):
    segzoo.save_model(segzoo.create_model("alexnet-fcn32s", num_classes=C, backbone_kwargs={"fc_channels": FC}),
                      tmp_path / "modern.pt")
    with pytest.raises(CheckpointError) as err:
        segzoo.create_model("alexnet-fcn32s", num_classes=C, geometry="caffe", weights=tmp_path / "modern.pt",
                            backbone_kwargs={"fc_channels": FC})
    msg = str(err.value)
    assert "head.upscore.deconv.weight" in msg and "geometry 'modern'" in msg and "load_model" in msg


def test_convert_writes_a_checkpoint_that_loads_without_flags(torchfcn_files, tmp_path, capsys):
    src, state = torchfcn_files["fcn8s"]
    out = tmp_path / "fcn8s.pt"
    assert main(["convert", "--from", "torchfcn", str(src), "--model", "vgg16-fcn8s", str(out)]) == 0
    assert "geometry 'caffe'" in capsys.readouterr().out
    model = segzoo.load_model(out)
    r = model.recipe
    assert (r.geometry, r.num_classes, r.backbone_kwargs) == ("caffe", C, {"fc_channels": FC})
    assert model.normalization == CAFFE_NORM  # BGR, 0-255, minus the Caffe mean: applied by predict/eval
    assert safe_load(out)["converted_from"]["layout"] == "torchfcn"
    back = to_torchfcn(model)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_convert_refuses_the_wrong_model(torchfcn_files, tmp_path, capsys):
    src, _ = torchfcn_files["fcn16s"]
    code = main(["convert", "--from", "torchfcn", str(src), "--model", "vgg16-fcn32s", str(tmp_path / "x.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "upscore16.weight" in err and "build vgg16-fcn16s" in err
    assert not (tmp_path / "x.pt").exists()
