"""The package's shape: the engine never imports Qt / napari, no import cycles, short modules, a cheap
top-level import whose public names all resolve."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import napari_unet_att

PACKAGE = "napari_unet_att"
SRC = Path(napari_unet_att.__file__).resolve().parent
MAX_LINES = 450
# Modules allowed over MAX_LINES, each with the reason (paths relative to the package folder). An entry for a
# module that is no longer long fails too, so this list stays true.
LONG_MODULES: dict[str, str] = {
    "model/networks.py": "copied whole into bioimage.io packages as the architecture source, so it must stay one file",
}
GUI_PACKAGES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(tree: ast.AST, module: str, top_level_only: bool) -> Iterator[tuple[str, ast.stmt]]:
    """Absolute names each import statement brings in (``from a import b`` gives ``a.b``, which may be an
    attribute rather than a module). ``top_level_only``: the statements run on import (module body, also
    inside ``if`` / ``try``, but not under ``if TYPE_CHECKING``), not those inside functions or classes."""
    package = module if _is_package(module) else module.rpartition(".")[0]

    def walk(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                yield base, node
                for alias in node.names:
                    yield f"{base}.{alias.name}", node
            elif top_level_only:
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    yield from walk(node.orelse)
                elif isinstance(node, (ast.If, ast.Try, ast.With)):
                    for field in ("body", "orelse", "finalbody", "handlers"):
                        for child in getattr(node, field, []):
                            yield from walk(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif not isinstance(node, (ast.Import, ast.ImportFrom)):
                yield from walk(ast.iter_child_nodes(node))

    yield from walk(tree.body if top_level_only else ast.iter_child_nodes(tree))


def _parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))


def test_only_the_napari_plugin_imports_qt_or_napari():
    offenders = []
    for module in MODULES:
        if module.startswith(f"{PACKAGE}._napari"):
            continue
        for name, node in _imports(_parse(module), module, top_level_only=False):
            if name.split(".")[0] in GUI_PACKAGES:
                offenders.append(f"{MODULES[module].relative_to(SRC)}:{node.lineno} imports {name.split('.')[0]}")
    offenders = sorted(set(offenders))
    assert not offenders, "the engine must work without Qt / napari:\n" + "\n".join(offenders)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules its module-level imports run: the module imported and the packages
    above it (their ``__init__`` runs first), except the importer's own packages (already running)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        targets = set()
        for name, _ in _imports(_parse(module), module, top_level_only=True):
            parts = name.split(".")
            for i in range(2, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in MODULES and prefix not in own:
                    targets.add(prefix)
        graph[module] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_imports_have_no_cycles():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def _exported_names(package: str) -> set[str]:
    """The names a package lists in ``__all__``: the top level's as imported (it builds the list from its lazy
    table, and imports cheaply), a subpackage's read from its ``__init__.py`` (importing it would import torch)."""
    if package == PACKAGE:
        return set(napari_unet_att.__all__)
    for node in _parse(package).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return set()


def test_no_package_exports_a_name_that_is_also_its_submodule():
    """``pkg.name`` must mean one thing: with a submodule ``pkg/name.py`` and a function ``name`` re-exported
    by ``pkg/__init__.py``, it is the module or the function depending on what was imported first."""
    clashes = sorted(f"{package}.{name}" for package in MODULES if _is_package(package)
                     for name in _exported_names(package) if f"{package}.{name}" in MODULES)
    assert not clashes, f"names that are both a submodule and an exported object (rename the module): {clashes}"


def test_modules_are_short():
    long = {
        str(path.relative_to(SRC)): n
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    unexplained = {p: n for p, n in long.items() if p not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines (split them, or add a reason to LONG_MODULES): " \
        f"{unexplained}"
    stale = sorted(set(LONG_MODULES) - set(long))
    assert not stale, f"LONG_MODULES lists modules that are no longer long (remove them): {stale}"


@pytest.mark.parametrize("name", napari_unet_att.__all__)
def test_every_public_name_resolves(name):
    assert getattr(napari_unet_att, name) is not None
    assert name in dir(napari_unet_att)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        napari_unet_att.no_such_name  # noqa: B018


def test_importing_the_package_is_cheap():
    heavy = ("torch", "numpy", "scipy", "skimage", "tifffile", "zarr", "dask", "qtpy", "napari")
    code = f"import sys, {PACKAGE}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC.parent), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == [], f"import {PACKAGE} imports {out.stdout.split()}"


def test_the_readme_uses_only_public_names():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    used = set(re.findall(r"\bnua\.(\w+)", section))
    assert used, "the README's Python API section should show the package's names"
    missing = sorted(used - set(napari_unet_att.__all__))
    assert not missing, f"the README uses names that napari_unet_att.__all__ lacks: {missing}"
