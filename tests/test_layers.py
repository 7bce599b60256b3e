"""The layers point down: zoo (core) → serving → ui; nothing in a package imports scripts/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# package → the top-level names of this repository it must never import
FORBIDDEN = {"zoo": {"serving", "ui", "scripts", "tests"}, "serving": {"ui", "scripts", "tests"},
             "ui": {"scripts", "tests"}}


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a source file imports (anywhere in it, lazily or not); strings such as
    ``importlib.import_module("ui.cli")`` count too."""
    tree = ast.parse(path.read_text(), str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.count(".") == 1:
            head, _, tail = node.value.partition(".")  # "ui.cli", "serving.cli": a module named by string
            if tail.isidentifier() and head in {"serving", "ui", "scripts"}:
                roots.add(head)
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_down(package):
    bad = {str(p.relative_to(REPO)): sorted(imported_roots(p) & FORBIDDEN[package])
           for p in sorted((REPO / package).rglob("*.py"))}
    assert {k: v for k, v in bad.items() if v} == {}


def test_scripts_is_not_a_package():
    assert not (REPO / "scripts" / "__init__.py").exists()
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(p.startswith("scripts") for p in include)
