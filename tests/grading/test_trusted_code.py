"""The trusted code that runs in other processes (the sandbox's prelude, the harness's test process) is real
modules of the package, run as the text the grader read at import: standard library only, the exit codes the
grader classifies, and importing them runs nothing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from diffmas.grading import harness, prelude, runner, sandbox

TRUSTED = {"prelude": (prelude, sandbox.PRELUDE_SOURCE), "runner": (runner, harness.RUNNER_SOURCE)}


def _imports(source: str) -> set[str]:
    tree = ast.parse(source)
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("name", sorted(TRUSTED))
def test_the_grader_runs_the_module_file_it_read_at_import(name):
    module, source = TRUSTED[name]
    assert source == Path(module.__file__).read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":' in source  # importing the module (the test above did) runs nothing


@pytest.mark.parametrize("name", sorted(TRUSTED))
def test_trusted_code_imports_the_standard_library_only(name):
    # the sandbox has no diffmas and no site-packages: wire.py arrives as `diffmas_wire` (prelude) or as text
    foreign = _imports(TRUSTED[name][1]) - set(sys.stdlib_module_names) - {"__future__", "diffmas_wire"}
    assert foreign == set(), f"{name}.py imports {foreign}: it runs where only the standard library is"


def test_the_prelude_exits_with_the_codes_the_grader_classifies():
    codes = {
        n.args[0].value
        for n in ast.walk(ast.parse(sandbox.PRELUDE_SOURCE))
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) in ("_exit", "exit")
        and n.args and isinstance(n.args[0], ast.Constant)
    }  # fmt: skip
    known = {0} | {getattr(sandbox, k) for k in dir(sandbox) if k.startswith("EXIT_")}
    assert codes and codes <= known, codes - known


def test_the_imports_checker_sees_a_foreign_import():
    assert _imports("import numpy\nfrom diffmas.grading import wire\nimport os.path\n") == {
        "numpy",
        "diffmas",
        "os",
    }
