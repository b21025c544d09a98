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


# --- models shared as pretrained folders and through the Hub (segzoo.io.hub) ---

NARROW = {"fc_channels": 16}


@pytest.fixture(scope="module")
def trained():
    """A small model whose every tensor differs from a fresh one's (its score layers are not zero)."""
    torch.manual_seed(1)
    model = segzoo.create_model("alexnet-fcn8s", num_classes=3, backbone_kwargs=NARROW).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_pretrained_writes_safetensors_a_config_and_a_model_card(tmp_path, trained):
    import json

    from safetensors.torch import load_file

    folder = tmp_path / "model"
    segzoo.save_pretrained(trained, folder, metrics={"mean_iu": 0.625, "pixel_acc": 0.9})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "segzoo" and config["recipe"]["name"] == "alexnet-fcn8s"
    assert config["recipe"]["backbone_kwargs"] == NARROW and config["num_classes"] == 3
    assert config["class_names"] == ["class_0", "class_1", "class_2"]
    assert config["normalization"] == trained.normalization and config["metrics"]["mean_iu"] == 0.625
    assert set(load_file(str(folder / "model.safetensors"))) == set(trained.state_dict())
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: segzoo\n") and "| mean_iu | 0.625 |" in card
    back = segzoo.from_pretrained(folder)
    assert same_weights(back, trained) and back.recipe.name == "alexnet-fcn8s"
    assert same_weights(segzoo.load_model(folder), trained)  # load_model takes the folder too


def test_save_pretrained_never_replaces_a_readme_unasked(tmp_path, trained):
    (tmp_path / "README.md").write_text("my project")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        segzoo.save_pretrained(trained, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    assert (tmp_path / "README.md").read_text() == "my project"
    segzoo.save_pretrained(trained, tmp_path, overwrite=True)
    assert "library_name: segzoo" in (tmp_path / "README.md").read_text()


def test_save_and_load_pretrained_at_a_url(trained):
    import uuid

    import fsspec

    url = f"memory://segzoo-pretrained-{uuid.uuid4().hex[:8]}/model"
    try:
        segzoo.save_pretrained(trained, url)
        assert same_weights(segzoo.load_model(url), trained)
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://").rsplit("/", 1)[0], recursive=True)


def plant_repo(caches, repo: str, folder) -> None:
    """A save_pretrained folder as huggingface_hub caches a downloaded repo: snapshots/<commit>/, refs/main."""
    import shutil

    root = caches / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hub_models_load_offline_from_a_planted_cache(caches, monkeypatch, tmp_path, trained):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SEGZOO_OFFLINE")
    with pytest.raises(CheckpointError) as err:
        segzoo.load_model("hf-hub:segzoo-test/alexnet-fcn8s-demo")
    message = str(err.value)
    assert "\n" not in message and "segzoo-test/alexnet-fcn8s-demo" in message and "HF_HUB_OFFLINE" in message
    assert str(caches / "hf" / "hub") in message
    segzoo.save_pretrained(trained, tmp_path / "saved")
    plant_repo(caches, "segzoo-test/alexnet-fcn8s-demo", tmp_path / "saved")
    assert same_weights(segzoo.load_model("hf-hub:segzoo-test/alexnet-fcn8s-demo"), trained)
    assert same_weights(segzoo.from_pretrained("segzoo-test/alexnet-fcn8s-demo"), trained)  # a bare repo id
    assert main(["build", "hf-hub:x", "--input", "3x64x64"]) == 2  # not a model name: one line


def test_a_hub_id_must_name_org_and_model():
    with pytest.raises(segzoo.SegzooError, match="hf-hub:ORG/NAME"):
        segzoo.load_model("hf-hub:just-a-name")


def test_a_folder_of_another_library_is_refused_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not written by segzoo.save_pretrained"):
        segzoo.load_model(tmp_path)


def test_push_to_hub_creates_the_repo_and_uploads_the_folder_in_one_commit(monkeypatch, trained):
    """huggingface_hub's API is replaced at its boundary (HfApi): what would be uploaded is asserted."""
    import json

    import huggingface_hub
    from safetensors.torch import load_file

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        from pathlib import Path

        files = {p.name: p for p in Path(folder_path).iterdir()}
        calls["upload"] = (repo_id, kw, sorted(files), json.loads(files["config.json"].read_text()),
                           files["README.md"].read_text(), load_file(str(files["model.safetensors"])))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert segzoo.push_to_hub(trained, "org/fcn8s-voc", metrics={"mean_iu": 0.5}, private=True) == "commit-info"
    assert calls["create"] == ("org/fcn8s-voc", {"repo_type": "model", "private": True, "exist_ok": True})
    repo, kw, names, config, card, state = calls["upload"]
    assert repo == "org/fcn8s-voc" and kw["repo_type"] == "model" and kw["commit_message"]
    assert names == ["README.md", "config.json", "model.safetensors"]
    assert config["recipe"]["name"] == "alexnet-fcn8s" and config["metrics"] == {"mean_iu": 0.5}
    assert 'segzoo.load_model("hf-hub:org/fcn8s-voc")' in card and "library_name: segzoo" in card
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items())


def test_a_missing_hub_package_is_one_line_naming_the_extra(monkeypatch, tmp_path, trained):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(segzoo.SegzooError, match=r"pip install 'segzoo\[hub\]'") as err:
        segzoo.save_pretrained(trained, tmp_path)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_https_checkpoints_come_from_the_torch_hub_cache_offline(caches, trained):
    folder = caches / "torch" / "hub" / "checkpoints"
    url = "https://example.com/models/fcn8s-demo-0123abcd.pt"
    with pytest.raises(CheckpointError, match=r"fcn8s-demo-0123abcd\.pt is not in .*downloads are off"):
        segzoo.load_model(url)
    folder.mkdir(parents=True)
    segzoo.save_model(trained, folder / "fcn8s-demo-0123abcd.pt")
    assert same_weights(segzoo.load_model(url), trained)


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "DEFAULT"])
def test_torchvision_weight_names_are_accepted_for_alexnet(caches, name):
    tv = small_torchvision_alexnet()
    folder = caches / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(tv.state_dict(), folder / "alexnet-owt-7be5be79.pth")
    model = segzoo.create_model("alexnet-fcn32s", backbone_weights=name, backbone_kwargs={"fc_channels": 32})
    assert torch.equal(model.backbone.fc7.weight[:, :, 0, 0], tv.classifier[4].weight)
    assert model.recipe.backbone_weights == name


def test_torchvision_weight_names_are_accepted_for_vgg16(caches):
    torch.manual_seed(0)
    tv = torchvision.models.vgg16()
    tv.classifier[0], tv.classifier[3] = nn.Linear(512 * 7 * 7, 16), nn.Linear(16, 16)
    tv.classifier[6] = nn.Linear(16, 1000)
    folder = caches / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(tv.state_dict(), folder / "vgg16-397923af.pth")  # the name VGG16_Weights.IMAGENET1K_V1 caches
    model = segzoo.create_model("vgg16-fcn32s", backbone_weights="DEFAULT", backbone_kwargs=NARROW)
    assert torch.equal(model.backbone.features[28].weight, tv.features[28].weight)
    assert torch.equal(model.backbone.fc6.weight, tv.classifier[0].weight.reshape(16, 512, 7, 7))


def test_the_papers_weights_publish_as_docs_hub_md_says(tmp_path, monkeypatch, capsys):
    """segzoo convert --from torchfcn, then push_to_hub: the card and config carry the paper's geometry and its
    BGR 0-255 normalization, and the planted Hub copy loads as the converted file does."""
    import json

    import huggingface_hub

    from segzoo.core.model import CAFFE_NORM
    from tests.torchfcn_reference import torchfcn_state

    torch.save(torchfcn_state("fcn32s", 3, 16, seed=0), tmp_path / "fcn32s_from_caffe.pth")
    assert main(["convert", "--from", "torchfcn", str(tmp_path / "fcn32s_from_caffe.pth"), "--model", "vgg16-fcn32s",
                 str(tmp_path / "fcn32s.pt")]) == 0
    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kw):
        import shutil

        shutil.copytree(folder_path, tmp_path / "uploaded")
        uploaded["repo"] = repo_id

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    converted = segzoo.load_model(tmp_path / "fcn32s.pt")
    segzoo.push_to_hub(converted, "org/vgg16-fcn32s-pascal")
    config = json.loads((tmp_path / "uploaded" / "config.json").read_text())
    assert uploaded["repo"] == "org/vgg16-fcn32s-pascal" and config["recipe"]["geometry"] == "caffe"
    assert config["normalization"] == CAFFE_NORM
    assert same_weights(segzoo.load_model(tmp_path / "uploaded"), converted)
