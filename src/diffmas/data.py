"""Training and evaluation data from Python, as TRL users pass it: a list of dicts or `Item`s, or a
`datasets.Dataset`, with `question` and `answer` (optional `id`, `choices`, `views`, `tests`, `solution`,
`answer_type`). Rows are checked by the JSONL task's reader, so a bad row fails as a bad JSONL line would, named
by its index."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diffmas.tasks.base import AnswerType, Item, Task
from diffmas.tasks.jsonl import JsonlTask

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
    """Items (and the answer type the JSONL reader infers) from `data`; `what` names it in errors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{what}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for entry in data:
                f.write(json.dumps(_row(entry), ensure_ascii=False, default=str) + "\n")
        task = JsonlTask(path, name=what)
        return task.load("test"), task.answer_type


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
