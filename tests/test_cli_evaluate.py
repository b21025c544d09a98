"""segzoo eval: an exported model is refused by name (eval takes checkpoints), never called corrupt."""

from __future__ import annotations

import pytest
import torch

from segzoo.cli import main
from segzoo.cli.evaluate import exported_kind


def test_an_exported_model_is_refused_in_one_line_saying_eval_takes_checkpoints(tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")  # what an ONNX protobuf starts with; never read
    script = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Identity()).save(str(script))
    (tmp_path / "data").mkdir()
    for path, kind in ((onnx, "ONNX"), (script, "TorchScript")):
        assert main(["eval", "--checkpoint", str(path), "--data", str(tmp_path / "data")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "corrupt" not in err
        assert f"is an exported {kind} model; eval takes a checkpoint" in err and "predict --checkpoint" in err
    assert list(tmp_path.glob("eval-*.json")) == []


@pytest.mark.parametrize("name, content, kind", [("m.pt2", b"", "torch.export"), ("m.ONNX", b"", "ONNX"),
                                                 ("m.pt", b"\x80\x02", None), ("missing.pt", None, None)])
def test_exported_kind_by_suffix_or_archive(tmp_path, name, content, kind):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert exported_kind(str(tmp_path / name)) == kind
