"""Property-based tests (hypothesis) of the readers of user files: the config, label-map, export-metadata and
image readers. Whatever the bytes, a reader returns a checked value or raises segzoo's one-line error: never
another exception (a traceback), never a hang. Kept apart from the per-module files so that the suite still
runs where the ``dev`` extra (which brings hypothesis) is not installed: then this file alone is skipped.
"""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from segzoo.core.errors import SegzooError  # noqa: E402

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

# YAML/JSON-like values: what a hand-edited file can hold
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _write(tmp_path_factory, data: bytes, name: str):
    path = tmp_path_factory.mktemp("h") / name
    path.write_bytes(data)
    return path


@FAST
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_config_file_is_a_setting_dict_or_one_error(tmp_path_factory, data):
    from segzoo.train.config import load_config

    try:
        assert isinstance(load_config(_write(tmp_path_factory, data, "c.yaml")), dict)
    except SegzooError:
        pass


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(settings_=st.dictionaries(st.sampled_from(["epochs", "flip", "scale", "lr", "workers", "class_weights",
                                                  "batch_size", "demo", "seed", "val_split", "input_size",
                                                  "backbone_kwargs", "amp", "momentum"]), VALUES, max_size=4))
def test_any_yaml_settings_are_checked_in_one_error_before_training(tmp_path_factory, settings_):
    import yaml

    from segzoo.train.config import TrainConfig, load_config

    try:
        text = yaml.safe_dump(settings_).encode()
    except yaml.YAMLError:
        return
    try:
        loaded = load_config(_write(tmp_path_factory, text, "c.yaml"))
        TrainConfig.from_dict({**loaded, "model": "alexnet-fcn32s"}).check()
    except SegzooError:
        pass


@FAST
@given(data=st.one_of(st.binary(max_size=200),
                      st.dictionaries(st.one_of(st.integers(-5, 300), st.text(max_size=5)), VALUES, max_size=5)
                      .map(lambda d: json.dumps(d, default=str).encode())))
def test_any_label_map_file_is_a_label_map_or_one_error(tmp_path_factory, data):
    from segzoo.data.label_map import load_label_map

    try:
        m = load_label_map(_write(tmp_path_factory, data, "map.yaml"))
        assert 1 <= m.num_classes <= 255
    except SegzooError:
        pass


@FAST
@given(meta=st.dictionaries(st.sampled_from(["normalization", "num_classes", "class_names", "in_chans", "min_size",
                                             "align", "recipe", "output_window", "size_step"]), VALUES, max_size=9),
       raw=st.dictionaries(st.text(max_size=12).map(lambda k: "segzoo." + k), st.text(max_size=30), max_size=3))
def test_any_export_metadata_is_checked_or_one_error(meta, raw):
    from segzoo.infer.export import check_metadata

    props = {f"segzoo.{k}": json.dumps(v) for k, v in meta.items()} | raw
    try:
        out = check_metadata(props, "m.onnx")
    except SegzooError:
        return
    if "normalization" in out:
        assert min(out["normalization"]["std"]) > 0
    if "output_window" in out:  # what OnnxModel rebuilds from it: a window inside the input, or one error
        from segzoo.core.batch import Window
        from segzoo.core.window import shifted_window

        record = out["output_window"]
        window_of = shifted_window(tuple(record["input"]), Window(*record["window"]), out.get("size_step", 1))
        for side in (1, record["input"][0], 300):
            try:
                win = window_of(side, side)
            except SegzooError:
                continue
            assert 0 <= win.top and win.top + win.height <= side


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))  # three files per example
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".png", ".tif", ".jpg", ".bmp"]))
def test_any_bytes_as_an_image_is_an_image_or_one_error(tmp_path_factory, data, suffix):
    from segzoo.data.io import read_image

    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"II*\x00"):
        try:
            a = read_image(_write(tmp_path_factory, prefix + data, "x" + suffix))
            assert a.ndim == 3
        except SegzooError:
            pass


@FAST
@given(values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=4, max_size=4))
def test_a_float_tiff_is_finite_when_read_or_refused(tmp_path_factory, values):
    import numpy as np
    import tifffile

    from segzoo.data.io import read_image

    path = tmp_path_factory.mktemp("h") / "x.tif"
    tifffile.imwrite(path, np.array(values, np.float32).reshape(2, 2))
    try:
        assert np.isfinite(read_image(path)).all()
    except SegzooError as exc:
        assert "NaN or Inf" in str(exc) and not np.isfinite(values).all()
