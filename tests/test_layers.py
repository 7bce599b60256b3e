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


# ---- inside the packages: a module graph built from the source (ast), never by importing it -------------------

PACKAGES = ("zoo", "serving", "ui")
#: the model-loading side of the core: ``import zoo``, ``zoo.create()`` and what a family needs to run
LOADING = ("zoo", "zoo.registry", "zoo.base", "zoo.spec", "zoo.weights", "zoo.runtime", "zoo.postprocess",
           "zoo.truncation", "zoo.backends", "zoo.families.*", "zoo.media.*", "zoo.kinds.*")
NOT_FOR_LOADING = ("zoo.evaluation", "zoo.integrations")  # with their sub-modules
MODULE, LAZY, TYPING = "module", "lazy", "typing"  # an import runs at import time, in a function, or never


def module_name(path: Path) -> str:
    """``zoo/a/b.py`` → ``zoo.a.b``; a package's ``__init__.py`` → the package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def repo_modules() -> dict[str, Path]:
    """Every module of the packages, by name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def module_imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str]]:
    """``(module, when)`` for each module of ``known`` that ``name`` imports, ``when`` one of MODULE, LAZY
    (inside a function) or TYPING (under ``if TYPE_CHECKING:``). Relative imports are resolved against the
    module's package; ``from P import x`` names the sub-module ``P.x`` when there is one, else ``P``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, str]] = []

    def add(dotted: str, when: str) -> None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):  # the deepest module that exists: `import a.b.c` with c a function
            if ".".join(parts[:i]) in known:
                found.append((".".join(parts[:i]), when))
                return

    def visit(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, LAZY if when == MODULE else when)
                continue
            if isinstance(child, ast.If) and _type_checking(child):
                visit(child, TYPING)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, when)
            elif isinstance(child, ast.ImportFrom):
                base = package[: len(package) - child.level + 1] if child.level else []
                target = ".".join([*base, *([child.module] if child.module else [])])
                for alias in child.names:
                    add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target, when)
            visit(child, when)

    visit(ast.parse(path.read_text(), str(path)), MODULE)
    return [(target, when) for target, when in found if target != name]


def import_graph(*whens: str) -> dict[str, set[str]]:
    """module → the modules of the packages it imports, counting the imports of the kinds ``whens``."""
    modules = repo_modules()
    return {name: {t for t, when in module_imports(name, path, set(modules)) if when in whens}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next((w for w in edges if w not in index or w in on_stack), None)
            if nxt is not None and nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph[nxt]))))
            elif nxt is not None:
                low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def path_to(graph: dict[str, set[str]], start: str, wanted) -> list[str] | None:
    """The shortest import chain from ``start`` to a module for which ``wanted(module)`` holds, or None."""
    parent: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        following = []
        for node in todo:
            for target in sorted(graph[node]):
                if target in parent:
                    continue
                parent[target] = node
                if wanted(target):
                    chain = [target]
                    while parent[chain[-1]] is not None:
                        chain.append(parent[chain[-1]])
                    return chain[::-1]
                following.append(target)
        todo = following
    return None


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _loading(module: str) -> bool:
    return any(module.startswith(p[:-1]) if p.endswith(".*") else module == p for p in LOADING)


def test_the_loading_side_never_reaches_evaluation_or_integrations():
    """Nothing that loading and running a model imports — lazily or not, directly or through other modules —
    is ``zoo.evaluation`` or ``zoo.integrations``: a model does not depend on how it is evaluated."""
    graph = import_graph(MODULE, LAZY, TYPING)
    chains = {m: path_to(graph, m, lambda t: _within(t, NOT_FOR_LOADING)) for m in sorted(graph) if _loading(m)}
    assert {m: " → ".join(c) for m, c in chains.items() if c} == {}
    assert "zoo.families.common" in chains and "zoo.registry" in chains  # the rule sees the modules it names


def _cli_module(module: str) -> bool:
    return module == "zoo.cli" or module.endswith(".cli")


def test_batch_never_imports_another_commands_cli():
    """``zoo.batch`` (``zoo embed``) reaches no other command's command-line module (``zoo.evaluation.cli``,
    ``serving.cli``, ``ui.cli``, ``zoo.cli``), lazily or not: what commands share lives in the core."""
    graph = import_graph(MODULE, LAZY, TYPING)
    chains = {m: path_to(graph, m, lambda t: _cli_module(t) and t != "zoo.batch.cli")
              for m in sorted(graph) if _within(m, ("zoo.batch",))}
    assert {m: " → ".join(c) for m, c in chains.items() if c} == {}
    assert "zoo.batch.job" in chains


def test_the_demo_reaches_generated_data_through_its_corpus_only():
    """In ``ui``, only ``ui.default_corpus`` (which builds the demo corpus from them) imports ``zoo.data``."""
    graph = import_graph(MODULE, LAZY, TYPING)
    bad = {m: sorted(t for t in graph[m] if _within(t, ("zoo.data",)))
           for m in graph if _within(m, ("ui",)) and m != "ui.default_corpus"}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_import_cycles_at_import_time():
    """No cycle among the imports that run when a module is imported (module level, class bodies, ``try``
    blocks; not functions, not ``if TYPE_CHECKING``): such a cycle works or fails by which module is imported
    first. Imports inside functions are left out on purpose: one runs after both modules are whole, and it is
    how a module calls back into one that imports it, or keeps ``import zoo`` light."""
    assert cycles(import_graph(MODULE)) == []


def test_the_graph_resolves_relative_imports():
    """The graph builder itself: relative forms land on full module names, functions' imports are lazy."""
    known = set(repo_modules())
    job = set(module_imports("zoo.batch.job", REPO / "zoo" / "batch" / "job.py", known))
    assert ("zoo.batch.sources", MODULE) in job and ("zoo.backends", LAZY) in job  # `from . import sources`
    assert ("zoo.backends", MODULE) not in job
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
