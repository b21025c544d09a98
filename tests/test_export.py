"""segzoo.infer.export: torch.export with dynamic sizes over the registry, and checked ONNX/TorchScript/.pt2 files."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from torch.export import Dim

import segzoo
from segzoo.cli import main
from segzoo.core.accel import GemmConv2d, levers
from segzoo.core.errors import SegzooError
from segzoo.core.model import GEOMETRIES
from segzoo.infer.export import (
    ExportError,
    _dynamic_shapes,
    export_model,
    min_side,
    read_metadata,
    size_step,
    taken_side,
)

REGISTRY = segzoo.get_registry()
BACKBONES = [b for b in REGISTRY.names("backbone") if not b.endswith("*")]
NARROW = {"vgg16": {"fc_channels": 16}, "alexnet": {"fc_channels": 16}, "unet-encoder": {"width": 2, "depth": 2}}
SMALL_CHECKS = ((1, 97, 131), (2, 64, 72), (1, 70, 66))  # three sizes, one odd, none the export example's


def deepest_head(backbone: str) -> str:
    """The head with the most skips this backbone feeds: it runs every code path of the shallower FCN heads."""
    info = list(REGISTRY.backbone_factory(backbone)[0](**NARROW.get(backbone, {})).feature_info)
    reads = {h: REGISTRY.head(h).reads(info) for h in REGISTRY.names("head")}
    # the FCN heads (fixed strides) where they fuse more than one level; U-Net's valid encoder has only U-Net heads
    fixed = [h for h, r in reads.items() if r and len(r) > 1 and isinstance(REGISTRY.head(h).strides, tuple)]
    pool = fixed or [h for h, r in reads.items() if r]
    return max(pool, key=lambda h: (len(reads[h]), h))  # fcn8s-atonce over fcn8s: its scaled skips


@functools.cache
def model(name: str, geometry: str, **head_kwargs) -> segzoo.SegmentationModel:
    recipe = REGISTRY.resolve(name)
    head_kwargs = {"decoder_channels": 8, **head_kwargs} if recipe.head == "unet" else head_kwargs
    return segzoo.create_model(name, num_classes=3, geometry=geometry, backbone_kwargs=NARROW.get(recipe.backbone, {}),
                               head_kwargs=head_kwargs or None).eval()


# The heaviest cases (~10 s each on 2 cores: the pad-100 VGG16, MobileNetV3's many layers) carry the slow mark.
HEAVY = {("vgg16", "caffe"), ("timm-mobilenetv3_large_100", "modern"), ("vgg16-fcn8s", "caffe"),
         ("vgg16-fcn8s", "modern")}
CASES = [pytest.param(b, g, marks=[pytest.mark.slow] if (b, g) in HEAVY else []) for b in BACKBONES for g in GEOMETRIES]
ONNX_CASES = [pytest.param(n, g, marks=[pytest.mark.slow] if (n, g) in HEAVY else [])
              for n in ("alexnet-fcn32s", "vgg16-fcn8s") for g in GEOMETRIES]


@pytest.mark.parametrize(("backbone", "geometry"), CASES)
def test_torch_export_keeps_batch_height_and_width_dynamic(backbone, geometry):
    """Every registered backbone, with the head that reads the most of its strides, in every geometry it has:
    one program exported at 2 x 3 x S x (S+1) runs at another batch and an odd size and equals eager torch; in the
    modern geometry also at 225 x 240, far above the example (a size test made while tracing, such as the fast
    3x3 convs' minimum side, would have become a guard there: "Guard failed: torch.sym_min(...) < 16")."""
    try:
        m = model(f"{backbone}-{deepest_head(backbone)}", geometry)
    except SegzooError as exc:
        assert geometry != "modern" and "geometry" in str(exc)
        pytest.skip(f"{backbone} has no geometry {geometry}")
    low = min_side(m)
    step = size_step(m, low)  # 1; U-Net's valid encoder takes every 4th side here (depth 2)
    if step == 1:
        shapes = ({0: Dim("b", max=64), 2: Dim("h", min=low, max=4096), 3: Dim("w", min=low, max=4096)},)
    else:
        shapes = _dynamic_shapes((low, step))
    side = low if step == 1 else low + 2 * step
    program = torch.export.export(m, (torch.randn(2, 3, side, side + step),), dynamic_shapes=shapes)
    x = torch.randn(1, 3, taken_side(m, low + 33), taken_side(m, low + 3))
    with torch.no_grad():
        with levers(gemm=False, winograd=False):  # the exported graph's convs are the plain ones
            assert torch.equal(program.module()(x), m(x))
        torch.testing.assert_close(program.module()(x), m(x), rtol=1e-4, atol=1e-6)  # eager's own fast paths
        if geometry == "modern":  # far above the example: no guard may have tied the graph to small sizes
            x = torch.randn(1, 3, taken_side(m, 225), taken_side(m, 240))
            torch.testing.assert_close(program.module()(x), m(x), rtol=1e-4, atol=1e-6)


def test_frozen_bilinear_upsampling_exports_too():
    """A frozen, still-bilinear upsampling runs as F.interpolate: the exported graph takes that path as well."""
    m = model("alexnet-fcn8s", "modern", learnable_upsampling=False)
    m(torch.randn(1, 3, 64, 64))
    program = torch.export.export(m, (torch.randn(2, 3, 64, 65),), dynamic_shapes=(
        {0: Dim("b", max=64), 2: Dim("h", min=64, max=4096), 3: Dim("w", min=64, max=4096)},))
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), m(x), atol=1e-6)


@pytest.mark.parametrize(("name", "geometry"), ONNX_CASES)
def test_onnx_round_trip_at_three_sizes(tmp_path, name, geometry):
    pytest.importorskip("onnxruntime")
    m = model(name, geometry)
    report = export_model(m, "onnx", tmp_path / "m.onnx", check_sizes=SMALL_CHECKS)
    assert [d[0] for d in report.diffs] == [(n, 3, h, w) for n, h, w in SMALL_CHECKS]
    assert all(diff <= 1e-4 * scale for _, diff, scale in report.diffs)
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["normalization"] == m.normalization and meta["num_classes"] == 3
    assert meta["recipe"]["name"] == name and meta["recipe"]["geometry"] == geometry
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # batch, 3, height, width


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_torchscript_and_torch_export_files_check_themselves_and_carry_metadata(tmp_path, fmt):
    m = model("alexnet-fcn32s", "modern")
    report = export_model(m, fmt, tmp_path / "m.bin", check_sizes=SMALL_CHECKS)
    assert len(report.diffs) == 3 and all(diff <= 1e-4 * scale for _, diff, scale in report.diffs)
    assert read_metadata(tmp_path / "m.bin")["class_names"] == ["class_0", "class_1", "class_2"]


def test_export_refuses_an_existing_file_and_an_unknown_format(tmp_path):
    m = model("alexnet-fcn32s", "modern")
    (tmp_path / "m.pt2").write_text("mine")
    with pytest.raises(ExportError, match="--force"):
        export_model(m, "exported", tmp_path / "m.pt2")
    assert (tmp_path / "m.pt2").read_text() == "mine"
    with pytest.raises(ExportError, match="onnx, torchscript, exported"):
        export_model(m, "tflite", tmp_path / "x")


def test_cli_export_prints_the_check_and_refuses_to_overwrite(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    ckpt = tmp_path / "m.pt"
    segzoo.save_model(model("alexnet-fcn32s", "modern"), ckpt)
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # the three sizes the README names, none of them the export example's
    assert [line.split()[1] for line in printed.splitlines() if line.strip().startswith("check ")] == [
        "1x3x97x131:", "2x3x128x96:", "1x3x160x224:"] and out.is_file()
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert not list(tmp_path.glob(".m.onnx.*"))  # no temporary file left behind


def test_the_built_in_fast_convs_export_as_plain_convolutions(tmp_path):
    """fc6/fc7 are GEMMs in eager CPU calls; an exported graph has only convolutions (no unfold, no matmul),
    and exporting changes nothing in the model."""
    m = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 16}).eval()
    assert type(m.backbone.fc6) is GemmConv2d and type(m.backbone.fc7) is GemmConv2d
    report = export_model(m, "exported", tmp_path / "m.pt2", check_sizes=SMALL_CHECKS)
    assert all(diff <= 1e-4 * scale for _, diff, scale in report.diffs)
    graph = torch.export.load(str(tmp_path / "m.pt2")).graph
    ops = {str(n.target) for n in graph.nodes if n.op == "call_function"}
    convs = [n for n in graph.nodes if "convolution" in str(n.target) or "conv2d" in str(n.target)]
    assert len(convs) >= sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())
    assert not any(k in op for op in ops for k in ("mm", "matmul", "im2col", "unfold"))
    assert type(m.backbone.fc6) is GemmConv2d


# --- hostile and broken files (issue 21, items 2, 4 and 6) -----------------------------------------------------

def _onnx_with(tmp_path, **meta):
    """A tiny valid ONNX graph (Identity on N x 3 x H x W) carrying the given ``segzoo.*`` metadata."""
    import json

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"segzoo.{key}", value if isinstance(value, str) else json.dumps(value)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    return path


GOOD_META = {"normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "num_classes": 3, "in_chans": 3}


@pytest.mark.parametrize("change, message", [
    ({"normalization": {"mean": [0, 0, 0], "std": [0, 1, 1]}}, "std must be > 0"),
    ({"normalization": {"mean": [float("nan"), 0, 0], "std": [1, 1, 1]}}, "finite numbers"),
    ({"normalization": "{not json"}, "not JSON"),
    ({"num_classes": 0}, "num_classes 0"),
    ({"num_classes": True}, "num_classes True"),
    ({"class_names": ["a"]}, "one name per class"),
    ({"in_chans": -1}, "in_chans -1"),
    ({"align": 1.5}, "align 1.5"),
    ({"recipe": {"backbone": 3}}, "recipe"),
    ({"output_window": {"input": [64, 64], "window": [40, 0, 30, 64]}}, "output_window"),  # leaves the input
    ({"output_window": {"input": [64], "window": "all"}}, "output_window"),
    ({"size_step": 0}, "size_step 0"),
])
def test_onnx_metadata_is_checked_like_a_checkpoint_recipe(tmp_path, change, message):
    pytest.importorskip("onnxruntime")
    from segzoo.core.errors import CheckpointError
    from segzoo.infer.runtime import OnnxModel

    path = _onnx_with(tmp_path, **{**GOOD_META, **change})
    for read in (OnnxModel, read_metadata):
        with pytest.raises(CheckpointError, match=message):
            read(path)


def test_a_graph_that_contradicts_its_metadata_is_one_error(tmp_path):
    pytest.importorskip("onnxruntime")
    from segzoo.core.errors import CheckpointError
    from segzoo.infer.runtime import OnnxModel

    m = OnnxModel(_onnx_with(tmp_path, **{**GOOD_META, "num_classes": 5}))
    with pytest.raises(CheckpointError, match="not N x 5 x 8 x 8"):
        m(torch.zeros(1, 3, 8, 8))
    assert OnnxModel(_onnx_with(tmp_path, **GOOD_META))(torch.ones(1, 3, 8, 8)).shape == (1, 3, 8, 8)


def test_the_export_check_refuses_nan_outputs():
    from segzoo.infer.export import compare

    net = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ExportError, match="NaN or Inf"):
        compare(net, lambda x: torch.full((x.shape[0], 2, *x.shape[2:]), float("nan")), 3, ((1, 8, 8),))
    with torch.no_grad():
        net.weight.fill_(float("inf"))
    with pytest.raises(ExportError, match="torch model itself"):
        compare(net, lambda x: net(x), 3, ((1, 8, 8),))


@pytest.mark.parametrize("opset", [16, 100, -1])
def test_out_of_range_opsets_are_refused_before_any_work(tmp_path, opset):
    pytest.importorskip("onnx")
    with pytest.raises(ExportError, match=f"--opset {opset}: segzoo writes ONNX opsets 17 to"):
        export_model(model("alexnet-fcn32s", "modern"), "onnx", tmp_path / "m.onnx", opset=opset)
    assert not any(tmp_path.iterdir())


def test_export_never_replaces_its_own_checkpoint_even_with_force(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    segzoo.save_model(model("alexnet-fcn32s", "modern"), ckpt)
    before = ckpt.read_bytes()
    for out in (ckpt, tmp_path / "." / "m.pt"):
        assert main(["export", str(ckpt), "--format", "torchscript", "--out", str(out), "--force"]) == 2
        assert "one of this command's inputs" in capsys.readouterr().err
    assert ckpt.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_torchscript_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk, capsys):
    ckpt = tmp_path / "m.pt"
    segzoo.save_model(model("alexnet-fcn32s", "modern"), ckpt)
    for fmt in ("torchscript", "exported"):
        code = main(["export", str(ckpt), "--format", fmt, "--out", str(small_disk / "m.bin")])
        err = capsys.readouterr().err
        assert code == 2 and f"the disk mounted at {small_disk} is full" in err and len(err.splitlines()) == 1
        assert os.listdir(small_disk) == []


def test_an_onnx_file_of_a_valid_convolution_unet_predicts_full_size_masks_like_the_model(tmp_path):
    """The file records the model's output window; onnxruntime then mirrors and tiles as the model itself does
    (before, predict read the window as a full-size mask: "unexpected ValueError")."""
    pytest.importorskip("onnxruntime")
    from segzoo.infer.predict import predict_image
    from segzoo.infer.runtime import OnnxModel

    m = model("unet-classic", "modern")  # depth 2, width 2: sides 44 + 4k, 40 px of context lost
    export_model(m, "onnx", tmp_path / "u.onnx", check=False)  # the check has its own tests
    onnx = OnnxModel(tmp_path / "u.onnx")
    assert onnx.output_window(48, 52) == m.output_window(48, 52) == segzoo.Window(20, 20, 8, 12)
    with pytest.raises(segzoo.SegzooError, match="nearest: 44 or 48"):
        onnx.output_window(46, 48)
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    a, b = predict_image(onnx, image), predict_image(m, image)
    assert a.shape == b.shape == (3, 37, 45) and torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", [pytest.param("vgg16-unet", marks=pytest.mark.slow), "alexnet-unet", "unet-classic"])
def test_unet_exports_check_themselves_and_a_valid_one_records_its_window(tmp_path, name):
    """U-Net's decoder exports like the FCN heads; the paper's valid network (depth 2, width 2 here) is exported
    for the sides its geometry takes (low + 4k), records its window, and checks itself on it."""
    m = model(name, "modern")
    report = export_model(m, "exported", tmp_path / "m.pt2", check_sizes=SMALL_CHECKS)
    meta = read_metadata(tmp_path / "m.pt2")
    if name == "unet-classic":
        assert [d[0] for d in report.diffs] == [(1, 3, 100, 132), (2, 3, 64, 72), (1, 3, 72, 68)]  # sides it takes
        assert meta["output_window"] == {"input": [44, 44], "window": [20, 20, 4, 4]} and meta["size_step"] == 4
        assert min_side(m) == 44
    else:
        assert [d[0] for d in report.diffs] == [(n, 3, h, w) for n, h, w in SMALL_CHECKS]
        assert "output_window" not in meta
    assert all(diff <= 1e-4 * max(scale, 1e-12) for _, diff, scale in report.diffs)
