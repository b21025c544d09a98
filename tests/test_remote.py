"""segzoo.io.remote: checkpoints, weights and exports at fsspec URLs (memory://, file://), one line for a URL that
cannot be used, and no URL ever turned into a local folder."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

import segzoo
from segzoo.cli import main
from segzoo.core.errors import CheckpointError, SegzooError
from segzoo.core.files import atomic_write_text, url_scheme
from segzoo.io import remote
from segzoo.io.remote import RemoteError, locate

NARROW = {"fc_channels": 16}


@pytest.fixture
def mem():
    """A fresh memory:// folder of this test's own, removed afterwards."""
    root = f"memory://segzoo-test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root.removeprefix("memory://")):
        fs.rm(root.removeprefix("memory://"), recursive=True)


@pytest.fixture(scope="module")
def small_model():
    return segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs=NARROW).eval()


def test_url_schemes_are_told_from_local_paths_and_windows_drives():
    assert url_scheme("s3://bucket/m.pt") == "s3" and url_scheme("HF://org/x") == "hf"
    assert url_scheme("runs/m.pt") is None and url_scheme("C://x") is None and url_scheme("C:\\x") is None
    assert url_scheme("hf-hub:org/name") is None  # a Hub id, not a URL


def test_a_memory_checkpoint_round_trips_through_save_and_load_model(mem, small_model):
    url = f"{mem}/runs/m.pt"
    assert segzoo.save_model(small_model, url) == url
    back = segzoo.load_model(url)
    assert back.recipe.name == "alexnet-fcn32s" and back.num_classes == 3
    for (k, a), b in zip(small_model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileExistsError):
        segzoo.save_model(small_model, url, overwrite=False)


def test_file_urls_are_local_files_written_atomically(tmp_path, small_model):
    url = f"file://{tmp_path}/m.pt"
    assert locate(url).local == tmp_path / "m.pt"
    segzoo.save_model(small_model, url)
    assert (tmp_path / "m.pt").is_file() and not (tmp_path / "file:").exists()
    assert segzoo.load_model(url).recipe.name == "alexnet-fcn32s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left


def test_init_from_and_backbone_weights_read_urls(mem, small_model):
    from segzoo.train.state import init_from_checkpoint

    url = f"{mem}/coarse.pt"
    segzoo.save_model(small_model, url)
    fine = segzoo.create_model("alexnet-fcn16s", num_classes=3, backbone_kwargs=NARROW)
    got = init_from_checkpoint(fine, url)
    assert got["copied"] and torch.equal(fine.backbone.fc6.weight, small_model.backbone.fc6.weight)
    # a backbone file at a URL: segzoo's own convolutionalized keys
    backbone = f"{mem}/backbone.pt"
    with fsspec.open(backbone, "wb") as f:
        torch.save(small_model.backbone.state_dict(), f)
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs=NARROW, backbone_weights=backbone)
    assert torch.equal(model.backbone.fc7.weight, small_model.backbone.fc7.weight)


def test_whole_model_weights_and_safetensors_at_urls(mem, small_model):
    from safetensors.torch import save

    url = f"{mem}/w.safetensors"
    with fsspec.open(url, "wb") as f:
        f.write(save({k: v.contiguous() for k, v in small_model.backbone.state_dict().items()}))
    assert set(segzoo.read_weights_file(url)) == set(small_model.backbone.state_dict())
    plain = f"{mem}/state.pt"
    with fsspec.open(plain, "wb") as f:
        torch.save(small_model.state_dict(), f)
    model = segzoo.create_model("alexnet-fcn32s", num_classes=3, backbone_kwargs=NARROW, weights=plain)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small_model.state_dict().values()))


def test_missing_empty_and_folder_urls_are_one_checkpoint_error(mem):
    with pytest.raises(CheckpointError, match=r"no such file: memory://.*nope\.pt; check the URL"):
        segzoo.load_model(f"{mem}/nope.pt")
    with fsspec.open(f"{mem}/empty.pt", "wb"):
        pass
    with pytest.raises(CheckpointError, match="empty"):
        segzoo.load_model(f"{mem}/empty.pt")
    with fsspec.open(f"{mem}/dir/x.pt", "wb") as f:
        f.write(b"x")
    with pytest.raises(CheckpointError, match="is a folder"):
        segzoo.read_state_dict(f"{mem}/dir")


def test_unknown_schemes_and_missing_packages_name_what_to_install(monkeypatch):
    with pytest.raises(RemoteError, match=r"fsspec knows no nosuch:// filesystem") as err:
        segzoo.load_model("nosuch://bucket/m.pt")
    assert "\n" not in str(err.value)
    # s3fs is not installed here (as on most machines): the message names it
    if "s3fs" not in sys.modules:
        with pytest.raises(RemoteError, match=r"pip install s3fs"):
            segzoo.load_model("s3://bucket/m.pt")
    monkeypatch.setitem(sys.modules, "fsspec", None)  # fsspec itself missing
    with pytest.raises(RemoteError, match=r"pip install 'segzoo\[remote\]' s3fs"):
        locate("s3://bucket/m.pt")
    with pytest.raises(RemoteError, match="read-only"):
        locate("https://example.com/m.pt", writing=True)


def test_filesystems_with_folders_get_a_temporary_name_then_a_move(mem, monkeypatch, small_model):
    """Where a put is not atomic (SFTP, SMB...), the file is put under a temporary name, then moved."""
    monkeypatch.setattr(remote, "OBJECT_STORES", frozenset())
    moves = []
    fs = fsspec.filesystem("memory")
    real_mv = type(fs).mv
    monkeypatch.setattr(type(fs), "mv", lambda self, a, b, **kw: (moves.append((a, b)), real_mv(self, a, b, **kw)))
    segzoo.save_model(small_model, f"{mem}/m.pt")
    assert len(moves) == 1 and moves[0][0].endswith(".tmp") and moves[0][1].endswith("/m.pt")
    assert [p.rpartition("/")[2] for p in fs.ls(mem.removeprefix("memory://"), detail=False)] == ["m.pt"]


def test_local_only_writers_refuse_urls_instead_of_making_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SegzooError, match="cannot be the URL s3://b/x.json"):
        atomic_write_text("{}", "s3://b/x.json")
    with pytest.raises(SegzooError, match="cannot be the URL s3:/b/eval.json"):  # what Path made of a URL
        atomic_write_text("{}", Path("s3://b/m.pt").with_name("eval.json"))
    from segzoo.train.config import TrainConfig

    with pytest.raises(SegzooError, match=r"--out \(the run folder.*cannot be the URL s3://b/run"):
        TrainConfig(out_dir="s3://b/run").check()
    for argv in (["predict", "--model", "m.pt", "--out", "s3://b/pred", "x.png"], ["data", "demo", "--out", "gs://b/d"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot be the URL" in err
    assert list(tmp_path.iterdir()) == []  # no s3: or gs: folder


def test_cli_build_and_convert_write_to_urls(mem, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"{mem}/built.pt"
    assert main(["build", "alexnet-fcn32s", "--num-classes", "3", "--backbone-opt", "fc_channels=16", "--input",
                 "3x64x64", "--out", url]) == 0
    assert f"saved {url} " in capsys.readouterr().out
    assert segzoo.load_model(url).num_classes == 3 and list(tmp_path.iterdir()) == []
    assert main(["build", "alexnet-fcn32s", "--backbone-opt", "fc_channels=16", "--input", "3x64x64",
                 "--out", url]) == 2
    assert "exists" in capsys.readouterr().err


def test_export_writes_a_checked_file_to_a_url(mem, small_model):
    from segzoo.infer.export import export_model

    url = f"{mem}/m.pt"
    report = export_model(small_model, "torchscript", url, check_sizes=((1, 97, 131),))
    assert report.path == url and len(report.diffs) == 1
    local = fsspec.filesystem("memory").cat_file(url.removeprefix("memory://"))
    assert local[:2] == b"PK"  # a zip archive, as torch.jit.save writes
    with pytest.raises(SegzooError, match="exists"):
        export_model(small_model, "torchscript", url)


def test_hf_urls_resolve_through_fsspec():
    """hf:// is huggingface_hub's filesystem: resolving one needs no network."""
    loc = locate("hf://org/name/model.safetensors")
    assert loc.local is None and type(loc.fs).__name__ == "HfFileSystem"


def test_eval_of_a_url_checkpoint_writes_its_json_here_not_under_a_folder_named_after_the_url(
        mem, demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"{mem}/m.pt"
    segzoo.save_model(segzoo.create_model("alexnet-fcn32s", num_classes=6, backbone_kwargs=NARROW), url)
    assert main(["eval", "--checkpoint", url, "--data", str(demo_data), "--split", "val", "--workers", "0"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["eval-val.json"]


def test_a_store_that_refuses_a_write_or_a_look_is_one_line(mem, monkeypatch, small_model):
    fs_type = type(fsspec.filesystem("memory"))

    def denied(self, *args, **kwargs):
        raise PermissionError("AccessDenied: no write permission on bucket")

    monkeypatch.setattr(fs_type, "put_file", denied)
    with pytest.raises(RemoteError, match=r"cannot write memory://.*/m\.pt \(PermissionError: AccessDenied.*"
                                          r"nothing was replaced") as err:
        segzoo.save_model(small_model, f"{mem}/m.pt")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(fs_type, "info", denied)
    with pytest.raises(RemoteError, match=r"cannot reach memory://.*AccessDenied"):
        remote.kind(locate(f"{mem}/m.pt"))


def test_convert_reads_and_writes_urls_and_records_the_url_it_came_from(mem, capsys):
    from segzoo.io.checkpoint import safe_load
    from tests.torchfcn_reference import torchfcn_state

    src, out = f"{mem}/fcn32s.pth", f"{mem}/converted/fcn32s.pt"
    with fsspec.open(src, "wb") as f:
        torch.save(torchfcn_state("fcn32s", 3, 16, seed=0), f)
    assert main(["convert", "--from", "torchfcn", src, "--model", "vgg16-fcn32s", out]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert safe_load(out)["converted_from"] == {"path": src, "layout": "torchfcn"}
    assert segzoo.load_model(out).recipe.geometry == "caffe"
