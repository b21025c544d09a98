"""Label maps: dataset ids -> training ids from YAML (unlisted ids void), the Cityscapes and ADE20K maps shipped
with the package and used by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segzoo.cli import main
from segzoo.core.errors import DataError
from segzoo.data import SegmentationDataset, find_pairs, load_label_map
from segzoo.data.label_map import shipped_label_maps
from segzoo.train import TrainConfig, train


def test_the_cityscapes_map_gives_19_classes_and_void():
    m = load_label_map("cityscapes")
    assert m.num_classes == 19 and len(m.mapping) == 34 and m.names[0] == "road" and m.names[-1] == "bicycle"
    ids = np.array([[7, 8, 26, 33], [0, 9, 34, 255]], dtype=np.uint8)  # road sidewalk car bicycle / void ids
    assert m(ids).tolist() == [[0, 1, 13, 18], [255, 255, 255, 255]]


def test_the_ade20k_map_shifts_ids_down_and_voids_zero():
    m = load_label_map("ade20k")
    assert m.num_classes == 150 and m.names[:3] == ("wall", "building", "sky") and m.names[-1] == "flag"
    assert m(np.array([0, 1, 2, 150, 151], dtype=np.uint8)).tolist() == [255, 0, 1, 149, 255]


def test_a_shipped_map_by_name_a_path_and_an_unknown_name(tmp_path, monkeypatch):
    """A name finds the file inside the package; a path is a path (even one named like a shipped map)."""
    assert shipped_label_maps() == ["ade20k", "cityscapes"]
    by_name = load_label_map("cityscapes")
    assert Path(by_name.source).parent.name == "label_maps" and Path(by_name.source).is_file()
    assert load_label_map(by_name.source).mapping == by_name.mapping
    monkeypatch.chdir(tmp_path)
    Path("cityscapes").write_text("1: 0\n")  # a file in the working folder wins over the shipped map
    assert load_label_map("cityscapes").num_classes == 1
    with pytest.raises(DataError, match="no label map 'mapillary'.*ships with segzoo \\(ade20k, cityscapes\\)"):
        load_label_map("mapillary")
    with pytest.raises(DataError, match="label map nowhere/x.yaml does not exist; check the path"):
        load_label_map("nowhere/x.yaml")


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    return path


def test_class_count_without_names_and_bad_files_are_one_line_errors(tmp_path):
    m = load_label_map(write(tmp_path, "3: 0\n5: 4\n6: 255\n"))
    assert m.num_classes == 5 and m.names is None
    for text, message in [("300: 1\n", "dataset id 300 .* must be a whole number 0-255"),
                          ("1: -1\n", "training id -1 .* 0-255"),
                          ("names: [a]\n1: 0\n2: 1\n", "maps to training id 1 but names lists 1 classes"),
                          ("1: 255\n", "maps no id to a training class"),
                          ("- 1\n", "must be a mapping"),
                          ("names: a\n1: 0\n", "names must be a non-empty list")]:
        with pytest.raises(DataError, match=message):
            load_label_map(write(tmp_path, text))
    with pytest.raises(DataError, match="label map .*missing.yaml does not exist; check the path"):
        load_label_map(tmp_path / "missing.yaml")


def test_training_and_evaluating_through_a_label_map(tmp_path, demo_data, capsys):
    """The demo's 6 classes folded into 3 named ones (ring and cross become void): the model has 3 classes."""
    path = write(tmp_path, "names: [background, round, angular]\n0: 0\n1: 1\n2: 2\n3: 2\n")
    ds = SegmentationDataset(find_pairs(demo_data, "train"), label_map=load_label_map(path))
    assert ds.num_classes == 3 and ds.class_names == ["background", "round", "angular"]
    assert set(np.unique(ds.load(0)[1])) <= {0, 1, 2, 255}
    result = train(TrainConfig(model="alexnet-fcn32s", backbone_kwargs={"fc_channels": 32}, input_size=64,
                               batch_size=8, scale=(1.0, 1.0), progress=False, device="cpu", val_split=None, epochs=1,
                               data=str(demo_data), out_dir=str(tmp_path / "run"), label_map=str(path)),
                   log=lambda _: None)
    assert result.model.num_classes == 3
    assert result.model.recipe.class_names == ("background", "round", "angular")
    # evaluation reads the dataset's own ids through the same map
    args = ["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(demo_data), "--device", "cpu",
            "--json", str(tmp_path / "eval.json")]
    assert main(args) == 2 and "pass the --label-map a model was trained with" in capsys.readouterr().err
    assert main([*args, "--label-map", str(path)]) == 0 and "angular" in capsys.readouterr().out
