"""BIG-bench JSON tasks, read from a local copy of the task JSONs or from the `bigbench==1.0.0` sdist.

The package index no longer serves `bigbench==1.0.0` (it offers only 0.0.1, checked 2026-12-06), so a new
machine needs a local copy: `path=<folder>` (a task argument) or `DIFFMAS_BIGBENCH=<folder>`, where the folder is
a BIG-bench checkout, its `bigbench/benchmark_tasks`, or a task's own folder or `task.json`. Without one, the
sdist is tried (a mirror or an old cache may still hold it: never `pip install bigbench`, it pulls TensorFlow),
and when that fails the error is one line that says how to point at a local copy. Nothing shipped (README, CI,
the demo) depends on BIG-bench.

Mapping: examples with `target_scores` whose options are Yes/No or True/False become `yesno` items;
other `target_scores` become multiple choice with the options shuffled per item (BIG-bench often lists
the correct option first); examples with only `target` become `text` items. BIG-bench has no official
train/test split, so `train`/`test` are a seeded 80/20 split of the examples (the convention of the hub
port) and `all` is everything.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffmas.items import AnswerType
from diffmas.tasks.base import Item, Task, option_letters
from diffmas.tasks.hub import stable_rng
from diffmas.tasks.pypi import DataFetchError, sdist_member
from diffmas.tasks.registry import register_prefix, register_task

PACKAGE, VERSION = "bigbench", "1.0.0"
ENV = "DIFFMAS_BIGBENCH"  # a local copy of the task JSONs when no `path=` is given

_YES = {"yes", "true"}
_NO = {"no", "false"}


class BigBenchUnavailable(DataFetchError):
    """No local copy of BIG-bench was given and the sdist could not be fetched."""


def local_task_file(root: str | os.PathLike[str], task: str) -> Path:
    """`task`'s task.json under a local copy: `root` is a task.json, a task folder, `benchmark_tasks`, the
    `bigbench` package folder or a BIG-bench checkout (tried in that order)."""
    base = Path(root).expanduser()
    if base.is_file():
        return base
    candidates = [
        base / "task.json",
        base / task / "task.json",
        base / "benchmark_tasks" / task / "task.json",
        base / "bigbench" / "benchmark_tasks" / task / "task.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not base.exists():
        raise FileNotFoundError(f"BIG-bench copy {base} does not exist")
    raise FileNotFoundError(
        f"no task.json for BIG-bench task {task!r} under {base} (looked for {task}/task.json)"
    )


def task_json(task: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The parsed task.json of a BIG-bench task (`strategyqa`, `logical_deduction/three_objects`, ...): from
    `path` or `$DIFFMAS_BIGBENCH` when given, else from the sdist (cached)."""
    task = task.strip("/")
    root = path if path is not None else os.environ.get(ENV) or None
    if root is not None:
        file = local_task_file(root, task)
    else:
        try:
            file = sdist_member(
                PACKAGE, VERSION, f"/benchmark_tasks/{task}/task.json", f"benchmark_tasks/{task}/task.json"
            )
        except DataFetchError as e:
            first = str(e).splitlines()[0].rstrip(":")
            raise BigBenchUnavailable(
                f"BIG-bench task {task!r} needs a local copy of BIG-bench ({first}); point at one with the "
                f"task argument path=<BIG-bench checkout or its bigbench/benchmark_tasks> (`--task-arg path=...` "
                f"in diffmas eval, `task_args.path=...` in a config) or {ENV}=<that folder>"
            ) from None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None


class BigBenchTask(Task):
    """One BIG-bench JSON task; `task` is its folder under benchmark_tasks (subtasks as `parent/child`)."""

    source = f"local copy (path= or ${ENV}), else PyPI sdist {PACKAGE}=={VERSION} (no longer served)"

    def __init__(
        self,
        task: str,
        seed: int = 0,
        test_fraction: float = 0.2,
        name: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ):
        self.task = task.replace(":", "/").strip("/")
        self.path = path
        self.name = name or f"bigbench:{self.task}"
        self.seed = seed
        self.test_fraction = test_fraction
        self._data: dict[str, Any] | None = None
        self.answer_type = self._known_types.get(self.task, "mcq")
        total = self._known_sizes.get(self.task)
        if total is not None:
            n_test = round(total * test_fraction)
            self.sizes = {"train": total - n_test, "test": n_test, "all": total}

    _known_types: dict[str, AnswerType] = {
        "strategyqa": "yesno",
        "causal_judgment": "yesno",
        "navigate": "yesno",
    }
    _known_sizes: dict[str, int] = {
        "strategyqa": 2290,
        "date_understanding": 369,
        "logical_deduction/three_objects": 300,
        "logical_deduction/five_objects": 500,
        "logical_deduction/seven_objects": 700,
        "causal_judgment": 190,
        "navigate": 1000,
    }

    def splits(self) -> tuple[str, ...]:
        return ("train", "test", "all")

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            data = task_json(self.task, self.path)
            if not data.get("examples"):
                subtasks = data.get("subtasks") or []
                hint = f" (it has subtasks; use e.g. bigbench:{self.task}/<subtask>)" if subtasks else ""
                raise ValueError(f"BIG-bench task {self.task!r} has no JSON examples{hint}")
            self._data = data
        return self._data

    def all_items(self) -> list[Item]:
        data = self.data
        prefix = str(data.get("task_prefix", "") or "").strip()
        examples = data["examples"]
        items = [self._item(ex, i, prefix) for i, ex in enumerate(examples)]
        kinds = {it.meta["kind"] for it in items}
        self.answer_type = "yesno" if kinds == {"yesno"} else "text" if kinds == {"text"} else "mcq"
        if len(kinds) > 1 and "mcq" in kinds:  # mixed yes/no and mcq: show everything as options
            items = [self._item(ex, i, prefix, force_mcq=True) for i, ex in enumerate(examples)]
        return items

    def _item(self, ex: Mapping[str, Any], index: int, prefix: str, force_mcq: bool = False) -> Item:
        question = str(ex["input"]).strip()
        if prefix:
            question = f"{prefix}\n\n{question}"
        iid = f"bigbench-{self.task.replace('/', '-')}-{index}"
        meta: dict[str, Any] = {"task": self.task, "index": index}
        scores = ex.get("target_scores")
        if scores:
            best = max(scores.values())
            correct = [k for k, v in scores.items() if v == best]
            keys = {k.strip().lower() for k in scores}
            if not force_mcq and len(scores) == 2 and keys <= _YES | _NO and len(correct) == 1:
                answer = "yes" if correct[0].strip().lower() in _YES else "no"
                return Item(iid, question, answer, meta={**meta, "kind": "yesno", "target": correct[0]})
            options = list(scores)
            stable_rng("bigbench", self.task, self.seed, index).shuffle(options)
            letters = option_letters(len(options))
            correct_letters = [letters[options.index(c)] for c in correct]
            meta |= {"kind": "mcq", "correct_letters": correct_letters}
            return Item(iid, question, correct_letters[0], choices=tuple(options), meta=meta)
        target = ex.get("target")
        targets = [target] if isinstance(target, str) else list(target or [])
        if not targets:
            raise ValueError(f"BIG-bench {self.task} example {index} has neither target_scores nor target")
        return Item(iid, question, str(targets[0]), meta={**meta, "kind": "text", "targets": targets})

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (have train, test, all)")
        items = self.all_items()
        if split == "all":
            return items
        order = list(range(len(items)))
        random.Random(f"bigbench-split:{self.task}:{self.seed}").shuffle(order)
        n_test = round(len(items) * self.test_fraction)
        test = set(order[:n_test])
        return [it for i, it in enumerate(items) if (i in test) == (split == "test")]


@register_prefix("bigbench")
def bigbench_task(task: str, **kwargs: Any) -> BigBenchTask:
    """Any BIG-bench JSON task: `bigbench:<task>` or `bigbench:<task>/<subtask>`."""
    return BigBenchTask(task, **kwargs)


_ALIASES = {
    "strategyqa": "strategyqa",
    "date_understanding": "date_understanding",
    "logical_deduction_three_objects": "logical_deduction/three_objects",
    "logical_deduction_five_objects": "logical_deduction/five_objects",
    "logical_deduction_seven_objects": "logical_deduction/seven_objects",
    "causal_judgment": "causal_judgment",
    "navigate": "navigate",
}


def _alias(name: str, task: str):
    def factory(**kwargs: Any) -> BigBenchTask:
        return BigBenchTask(task, name=name, **kwargs)

    factory.__doc__ = f"BIG-bench {task}"
    return factory


for _name, _task in _ALIASES.items():
    register_task(_name)(_alias(_name, _task))


__all__ = ["BigBenchTask", "BigBenchUnavailable", "bigbench_task", "local_task_file", "task_json"]
