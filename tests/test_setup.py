"""segzoo.train.setup: what a run trains on, found and checked before any model is built."""

from __future__ import annotations

import pytest

from segzoo.core.errors import SegzooError
from segzoo.train import TrainConfig
from segzoo.train.setup import check_class_weights, default_run_folder, find_splits


def test_default_run_folder_numbers_past_existing_runs(tmp_path):
    assert default_run_folder("m", tmp_path) == tmp_path / "m"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "last.pt").write_bytes(b"x")
    assert default_run_folder("m", tmp_path) == tmp_path / "m-2"


def test_class_weights_one_per_class_finite_and_not_negative():
    check_class_weights([1.0, 0.0], ["a", "b"])
    with pytest.raises(SegzooError, match="has 1 values but the dataset has 2 classes"):
        check_class_weights([1.0], ["a", "b"])
    with pytest.raises(SegzooError, match="finite and >= 0"):
        check_class_weights([1.0, -1.0], ["a", "b"])


def test_find_splits_reads_classes_from_the_dataset(demo_data):
    splits = find_splits(TrainConfig(data=str(demo_data)), demo_data)
    assert set(splits.pairs) == {"train", "val"} and splits.num_classes == len(splits.class_names) == 6
    assert find_splits(TrainConfig(data=str(demo_data), val_split=None), demo_data).pairs.keys() == {"train"}


def test_pixel_fraction_keeps_the_same_images_for_every_variant_of_a_seed(demo_data):
    def kept(**settings):
        splits = find_splits(TrainConfig(model="x", data=str(demo_data), pixel_fraction=0.5, **settings), demo_data)
        return [p[0].stem for p in splits.pairs["train"].pairs], splits

    stems, plain = kept(seed=1)
    assert len(stems) == 4 and plain.hidden == 4 and plain.weak == []  # no image-level loss: hidden ones unused
    for other in ({"seed": 1, "weak_weight": 1.0}, {"seed": 1, "weak_weight": 0.5, "weak_pool": "lse", "epochs": 3}):
        again, splits = kept(**other)
        assert again == stems
        assert sorted(i.image.stem for i in splits.weak) == sorted(
            p.stem for p in (demo_data / "JPEGImages").glob("train_*") if p.stem not in stems)
    assert kept(seed=2)[0] != stems
    assert len(find_splits(TrainConfig(model="x"), demo_data).pairs["train"].pairs) == 8
