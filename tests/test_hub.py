"""Pretrained weights by name (``backbone_weights="imagenet"``): found in torch hub's and Hugging Face's caches,
loaded and convolutionalized; offline with an empty cache, one line naming the file and where. Nothing is
downloaded: random state dicts are planted where torchvision and timm would look."""

from __future__ import annotations

import urllib.error

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import segzoo
from segzoo.cli import main
from segzoo.core.errors import CheckpointError
from segzoo.io import hub


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch and Hugging Face caches of this test's own; downloads off unless a test turns them on."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SEGZOO_OFFLINE", "1")
    return tmp_path


def small_torchvision_alexnet() -> nn.Module:
    """torchvision's AlexNet with a 32-wide classifier: its layout, a fraction of the size."""
    torch.manual_seed(0)
    tv = torchvision.models.alexnet()
    tv.classifier[1], tv.classifier[4], tv.classifier[6] = nn.Linear(9216, 32), nn.Linear(32, 32), nn.Linear(32, 1000)
    return tv.eval()


def test_torchvision_imagenet_weights_come_from_the_torch_hub_cache(caches):
    tv = small_torchvision_alexnet()
    folder = caches / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(tv.state_dict(), folder / "alexnet-owt-7be5be79.pth")  # the name torchvision's weights API caches
    model = segzoo.create_model("alexnet-fcn32s", backbone_weights="imagenet", backbone_kwargs={"fc_channels": 32})
    assert torch.equal(model.backbone.features[0].weight, tv.features[0].weight)
    # fc6 is the classifier's first Linear as a 6x6 conv, fc7 its second as a 1x1 conv
    assert torch.equal(model.backbone.fc6.weight, tv.classifier[1].weight.reshape(32, 256, 6, 6))
    assert torch.equal(model.backbone.fc7.weight[:, :, 0, 0], tv.classifier[4].weight)
    assert model.recipe.backbone_weights == "imagenet"


def test_offline_with_an_empty_cache_names_the_file_and_where(caches, capsys):
    with pytest.raises(CheckpointError) as err:
        segzoo.create_model("vgg16-fcn32s", backbone_weights="imagenet", backbone_kwargs={"fc_channels": 32})
    message = str(err.value)
    assert "\n" not in message and "vgg16-397923af.pth" in message
    assert str(caches / "torch" / "hub" / "checkpoints") in message and "SEGZOO_OFFLINE" in message
    assert main(["build", "alexnet-fcn32s", "--backbone-weights", "imagenet", "--backbone-opt", "fc_channels=32"]) == 2
    printed = capsys.readouterr().err
    assert printed.count("\n") == 1 and "alexnet-owt-7be5be79.pth" in printed


def test_a_failed_download_is_one_line_too(caches, monkeypatch):
    monkeypatch.delenv("SEGZOO_OFFLINE")

    def no_network(url, dst, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(CheckpointError, match=r"could not download https://download\.pytorch\.org/models/alexnet-owt"
                                              r".*name resolution.*; place alexnet-owt-7be5be79\.pth"):
        hub.torch_hub_file(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url, "alexnet")


def plant_hf(caches, repo: str, filename: str, state: dict) -> None:
    """A file as huggingface_hub caches it: models--org--name/snapshots/<commit>/file, refs/main naming the commit."""
    folder = caches / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / filename))


def test_timm_pretrained_weights_come_from_the_hugging_face_cache(caches):
    variant = "mobilenetv3_small_050"
    repo = timm.models.get_pretrained_cfg(variant).hf_hub_id  # timm/mobilenetv3_small_050.lamb_in1k
    with pytest.raises(CheckpointError) as err:
        segzoo.create_model(f"timm-{variant}-fcn32s", backbone_weights="imagenet")
    assert repo in str(err.value) and str(caches / "hf" / "hub") in str(err.value) and "\n" not in str(err.value)
    torch.manual_seed(0)
    src = timm.create_model(variant, pretrained=False)
    plant_hf(caches, repo, "model.safetensors", src.state_dict())
    model = segzoo.create_model(f"timm-{variant}-fcn32s", backbone_weights="imagenet")
    assert torch.equal(model.backbone.body.conv_stem.weight, src.conv_stem.weight)
    assert torch.equal(model.backbone.body.blocks[-1][0].bn1.running_var, src.blocks[-1][0].bn1.running_var)
    # four-band input: timm widens the RGB file's first conv (R, G, B repeated, scaled by 3/4)
    wide = segzoo.create_model(f"timm-{variant}-fcn32s", backbone_weights="imagenet", backbone_kwargs={"in_chans": 4})
    assert torch.allclose(wide.backbone.body.conv_stem.weight[:, :3], src.conv_stem.weight * 3 / 4, atol=1e-6)
