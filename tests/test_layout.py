"""The package reads top to bottom: no module imports, however indirectly, one that imports it back, and no two
modules share a file name, so a name in a traceback or a review points at one file.

The graph is read from the source with ``ast``, not by importing: every ``import`` counts, at module level or
inside a function (a lazy import runs too, only later), and so does a string naming a module exactly (what
``importlib.import_module`` loads, as the package's lazy exports do). Imports under ``if TYPE_CHECKING:`` are
left out: they never run, they only name a type for the reader.
Run this file as a script to print the graph's circles.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the dotted name its files import as (``dashboards/`` installs as ``skipsearch.dashboards``).
PACKAGES = {ROOT / "skipsearch": "skipsearch", ROOT / "dashboards": "skipsearch.dashboards"}


def modules() -> dict[str, Path]:
    """Every module's dotted name and file; a package is its ``__init__.py``."""
    found: dict[str, Path] = {}
    for folder, dotted in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([dotted, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node that can run, skipping the bodies of ``if TYPE_CHECKING:`` (but not their ``else``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The module an import of ``name`` executes last: the longest prefix of it that is a module here."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The modules of this package that ``module`` imports, each with the first line that does."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` runs pkg/sub.py when sub is a module, else it takes a name from pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in known:  # a dotted module name, not a word such as the cache folder's
            names = [node.value]
        for name in names:
            target = _target(name, known)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {module: imports_of(module, path, known) for module, path in known.items()}


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def one_loop(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest path from the component's first module back to itself: the circle to read first."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child in members and child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return component


def describe(component: list[str], edges: dict[str, dict[str, int]]) -> str:
    loop = one_loop(component, edges)
    steps = " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(loop, loop[1:], strict=False))
    return f"{len(component)} modules: {', '.join(component)}\n  e.g. {steps} -> {loop[-1]}"


def test_the_graph_is_read():
    """The reader finds the imports it is meant to find: a guard against a test that passes by seeing nothing."""
    edges = graph()
    assert len(edges) > 100
    assert "skipsearch.errors" in edges["skipsearch.api"]  # a module-level import
    assert "skipsearch.api" in edges["skipsearch.cli"]  # ``from skipsearch import api`` inside a function
    assert "skipsearch.api" in edges["skipsearch"]  # a lazy export, by the module's name in a string
    assert sum(len(targets) for targets in edges.values()) > 300


def test_a_circle_is_found():
    edges = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert circles(edges) == [["a", "b", "c"]]
    assert one_loop(["a", "b", "c"], edges) == ["a", "b", "c", "a"]


def test_no_import_circle():
    edges = graph()
    found = circles(edges)
    assert not found, "import circles:\n" + "\n".join(describe(c, edges) for c in found)


def test_no_two_modules_share_a_file_name():
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in modules().values():
        if path.name != "__init__.py":
            by_name[path.name].append(str(path.relative_to(ROOT)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"modules sharing a file name: {shared}"


if __name__ == "__main__":
    edges = graph()
    found = circles(edges)
    for component in sorted(found, key=len, reverse=True):
        print(describe(component, edges))
    print(f"{len(found)} circle(s), {sum(len(t) for t in edges.values())} arrows, {len(edges)} modules")
    sys.exit(1 if found else 0)
