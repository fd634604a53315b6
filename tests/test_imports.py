"""Every diffmas module imports, and the import-time graph between them has no cycles.

A cycle works only while every import happens in one order; the next import added elsewhere breaks it with a
half-initialised module. The graph is read from the source (AST): imports that run when a module is imported, that
is module and class bodies, but not function bodies (lazy imports, run later) nor `if TYPE_CHECKING:` blocks. An
edge goes to the module an import names: `from diffmas.tasks import register_task` depends on `diffmas.tasks`
(the package's `__init__`), `from diffmas.tasks import gym` on `diffmas.tasks.gym`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not `.__init__`)."""
    files = {}
    for path in sorted((SRC / "diffmas").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = _module_files()


def _import_time_nodes(body: list[ast.stmt]):
    """Import statements that run when the module runs: not inside functions, not under TYPE_CHECKING."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _import_time_nodes(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _import_time_nodes(getattr(node, field, None) or [])


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def import_graph() -> dict[str, set[str]]:
    """module -> the diffmas modules it imports at import time."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps: set[str] = set()
        for node in _import_time_nodes(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in MODULES}
                continue
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in MODULES else target)
        graph[module] = {d for d in deps if d in MODULES and d != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_import_graph_has_no_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one_and_only_then():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_graph_sees_package_and_submodule_imports():
    graph = import_graph()
    assert "diffmas.tasks.base" in graph["diffmas.tasks"]  # `from diffmas.tasks.base import Item`
    assert "diffmas.grading" not in graph["diffmas.tasks.base"]  # imported inside Task.grade only


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)
