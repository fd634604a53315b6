"""Every diffmas module imports, the import graph between them has no cycles, and every arrow points down the
layers CONTRIBUTING.md names.

The graph is read from the source (AST) and counts every import statement a module holds: at module level, in
class bodies, inside functions (a lazy import is a real dependency that only runs later) and under
`if TYPE_CHECKING:` (a type-level dependency is still an arrow). An edge goes to the module an import names:
`from diffmas.tasks import register_task` depends on `diffmas.tasks` (the package's `__init__`),
`from diffmas.tasks import gym` on `diffmas.tasks.gym`. Imports by string (`importlib.import_module`, used by
the package's lazy `__getattr__`) are not seen."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"

# The layers of CONTRIBUTING.md's architecture map, bottom up: a module imports only from its own layer or below.
# A name covers the module and, for a package, everything under it ("" is the package root, `diffmas`).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves",
        (
            "trace", "realign", "roles", "records", "integrity", "stats", "metrics", "configs", "terminal",
            "memory", "pins", "pypi_fetch", "thinking", "items",
        ),
    ),
    ("model", ("embedded", "backbones", "decoding")),
    ("methods", ("methods", "adapters", "testing")),
    ("grading", ("grading",)),
    ("data", ("tasks", "data")),
    ("runners", ("evaluation", "training", "compare", "report", "system", "diagnostics", "lm_eval_model")),
    ("interface", ("cli", "")),
)  # fmt: skip


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not `.__init__`)."""
    files = {}
    for path in sorted((SRC / "diffmas").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = _module_files()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str, source: str) -> set[str]:
    """The diffmas modules that `source` (the text of `module`) imports anywhere in its body."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in MODULES else target)
    return {d for d in deps if d in MODULES and d != module}


def import_graph() -> dict[str, set[str]]:
    """module -> the diffmas modules it imports."""
    return {m: imports_of(m, path.read_text(encoding="utf-8")) for m, path in MODULES.items()}


def layer_of(module: str) -> int:
    """The index in `LAYERS` of the most specific name that covers `module` (KeyError: in no layer)."""
    relative = module.removeprefix("diffmas").removeprefix(".")
    matches = [
        (len(name), index)
        for index, (_, names) in enumerate(LAYERS)
        for name in names
        if relative == name or (name and relative.startswith(name + "."))
    ]
    if not matches:
        raise KeyError(module)
    return max(matches)[1]


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every edge that goes from a lower layer to a higher one, as 'a (layer) -> b (layer)'."""
    out = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            low, high = layer_of(module), layer_of(dep)
            if high > low:
                out.append(f"{module} ({LAYERS[low][0]}) -> {dep} ({LAYERS[high][0]})")
    return out


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
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_import_graph_has_no_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_is_in_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"modules in no layer of LAYERS (add them, and to CONTRIBUTING.md's map): {unplaced}"


def test_every_arrow_points_down_the_layers():
    arrows = upward_arrows(import_graph())
    assert not arrows, "imports that point up a layer:\n" + "\n".join(arrows)


def test_find_cycle_finds_one_and_only_then():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_graph_counts_imports_inside_functions_and_type_checking_blocks():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from diffmas.tasks.base import Task\n"
        "def f():\n    from diffmas.grading import grade\n"
        "class C:\n    def g(self):\n        import diffmas.trace\n"
        "from diffmas.tasks import gym\n"
    )
    assert imports_of("diffmas.stats", source) == {
        "diffmas.tasks.base", "diffmas.grading", "diffmas.trace", "diffmas.tasks.gym"
    }  # fmt: skip


def test_upward_arrows_are_named_and_same_layer_ones_are_not():
    assert upward_arrows({"diffmas.trace": {"diffmas.evaluation"}}) == [
        "diffmas.trace (leaves) -> diffmas.evaluation (runners)"
    ]
    assert upward_arrows({"diffmas.evaluation": {"diffmas.training.trainer", "diffmas.trace"}}) == []
    assert layer_of("diffmas") == layer_of("diffmas.cli.eval_cmd") == len(LAYERS) - 1
    assert layer_of("diffmas.methods.base") == layer_of("diffmas.adapters")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)
