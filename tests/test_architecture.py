"""The layout's rules, checked on the source: the rooms import only rooms above them (no cycle, not even
through imports inside functions), plugins use only what a third party can, and no room below the CLI
names a concrete backbone or head."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "segzoo"

# room -> the rooms it may import (besides itself); a module directly in segzoo/ is its own room
MAY_IMPORT = {
    "_version": set(),  # the version string alone (pyproject reads it without importing segzoo)
    "core": set(),
    "zoo": {"core"},
    "io": {"core"},
    "api": {"zoo", "io", "core"},
    "data": {"core"},
    "train": {"api", "data", "io", "core", "zoo"},
    "infer": {"api", "data", "io", "core", "train"},
    "studies": {"train", "infer", "api", "data", "io", "core", "zoo"},
    "cli": {"studies", "train", "infer", "api", "data", "io", "core", "zoo", "__init__", "_version"},
    "__init__": {"api", "core", "io", "zoo", "_version"},
    "__main__": {"cli"},
}
CONCRETE = re.compile(r"vgg|alexnet|fcn\d+s|torchfcn|score_fr|upscore", re.IGNORECASE)


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def imports(path: Path, name: str) -> set[str]:
    """Every segzoo module ``path`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "segzoo"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "segzoo":
                subs = {f"{target}.{a.name}" for a in node.names} & set(known)
                found |= subs if subs else {target}  # `from . import runtime` imports the module, not the package
    return {t for t in found if t in known}


def room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports) as a path that ends where it began, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n, [n]))), None)


def test_find_cycle_finds_one_and_only_one_that_is_there():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_among_segzoo_modules():
    """The package root only re-exports, so it is left out; every other edge counts, in-function imports too."""
    graph = {name: imports(path, name) - {name, "segzoo"} for name, path in modules().items() if name != "segzoo"}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_room_imports_only_rooms_above_it(name):
    own = room(name)
    allowed = MAY_IMPORT[own] | {own}
    wrong = sorted(t for t in imports(modules()[name], name) if t != "segzoo" and room(t) not in allowed)
    assert not wrong, f"{name} (room {own}) imports {wrong}; {own} may import {sorted(MAY_IMPORT[own])}"


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_plugins_use_only_what_a_third_party_plugin_can(path):
    """The top-level segzoo names and the contracts in segzoo.core, never the registry, trainer or CLI."""
    wrong = sorted(t for t in imports(path, f"segzoo_plugins.{path.stem}")
                   if t != "segzoo" and room(t) not in ("core",) and t.split(".")[0] == "segzoo")
    assert not wrong, f"plugin {path.name} imports {wrong}"


def code_names(path: Path) -> list[tuple[int, str]]:
    """Identifiers and string literals of a module, docstrings left out (comments are not in the AST)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append((node.lineno, node.name))
    return out


@pytest.mark.parametrize("name", sorted(n for n in modules() if room(n) != "cli"))
def test_no_room_below_the_cli_names_a_concrete_backbone_or_head(name):
    found = [f"line {line}: {text[:60]!r}" for line, text in code_names(modules()[name]) if CONCRETE.search(text)]
    assert not found, f"{name} names concrete parts (they belong to plugins): {found}"


def test_every_package_is_installed_by_pyproject():
    """A non-editable install takes only the packages pyproject.toml lists: a new folder must be listed."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
