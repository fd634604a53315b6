"""Code answers: turn a model's reply into a program, run it with the item's tests in the sandbox.

HumanEval-style items carry the prompt (imports, helper functions, the signature and docstring). A reply
may hold a complete function or only its body; either way we run `prompt + reply-code + tests`, so
helpers and imports from the prompt stay defined and a redefinition in the reply wins.
"""

from __future__ import annotations

import re
import textwrap

from diffmas.grading.extract import code_blocks, last_python_block, strip_thinking
from diffmas.sandbox import SandboxConfig, SandboxResult, run_python
from diffmas.tasks.base import Item

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


def build_program(code: str, item: Item) -> str:
    """The program to run: solution (joined to the prompt for HumanEval style) followed by the tests."""
    code = strip_main_guard(code)
    entry = item.meta.get("entry_point")
    prompt = item.meta.get("prompt")
    if prompt:
        if entry and not defines(code, entry):
            # a body-only continuation: it must be indented under the prompt's signature
            body = textwrap.dedent(code)
            code = textwrap.indent(body, "    ")
            solution = prompt.rstrip("\n") + "\n" + code
        else:
            solution = prompt.rstrip("\n") + "\n    pass\n\n\n" + code
    else:
        solution = code
    return f"{solution}\n\n# ---- tests ----\n{item.tests or ''}\n"


def run_item_tests(code: str, item: Item, config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code` against the item's tests in the sandbox (timeout from `item.meta["timeout"]`)."""
    if config is None:
        config = SandboxConfig(timeout=float(item.meta.get("timeout", 10.0)))
    return run_python(build_program(code, item), config)


__all__ = ["build_program", "defines", "extract_code", "run_item_tests", "strip_main_guard"]
