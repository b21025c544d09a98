"""Model checkpoints: weights plus recipe, written atomically, read without unpickling code."""

import os
import stat

import pytest
import torch

import segzoo
from segzoo.core.errors import CheckpointError
from segzoo.core.files import atomic_write, atomic_write_text
from segzoo.io.checkpoint import atomic_save, safe_load, save_model


def small(name="alexnet-fcn8s", **kw):
    return segzoo.create_model(name, num_classes=3, backbone_kwargs={"fc_channels": 32}, **kw)


def test_save_and_load_model_rebuild_from_the_file_alone(tmp_path):
    model = small(head_kwargs={"learnable_upsampling": False}).eval()
    path = segzoo.save_model(model, tmp_path / "m.pt")
    again = segzoo.load_model(path).eval()
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again.recipe.head_kwargs == {"learnable_upsampling": False}
    assert not again.head.upscore.deconv.weight.requires_grad


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.zeros(2)}, target)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        atomic_save({"a": torch.ones(2)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # old file intact, no temp left behind
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(2))


def test_load_model_explains_a_plain_state_dict(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(small().state_dict(), path)
    with pytest.raises(segzoo.CheckpointError, match="not a segzoo model checkpoint.*load_state_dict"):
        segzoo.load_model(path)


# -- writes that honour the umask, never clobber when told not to, and leave no temporary file ---------------
@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_asks_for(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        text = atomic_write_text("{}", tmp_path / "settings.json")
        model = atomic_save({"a": torch.zeros(1)}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(text.stat().st_mode) == mode and stat.S_IMODE(model.stat().st_mode) == mode


def test_overwrite_false_leaves_an_existing_file_alone(tmp_path):
    target = tmp_path / "mine.pt"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        atomic_save({"a": torch.zeros(1)}, target, overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write_text("x", target, overwrite=False)
    assert target.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["mine.pt"]
    atomic_write_text("new", tmp_path / "fresh.txt", overwrite=False)
    assert (tmp_path / "fresh.txt").read_text() == "new"


def test_a_write_stopped_by_a_signal_leaves_no_temporary_file(tmp_path):
    """KeyboardInterrupt is what SIGINT (and, in the CLI, SIGTERM) raises: the temporary file goes too."""

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.json", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_should_be_is_not_a_directory_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        atomic_write_text("{}", tmp_path / "file" / "sub" / "m.json")
    assert info.value.filename == str(tmp_path / "file")


# -- reads: every broken file is one CheckpointError naming it ------------------------------------------------
def test_safe_load_of_empty_cut_junk_or_special_files_is_a_checkpoint_error(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(1000)}, good)
    files = {"empty.pt": b"", "cut.pt": good.read_bytes()[:300], "junk.pt": b"not a checkpoint"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.pt").mkdir()
    expect = {"empty.pt": "is empty", "cut.pt": "corrupt", "junk.pt": "not a pickle", "folder.pt": "not a regular file"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.pt")  # torch.load would block on it forever
        expect["fifo.pt"] = "not a regular file"
    for name, text in expect.items():
        with pytest.raises(CheckpointError, match=text) as info:
            safe_load(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_tampered_recipes_are_checkpoint_errors(tmp_path):
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs={"fc_channels": 8})
    good = tmp_path / "good.pt"
    save_model(model, good)
    ckpt = torch.load(good, weights_only=True)
    norm = ckpt["recipe"]["normalization"]
    cases = {"recipe": "a string", "class_names": 5, "std": {**norm, "std": [0.2, 0.0, 0.2]},
             "nan mean": {**norm, "mean": [float("nan"), 0, 0]}, "state_dict": "weights"}
    for what, value in cases.items():
        bad = dict(ckpt)
        if what == "recipe" or what == "state_dict":
            bad[what] = value
        elif what == "class_names":
            bad["recipe"] = {**ckpt["recipe"], "class_names": value}
        else:
            bad["recipe"] = {**ckpt["recipe"], "normalization": value}
        path = tmp_path / "bad.pt"
        torch.save(bad, path)
        with pytest.raises(CheckpointError):
            segzoo.load_model(path)


# --- hostile archives: nothing in them is ever unpickled (issue 21, item 1) -----------------------------------

class _Payload:
    """Unpickling this creates the marker file: the test's proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_pt2(tmp_path):
    """A real torch.export archive whose weight is a pickle that would create ``marker`` if unpickled."""
    import json
    import pickle
    import zipfile

    marker = tmp_path / "PWNED"
    program = torch.export.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 4, 4),))
    good = tmp_path / "good.pt2"
    torch.export.save(program, good, extra_files={"segzoo.json": json.dumps({"segzoo.num_classes": "2"})})
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                cfg["config"]["weight"]["use_pickle"] = True
                data = json.dumps(cfg).encode()
            elif info.filename.endswith("weights/weight_0"):
                data = pickle.dumps(_Payload(marker))
            dst.writestr(info, data)
    return good, bad, marker


def test_a_hostile_pt2_never_runs_its_pickle_on_any_loading_path(tmp_path):
    from segzoo.infer.export import read_metadata
    from segzoo.io.checkpoint import load_exported_program

    good, bad, marker = _hostile_pt2(tmp_path)
    assert load_exported_program(good).module()(torch.zeros(1, 3, 4, 4)).shape == (1, 2, 4, 4)
    before = bad.read_bytes()
    with pytest.raises(CheckpointError, match="pickled Python objects|cannot load"):
        load_exported_program(bad)
    assert read_metadata(bad) == {"num_classes": 2}  # plain zip data: nothing unpickled
    with pytest.raises(CheckpointError, match="cannot read"):
        safe_load(bad)
    assert not marker.exists()
    assert bad.read_bytes() == before
    assert torch.load is not None and torch.load.__module__.startswith("torch")  # the guard put torch back


def test_safe_load_refuses_a_plain_pickle_payload(tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError):
        safe_load(path)
    assert not marker.exists()


def test_archive_readers_refuse_a_fifo_without_blocking(tmp_path):
    from segzoo.infer.export import read_metadata
    from segzoo.io.checkpoint import load_exported_program

    fifo = tmp_path / "m.pt2"
    os.mkfifo(fifo)
    for load in (load_exported_program, read_metadata, safe_load):
        with pytest.raises(CheckpointError, match="not a regular file|does not exist"):
            load(fifo)


# --- a full disk is one line naming the disk, and leaves no temporary file (issue 21, item 6) ---------------

def _enospc_after(limit):
    """An ``open`` whose files raise ENOSPC once ``limit`` bytes were written, as a full disk does."""
    import errno
    import io

    class Full(io.BufferedWriter):
        written = 0

        def write(self, data):
            Full.written += len(memoryview(data))
            if Full.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    return Full


def test_torch_save_onto_a_full_disk_is_one_line_naming_the_disk(tmp_path, monkeypatch):
    import io

    from segzoo.core import files

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _enospc_after(1000)(io.FileIO(fd, "w")))
    with pytest.raises(files.DiskFullError, match=r"cannot write .*m\.pt: the disk mounted at /.* is full .*free "
                                                  "space there") as info:
        atomic_save({"w": torch.zeros(10_000)}, tmp_path / "m.pt")
    assert "unexpected pos" not in str(info.value)
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_a_real_full_tmpfs_gives_the_same_line(small_disk):
    from segzoo.core.files import DiskFullError

    with pytest.raises(DiskFullError, match=f"the disk mounted at {small_disk} is full"):
        atomic_save({"w": torch.zeros(200_000)}, small_disk / "m.pt")
    assert os.listdir(small_disk) == []
