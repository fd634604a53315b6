"""Code answers: turn a model's reply into a solution and grade it against the item's trusted tests.

HumanEval-style items carry the prompt (imports, helper functions, the signature and docstring). A reply
may hold a complete function or only its body; either way the solution process loads `prompt +
reply-code`, so helpers and imports from the prompt stay defined and a redefinition in the reply wins.
The tests never run next to the candidate: see `diffmas.grading.harness`.
"""

from __future__ import annotations

import re
import textwrap

from diffmas.grading.extract import code_blocks, last_python_block, strip_thinking
from diffmas.grading.harness import run_tests
from diffmas.grading.sandbox import SandboxConfig, SandboxResult
from diffmas.items import Item

_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*?(?=^\S|\Z)", re.M | re.S)


def extract_code(output: str) -> str | None:
    """The last ```python block; else the last fenced block; else the raw reply if it looks like code."""
    text = strip_thinking(output)
    block = last_python_block(text)
    if block is None:
        blocks = code_blocks(text)
        block = blocks[-1][1] if blocks else None
    if block is None and re.search(r"^\s*(?:def |return |import |from \w+ import |class )", text, re.M):
        block = text
    if block is None or not block.strip():
        return None
    return block.rstrip() + "\n"


def strip_main_guard(code: str) -> str:
    """Drop a top-level `if __name__ == "__main__":` block (demo code that may read stdin or loop)."""
    return _MAIN_GUARD.sub("", code)


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def build_solution(code: str, item: Item) -> str:
    """What the solution process loads: the reply, joined to the prompt for HumanEval-style items."""
    code = strip_main_guard(code)
    entry = item.meta.get("entry_point")
    prompt = item.meta.get("prompt")
    if not prompt:
        return code
    if entry and not defines(code, entry):
        # a body-only continuation: it must be indented under the prompt's signature
        return prompt.rstrip("\n") + "\n" + textwrap.indent(textwrap.dedent(code), "    ")
    return prompt.rstrip("\n") + "\n    pass\n\n\n" + code


def entry_points(item: Item) -> tuple[str, ...]:
    """The solution names the item's tests may call: `entry_point` and the names the dataset declares in
    `solution_names` (a class and its helpers, say); none given, the harness takes the names the tests
    leave unbound. Nothing the solution defines is added: see `diffmas.grading.harness`."""
    entry = item.meta.get("entry_point")
    declared = item.meta.get("solution_names") or []
    if not isinstance(declared, list) or not all(isinstance(n, str) and n.isidentifier() for n in declared):
        raise ValueError(f"item {item.id}: field 'solution_names' must be a list of Python identifiers")
    if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
        raise ValueError(f"item {item.id}: field 'entry_point' must be a Python identifier, got {entry!r}")
    return tuple(dict.fromkeys([*([entry] if entry else []), *declared]))


def run_item_tests(code: str, item: Item, config: SandboxConfig | None = None) -> SandboxResult:
    """Grade `code` against the item's tests (timeout from `item.meta["timeout"]`)."""
    if config is None:
        config = SandboxConfig(timeout=float(item.meta.get("timeout", 10.0)))
    return run_tests(
        build_solution(code, item),
        item.tests or "",
        entry_points=entry_points(item),
        prompt=item.meta.get("prompt"),
        config=config,
    )


__all__ = ["build_solution", "defines", "entry_points", "extract_code", "run_item_tests", "strip_main_guard"]
