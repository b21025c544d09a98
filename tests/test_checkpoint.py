"""Model checkpoints: weights plus recipe, written atomically, read without unpickling code."""

import pytest
import torch

import segzoo
from segzoo.io.checkpoint import atomic_save


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
