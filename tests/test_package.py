"""The package as a user gets it: the wheel built from this checkout, installed non-editable into a fresh virtual
environment, and run from outside the checkout (``segzoo list``, a tiny ``segzoo build``).

Installing torch again would take minutes and needs the network, so the fresh environment sees the installed
dependencies through a view: a folder of links to every entry of this environment's site-packages except segzoo's
own (the editable install and its metadata), named by one ``.pth`` file. segzoo itself, its metadata and entry
points come from the wheel alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import pytest

import segzoo

ROOT = Path(__file__).resolve().parents[1]
# what the wheel is built from: the pyproject names the rest (packages, package data, license files)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "registry.yaml", "segzoo", "plugins")


def _is_segzoo_or_editable(entry: Path) -> bool:
    """segzoo's own entries and anything installed editable (its import hook lives in a .pth the view drops)."""
    name = entry.name.lower()
    if name.startswith(("segzoo", "__editable__")) or name.endswith(".pth"):
        return True
    direct = entry / "direct_url.json"
    if name.endswith(".dist-info") and direct.is_file():
        try:
            return bool(json.loads(direct.read_text()).get("dir_info", {}).get("editable"))
        except ValueError:
            return False
    return False


def _dependency_view(folder: Path) -> Path:
    """A folder of links to this environment's installed packages, segzoo and editable installs left out."""
    folder.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not _is_segzoo_or_editable(entry) and entry.name != "__pycache__":
            (folder / entry.name).symlink_to(entry)
    return folder


def _build_wheel(tmp: Path) -> Path:
    try:
        import setuptools  # noqa: F401 - the build backend, used without isolation (no network here)
    except ImportError:
        pytest.skip("setuptools (the build backend) is not installed, so no wheel can be built offline")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                        "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("segzoo-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    assert wheel.name.startswith(f"segzoo-{segzoo.__version__}-")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_segzoo_test_dependencies.pth").write_text(f"{_dependency_view(tmp_path / 'view')}\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                        "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(SEGZOO_OFFLINE="1", OMP_NUM_THREADS="1")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=outside, env=env, timeout=300)

    # what the wheel holds, seen from the installed package without importing it (torch is slow to import):
    # where segzoo comes from, its entry points (once each), the label maps, py.typed and the license
    probe = run(str(python), "-c", """if True:
        import json, importlib.metadata as md, importlib.util
        dist = md.distribution("segzoo")
        files = [str(f) for f in dist.files]
        print(json.dumps({"file": importlib.util.find_spec("segzoo").origin, "version": dist.version,
                          "eps": [ep.name for ep in md.entry_points(group="segzoo")], "files": files,
                          "license": dist.metadata["License-Expression"]}))""")
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert Path(seen["file"]).resolve().is_relative_to(site.resolve()), seen["file"]  # the wheel, not the checkout
    assert not Path(seen["file"]).resolve().is_relative_to(ROOT)
    assert seen["version"] == segzoo.__version__
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["segzoo"]
    assert sorted(seen["eps"]) == sorted(declared)  # each built-in plugin found once, from the wheel
    shipped = [f"segzoo/data/label_maps/{m}.yaml" for m in ("cityscapes", "ade20k")]
    for needed in [*shipped, "segzoo/py.typed", "segzoo_plugins/registry.yaml", "segzoo_plugins/py.typed"]:
        assert needed in seen["files"], needed
    assert seen["license"] == "MIT" and any(f.endswith("licenses/LICENSE") for f in seen["files"])

    listed = run(str(env_dir / "bin" / "segzoo"), "list")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "vgg16-fcn8s" in listed.stdout and f"segzoo {segzoo.__version__}" in listed.stdout
    assert "failed" not in listed.stdout
    built = run(str(env_dir / "bin" / "segzoo"), "build", "alexnet-fcn32s", "--num-classes", "3", "--input",
                "3x64x64", "--backbone-opt", "fc_channels=8", "--out", "m.pt", "--json", "-")
    assert built.returncode == 0, built.stderr[-3000:]
    summary = json.loads(built.stdout)
    assert summary["output_shape"] == [1, 3, 64, 64] and (outside / "m.pt").is_file()


def test_the_sdist_ships_what_its_tests_read(tmp_path):
    """The sdist carries the suite, so it carries what the suite reads: docs, the example plugin, bench, the
    registry and the license (the wheel needs none of them but the registry)."""
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked sdist): the files to pack cannot be listed")
    src = tmp_path / "src"
    for name in files.splitlines():
        if (ROOT / name).exists():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name, follow_symlinks=False)
    out = tmp_path / "sdist"
    build = f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"
    r = subprocess.run([sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (archive,) = out.glob("segzoo-*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    read_by_tests = ["docs/plugins.md", "docs/metrics.md", "docs/paper.md", "bench/yardstick.py", "registry.yaml",
                     "examples/segzoo-plugin-example/pyproject.toml", "tests/conftest.py", "tests/test_cli.py",
                     "LICENSE", "README.md", "segzoo/data/label_maps/cityscapes.yaml", "segzoo/py.typed"]
    missing = [f for f in read_by_tests if f not in shipped]
    assert not missing, missing


def _imports(top_level_only: bool) -> dict[str, set[str]]:
    """Third-party top-level modules imported by segzoo and the built-in plugins -> the files importing them."""
    import ast

    found: dict[str, set[str]] = {}
    for path in [*(ROOT / "segzoo").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        for node in nodes:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("segzoo", "segzoo_plugins"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_dependency_is_declared_and_optional_ones_are_imported_lazily():
    """Each third-party import is a declared dependency (its distribution, by importlib.metadata); one declared only
    in an extra is never imported at a module's top level, so segzoo imports without it."""
    import re
    from importlib.metadata import packages_distributions

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    required = names(project["dependencies"])
    extras = {k: names(v) for k, v in project["optional-dependencies"].items() if k != "dev"}
    optional = set().union(*extras.values())
    dists = packages_distributions()
    undeclared, eager = [], []
    top_level = _imports(top_level_only=True)
    for module, files in sorted(_imports(top_level_only=False).items()):
        dist = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not dist & (required | optional):
            undeclared.append(f"{module} ({', '.join(sorted(files))})")
        elif not dist & required and module in top_level:
            eager.append(f"{module} ({', '.join(sorted(top_level[module]))})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert not eager, f"optional dependencies imported at module level (import them inside the function): {eager}"
