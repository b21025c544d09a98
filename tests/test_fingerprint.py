"""A dataset's fingerprint: names, sizes and contents; times only to know what to hash again."""

from __future__ import annotations

import os

import pytest

from segzoo.core.errors import DataError
from segzoo.data import fingerprint as fp


def data(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "images" / "x.png").write_bytes(b"pixels")
    (root / "class_names.txt").write_text("bg\nfg\n")
    return root


def test_the_digest_follows_content_not_times_and_leaves_hidden_and_own_files_out(tmp_path):
    root = data(tmp_path)
    first = fp.fingerprint(root)
    assert first["count"] == 2 and first["bytes"] == 6 + 6 and set(first["files"]) == {"images/x.png",
                                                                                           "class_names.txt"}
    assert first["files"]["images/x.png"][2] == fp.file_digest(root / "images" / "x.png")
    os.utime(root / "images" / "x.png", ns=(1, 1))  # touched: same bytes, same digest
    (root / ".cache").write_text("x")
    (root / "segzoo_stats.json").write_text("{}")  # what segzoo data stats writes into the data
    assert fp.fingerprint(root)["digest"] == first["digest"]
    (root / "images" / "x.png").write_bytes(b"pixelz")  # same size, new bytes
    now = fp.fingerprint(root)
    assert now["digest"] != first["digest"] and fp.differences(first, now) == ["changed images/x.png"]
    (root / "images" / "y.png").write_bytes(b"")
    (root / "class_names.txt").unlink()
    assert fp.differences(now, fp.fingerprint(root)) == ["removed class_names.txt", "added images/y.png"]


def test_unchanged_files_are_not_hashed_again_and_an_excluded_folder_is_not_data(tmp_path, monkeypatch):
    root = data(tmp_path)
    first = fp.fingerprint(root)
    hashed = []
    monkeypatch.setattr(fp, "file_digest", lambda path: hashed.append(path) or "sha256:x")
    (root / "study").mkdir()
    (root / "study" / "result.json").write_text("{}")
    again = fp.fingerprint(root, first, exclude=root / "study")
    assert hashed == [] and again["digest"] == first["digest"]
    with pytest.raises(DataError, match="does not exist"):
        fp.fingerprint(tmp_path / "none")
