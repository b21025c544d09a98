"""Shared fixtures: the registry, cached backbones, and fake installed distributions for plugin tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import segzoo


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
