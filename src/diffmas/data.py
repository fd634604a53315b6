"""Training and evaluation data from Python, as TRL users pass it: a list of dicts or `Item`s, or a
`datasets.Dataset`, with `question` and `answer` (optional `id`, `choices`, `views`, `tests`, `solution`,
`answer_type`). Rows get the checks of a task file's rows (`diffmas.tasks.jsonl.RowChecker`), so a bad row fails
as a bad JSONL line would, named by its position (`python-data-train: row 2: ...`, counted from 1)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from diffmas.tasks.base import AnswerType, Item, Task
from diffmas.tasks.jsonl import RowChecker, infer_answer_type

Rows = Iterable[Mapping[str, Any] | Item]


def _row(entry: Mapping[str, Any] | Item) -> dict[str, Any]:
    """One row as the JSONL reader takes it; an `Item`'s meta fields go back to the top level."""
    if isinstance(entry, Item):
        row = {**entry.meta, **{k: v for k, v in entry.to_dict().items() if k != "meta"}}
    elif isinstance(entry, Mapping):
        row = dict(entry)
    else:
        raise TypeError(f"a data row must be a dict or an Item, got {type(entry).__name__}")
    return {k: v for k, v in row.items() if v is not None}


def read_items(data: Rows, what: str) -> tuple[list[Item], AnswerType]:
    """Items (and the answer type a task file would get) from `data`; `what` names it in errors.

    Each row goes through JSON first, as a file's row would: tuples become lists and values JSON cannot hold become
    their text (`default=str`), so a row from Python and the same row from a JSONL file give the same item."""
    checker = RowChecker(what)
    for n, entry in enumerate(data, start=1):
        row = json.loads(json.dumps(_row(entry), ensure_ascii=False, default=str))
        checker.add(row, f"{what}: row {n}", f"row {n}")
    if not checker.items:
        raise ValueError(f"{what}: no items")
    return checker.items, infer_answer_type(checker.items)


class ItemsTask(Task):
    """A task over items given in Python: `splits` maps a split name to its items."""

    source = "python"

    def __init__(self, splits: dict[str, list[Item]], answer_type: AnswerType, name: str = "python-data"):
        self.name = name
        self.answer_type = answer_type
        self._splits = splits

    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def load(self, split: str = "test") -> list[Item]:
        if split not in self._splits:
            raise ValueError(f"{self.name}: no split {split!r} (given: {sorted(self._splits)})")
        return list(self._splits[split])


def items_task(
    train: Rows,
    eval_data: Rows | None = None,
    *,
    train_split: str = "train",
    eval_split: str | None = None,
    answer_type: AnswerType | None = None,
    name: str = "python-data",
) -> ItemsTask:
    """A task whose `train_split` holds `train` and whose `eval_split` (when set) holds `eval_data`.

    An eval split without eval data is an error rather than a silent evaluation on the training items."""
    items, inferred = read_items(train, f"{name}-{train_split}")
    splits = {train_split: items}
    if eval_split is not None:
        if eval_data is None:
            raise ValueError(
                f"data.eval_split is {eval_split!r} but no eval data was given: pass eval data too, or set "
                "data.eval_split to null"
            )
        splits[eval_split] = read_items(eval_data, f"{name}-{eval_split}")[0]
    return ItemsTask(splits, answer_type or inferred, name)
