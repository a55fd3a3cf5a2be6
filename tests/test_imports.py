"""Imports run one way: no circle of files, ``evaluation`` below ``spin``, errors at the bottom.

The graph is read from the source with ``ast`` (nothing is imported), counting imports at
the top of a module and inside functions alike: a lazy import that closes a circle still
ties the two files together for a reader. An import names the most specific module of ours
it reaches (``from spin.data import loaders`` reaches ``spin/data/loaders.py``, ``from
spin.data import DataError`` reaches ``spin/data/__init__.py``); the parent packages Python
initialises on the way are not counted, since a package importing its own submodules is
how packages are built.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spin", "evaluation")
BOTTOM = ("spin.errors", "evaluation.errors")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of ours by dotted name."""
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for (with ``from X import y``, both ``X.y``
    and ``X``, since ``y`` may be a module or a name defined in ``X``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific module of ours that ``name`` lies in, if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _imported(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                # ``from X import y``: y's own module when it is one, else X.
                specific = [n for n in names[:-1] if n in modules]
                names = specific or names[-1:]
            edges |= {t for t in (_target(n, modules) for n in names) if t and t != module}
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (first module repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_graph_sees_top_level_and_function_level_imports(graph: dict[str, set[str]]) -> None:
    """The reader finds the edges the other checks rely on (a guard against a blind parser)."""
    assert "spin.errors" in graph["spin.config"]
    assert "spin.data.loaders" in graph["spin.data"]
    assert graph["spin.reporting.significance"] >= {"spin.errors", "spin.reporting.collect"}


def test_find_cycle_reports_the_circle() -> None:
    looped = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(looped) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_circle_of_files(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "imports run in a circle: " + " -> ".join(cycle or [])


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(graph: dict[str, set[str]], package: str, other: str) -> bool:
    """Whether a module of ``package`` that is not also in ``other`` imports into ``other``."""
    return any(
        _inside(module, package)
        and not _inside(module, other)
        and any(_inside(t, other) for t in targets)
        for module, targets in graph.items()
    )


def test_no_two_packages_import_each_other(graph: dict[str, set[str]]) -> None:
    """Between packages neither of which holds the other (spin and evaluation, spin.data and
    spin.reporting, ...) imports run one way."""
    packages = sorted(m for m in graph if (ROOT.joinpath(*m.split(".")) / "__init__.py").is_file())
    both = [
        f"{a} <-> {b}"
        for i, a in enumerate(packages)
        for b in packages[i + 1 :]
        if not _inside(a, b) and not _inside(b, a)
        if _imports(graph, a, b) and _imports(graph, b, a)
    ]
    assert not both, f"packages import each other: {both}"


def test_evaluation_imports_nothing_from_spin(graph: dict[str, set[str]]) -> None:
    upward = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "evaluation"
        for target in targets
        if target.split(".")[0] == "spin"
    }
    assert not upward, f"evaluation is a library below spin, yet imports: {sorted(upward)}"


@pytest.mark.parametrize("module", BOTTOM)
def test_errors_modules_import_nothing_of_ours(graph: dict[str, set[str]], module: str) -> None:
    assert module in graph, f"{module} is missing"
    assert not graph[module], f"{module} must sit at the bottom, yet imports {graph[module]}"
