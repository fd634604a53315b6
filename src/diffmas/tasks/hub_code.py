"""Code benchmarks by hub id or local file: HumanEval+ and MBPP+.

A code `Item` keeps a self-running test script in `tests` (the grader runs `solution + tests` in the
sandbox), the function name in `meta["entry_point"]` and, for HumanEval-style tasks, the prompt in
`meta["prompt"]` so that a body-only completion can be joined to its signature.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diffmas.tasks.base import Item
from diffmas.tasks.hub import HubTask, as_list, field
from diffmas.tasks.humaneval import humaneval_item, humaneval_train_ids
from diffmas.tasks.registry import register_task


@register_task("humaneval-plus")
class HumanEvalPlusTask(HubTask):
    """HumanEval+ (`evalplus/humanevalplus`, 164 problems, ~80x more tests than HumanEval).

    `test` leaves out the 50 problems of `humaneval`'s train split (same `train_seed` and `train_size` as its
    `seed` and `train_size`), as the paper does: a model trained on them must not be scored on them. `all` keeps
    every problem; `exclude_train=False` makes `test` do so too."""

    name = "humaneval-plus"
    answer_type = "code"
    hub_id = "evalplus/humanevalplus"
    hub_splits = {"test": "test"}

    def __init__(
        self, *args: Any, exclude_train: bool = True, train_seed: int = 0, train_size: int = 50, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.exclude_train = exclude_train
        self.train_seed = train_seed
        self.train_size = train_size
        self.sizes = {"test": 164 - train_size if exclude_train else 164, "all": 164}

    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*super().splits(), "all")))

    def load(self, split: str = "test") -> list[Item]:
        if split == "all":
            return super().load("test")
        items = super().load(split)
        if not self.exclude_train:
            return items
        train = humaneval_train_ids(self.train_seed, self.train_size)
        kept = [it for it in items if it.id not in train]
        if not kept:
            raise ValueError(f"{self.name}: every item of split {split!r} is a humaneval training problem")
        return kept

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        return humaneval_item(row, timeout=30.0)


_RE_ASSERT_CALL = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(")


def mbpp_entry_point(row: Mapping[str, Any]) -> str:
    """The function under test: the name called in the first assertion, else the first `def` of the code."""
    tests = as_list(field(row, "test_list", default=[]))
    code = str(field(row, "code", default=""))
    defined = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.M)
    for test in tests:
        for name in _RE_ASSERT_CALL.findall(test):
            if not defined or name in defined:
                return name
    if defined:
        return defined[0]
    raise ValueError("cannot tell the function name (no test_list call and no def in code)")


@register_task("mbpp-plus")
class MbppPlusTask(HubTask):
    """MBPP+ (`evalplus/mbppplus`, 378 problems): `prompt` (a one-line description), `code` (reference),
    `test_list` (3 visible asserts), `test_imports` and `test` (the full self-running EvalPlus script)."""

    name = "mbpp-plus"
    answer_type = "code"
    hub_id = "evalplus/mbppplus"
    hub_splits = {"test": "test"}
    sizes = {"test": 378}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        entry = mbpp_entry_point(row)
        visible = [str(t) for t in as_list(field(row, "test_list", default=[]))]
        imports = [str(t) for t in as_list(field(row, "test_imports", default=[]))]
        full = field(row, "test", default=None) or "\n".join(visible)
        description = str(field(row, "prompt", "text")).strip()
        question = description
        if visible:
            question += "\nYour code should pass this test:\n" + visible[0]
        return Item(
            id=f"Mbpp/{field(row, 'task_id')}",
            question=question,
            answer=str(field(row, "code", default="")),
            tests="\n".join(imports) + "\n\n" + str(full) + "\n",
            meta={"entry_point": entry, "style": "mbpp", "visible_tests": visible, "timeout": 30.0},
        )


__all__ = ["HumanEvalPlusTask", "MbppPlusTask", "humaneval_item", "mbpp_entry_point"]
