"""segzoo.data.weak: image-labelled images found, resolved to training ids and counted; masks hidden by seed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segzoo.cli import main
from segzoo.core.errors import DataError, SegzooError
from segzoo.data import SegmentationDataset, collate, find_pairs, read_mask
from segzoo.data.demo import CLASSES, LABELS_FILE
from segzoo.data.label_map import LabelMap
from segzoo.data.weak import (
    ImageLabelDataset,
    MixedDataset,
    WeakItem,
    count_kinds,
    folder_items,
    hide_masks,
    labels_vector,
    listed_items,
    mask_classes,
    select_pixel_subset,
)


@pytest.fixture
def mixed_voc(tmp_path, demo_data) -> Path:
    """The demo with the masks of train_00001 and train_00002 removed and image_labels.txt naming their classes
    (one by name, one by id, one unknown name)."""
    root = tmp_path / "voc"
    shutil.copytree(demo_data, root)
    (root / "SegmentationClass" / "train_00001.png").unlink()
    (root / "SegmentationClass" / "train_00002.png").unlink()
    (root / LABELS_FILE).write_text("# stem classes\ntrain_00001 disc Square\ntrain_00002 3 unicorn\n"
                                    "train_00003 ring\n")
    return root


def test_the_demo_writes_every_images_classes_as_its_mask_shows_them(demo_data):
    lines = dict((ln.split()[0], ln.split()[1:]) for ln in (demo_data / LABELS_FILE).read_text().splitlines())
    assert len(lines) == 8 + 4
    mask = read_mask(demo_data / "SegmentationClass" / "train_00005.png")
    assert lines["train_00005"] == [CLASSES[c] for c in np.unique(mask) if c != 255]


def test_images_without_masks_but_with_image_labels_are_found_resolved_and_counted(mixed_voc):
    pairs = find_pairs(mixed_voc, "train")
    assert len(pairs.pairs) == 6 and [p.stem for p in pairs.weak] == ["train_00001", "train_00002"]
    items, unknown = listed_items(pairs, list(CLASSES))
    assert [i.classes for i in items] == [(1, 2), (3,)] and unknown == ["unicorn"]
    kinds = count_kinds(pairs, list(CLASSES))
    assert (kinds["pixel"], kinds["listed"], kinds["folder"]) == (6, 2, 0)
    assert kinds["unknown"] == {str(mixed_voc / LABELS_FILE): ["unicorn"]}
    # without the labels file the same images are missing masks: an error, as before
    (mixed_voc / LABELS_FILE).unlink()
    with pytest.raises(DataError, match="train_00001.jpg has no mask.*image_labels.txt"):
        find_pairs(mixed_voc, "train")


def test_a_csv_labels_file_and_a_stem_listed_twice(tmp_path, demo_data):
    root = tmp_path / "voc"
    shutil.copytree(demo_data, root)
    (root / LABELS_FILE).unlink()
    (root / "SegmentationClass" / "train_00000.png").unlink()
    (root / "image_labels.csv").write_text("train_00000,cross,disc\n")
    pairs = find_pairs(root, "train")
    assert listed_items(pairs, list(CLASSES))[0] == [WeakItem(pairs.weak[0], (1, 5))]
    (root / "image_labels.csv").write_text("train_00000,cross\ntrain_00000,disc\n")
    with pytest.raises(DataError, match="listed twice"):
        find_pairs(root, "train")


def test_image_folder_names_map_by_name_or_through_the_label_map(tmp_path, demo_data):
    weak = tmp_path / "cls"
    for folder, stem in (("Disc", "train_00000"), ("7", "train_00001"), ("zebra", "train_00002")):
        (weak / folder).mkdir(parents=True)
        shutil.copy(demo_data / "JPEGImages" / f"{stem}.jpg", weak / folder / "a.jpg")
    items, unknown = folder_items(weak, list(CLASSES))
    assert [i.classes for i in items] == [(1,)] and unknown == ["7", "zebra"]  # id 7: no 8th class
    mapped = LabelMap({7: 4}, 6, tuple(CLASSES))
    items, unknown = folder_items(weak, list(CLASSES), mapped)
    assert sorted(i.classes for i in items) == [(1,), (4,)] and unknown == ["zebra"]
    kinds = count_kinds(find_pairs(demo_data, "train"), list(CLASSES), weak_data=weak)
    assert kinds["folder"] == 1 and kinds["unknown"] == {str(weak): ["7", "zebra"]}
    with pytest.raises(DataError, match="ImageFolder"):
        folder_items(tmp_path / "nothing", list(CLASSES))


def test_data_check_reports_both_kinds_and_the_names_that_map_to_nothing(mixed_voc, capsys):
    assert main(["data", "check", str(mixed_voc)]) == 2
    out, err = capsys.readouterr()
    assert "unicorn" in out and "6 with masks, 2 image-labelled" in out
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_sample_carries_its_image_labels_and_kind_and_collate_stacks_them(mixed_voc):
    pairs = find_pairs(mixed_voc, "train")
    pixel = SegmentationDataset(pairs, 6)
    items, _ = listed_items(pairs, list(CLASSES))
    mixed = MixedDataset(pixel, ImageLabelDataset(items, 6))
    assert len(mixed) == 8
    first, weak = mixed[(0, 0)], mixed[(0, 6)]
    assert first["has_mask"] and first["image_labels"].tolist() == labels_vector(
        mask_classes(pixel.load(0)[1], 6), 6).tolist()
    assert not weak["has_mask"] and weak["index"] == 6 and weak["image_labels"].tolist() == [1, 1, 1, 0, 0, 0]
    assert (weak["mask"] == 255).all() and weak["image"].shape[1:] == weak["mask"].shape
    batch = collate([first, weak])
    assert batch["has_mask"].tolist() == [True, False] and batch["image_labels"].shape == (2, 6)
    assert batch["image_labels"][:, 0].tolist() == [1.0, 1.0]  # background always present


def test_hidden_masks_keep_their_classes_and_the_subset_is_a_function_of_the_seed(demo_data):
    pairs = find_pairs(demo_data, "train")
    kept, hidden = hide_masks(pairs, 0.25, seed=3, num_classes=6)
    assert len(kept.pairs) == 2 and len(hidden) == 6
    stems = {p[0].stem for p in kept.pairs}
    assert stems.isdisjoint(i.image.stem for i in hidden)
    for item in hidden:
        mask = read_mask(demo_data / "SegmentationClass" / f"{item.image.stem}.png")
        assert item.classes == tuple(int(c) for c in np.unique(mask) if c != 255)
    # the same images for the same seed, others for another; smaller fractions keep a subset of larger ones
    assert select_pixel_subset(40, 0.25, 3) == select_pixel_subset(40, 0.25, 3)
    assert select_pixel_subset(40, 0.25, 3) != select_pixel_subset(40, 0.25, 4)
    assert set(select_pixel_subset(40, 0.1, 3)) <= set(select_pixel_subset(40, 0.25, 3))
    assert hide_masks(pairs, 1.0, 3, 6) == (pairs, [])
    with pytest.raises(SegzooError, match="pixel-fraction"):
        select_pixel_subset(10, 0.0, 0)


def test_labels_vector_marks_background_present_always():
    assert labels_vector((), 3).tolist() == [1.0, 0.0, 0.0]
    assert labels_vector(np.array([2, 9]), 3).tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(labels_vector((1,), 2), torch.ones(2))
