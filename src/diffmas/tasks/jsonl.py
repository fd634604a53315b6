"""Any JSONL file with `question` and `answer` keys (optional `id`, `choices`, `tests`, `answer_type`, `timeout` for
code items, and `views`: one private string per agent of the chain) is a task.

Every field is checked when the file is read, so a bad row fails before any model loads, naming file, line and
field: `answer` is a string or a finite number (not `true`, not `NaN`), `tests` a string, `timeout` a positive
number of seconds, and a line is at most `MAX_ITEM_BYTES` (1 MiB)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffmas.tasks.base import ANSWER_TYPES, MAX_ITEM_BYTES, AnswerType, Item, Task


class JsonlTask(Task):
    """A task read from a local JSONL file. Bad rows raise an error naming the file, line and field."""

    source = "local file"

    def __init__(self, path: str | Path, answer_type: AnswerType | None = None, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"task file not found: {self.path}")
        self.name = name or self.path.stem
        self._items = self._read()
        self.answer_type = answer_type or self._infer_answer_type()

    def _read(self) -> list[Item]:
        from diffmas.records import decode_lines

        items: list[Item] = []
        first_line: dict[str, tuple[int, object]] = {}  # normalised id -> (line, id as written)
        for lineno, line, _ in decode_lines(self.path, self.path.read_bytes()):
            if not line.strip():
                continue
            size = len(line.encode("utf-8"))
            if size > MAX_ITEM_BYTES:
                raise ValueError(
                    f"{self.path}:{lineno}: an item of {size:,} bytes, over the limit of {MAX_ITEM_BYTES:,} bytes "
                    "per item (diffmas.tasks.base.MAX_ITEM_BYTES)"
                )
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}:{lineno}: invalid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{self.path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in ("question", "answer"):
                if key not in row:
                    raise ValueError(f"{self.path}:{lineno}: missing field '{key}'")
            self._check_answer(row["answer"], lineno)
            if not isinstance(row["question"], str):
                raise ValueError(f"{self.path}:{lineno}: field 'question' must be a string")
            choices = row.get("choices")
            if choices is not None and (
                not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
            ):
                raise ValueError(f"{self.path}:{lineno}: field 'choices' must be a list of strings")
            views = row.get("views")
            if views is not None and (
                not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views)
            ):
                raise ValueError(
                    f"{self.path}:{lineno}: field 'views' must be a non-empty list of strings "
                    "(one per agent of the chain)"
                )
            tests = row.get("tests")
            if tests is not None and not isinstance(tests, str):
                raise ValueError(
                    f"{self.path}:{lineno}: field 'tests' must be a string of Python test code, "
                    f"got {type(tests).__name__}"
                )
            self._check_timeout(row.get("timeout"), lineno)
            at = row.get("answer_type")
            if at is not None and at not in ANSWER_TYPES:
                raise ValueError(f"{self.path}:{lineno}: field 'answer_type' must be one of {ANSWER_TYPES}")
            item_id = self._item_id(row, lineno, len(items), first_line)
            items.append(
                Item(
                    id=item_id,
                    question=row["question"],
                    answer=str(row["answer"]),
                    choices=tuple(choices) if choices else None,
                    tests=tests,
                    views=tuple(views) if views else None,
                    meta={
                        k: v
                        for k, v in row.items()
                        if k not in {"id", "question", "answer", "choices", "tests", "views"}
                    },
                )
            )
        if not items:
            raise ValueError(f"{self.path}: no items")
        return items

    def _check_answer(self, answer: object, lineno: int) -> None:
        """A gold answer is a string or a finite number: `null`, `true` or `NaN` would otherwise become the gold
        answers "None", "True" or "nan", which no output matches as meant."""
        number = isinstance(answer, int | float) and not isinstance(answer, bool)
        if isinstance(answer, str) or (
            number and not (isinstance(answer, float) and not math.isfinite(answer))
        ):
            return
        if answer is None or isinstance(answer, bool):
            got = json.dumps(answer)  # null, true, false: as the file has them
        else:
            got = repr(answer) if isinstance(answer, float) else type(answer).__name__
        raise ValueError(
            f"{self.path}:{lineno}: field 'answer' must be a string or a finite number, got {got}"
        )

    def _check_timeout(self, timeout: object, lineno: int) -> None:
        """A code item's time limit in seconds, checked here rather than by the grader after generation."""
        if timeout is None:
            return
        number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
        if not number or not math.isfinite(timeout) or timeout <= 0:  # type: ignore[arg-type,operator]
            raise ValueError(
                f"{self.path}:{lineno}: field 'timeout' must be a positive number of seconds, got {timeout!r}"
            )

    def _item_id(self, row: dict, lineno: int, index: int, first_line: dict[str, tuple[int, object]]) -> str:
        """The row's id as a string (ids are compared as strings everywhere, so `1` and `"1"` are one id);
        a repeated id is an error naming both lines, since resumption and summaries key on it."""
        raw = row.get("id", f"{self.name}-{index}")
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ValueError(f"{self.path}:{lineno}: field 'id' must be a string or an integer")
        item_id = str(raw)
        if item_id in first_line:
            line, earlier = first_line[item_id]
            same = "" if earlier == raw else f" ({earlier!r} and {raw!r} are the same id as strings)"
            raise ValueError(
                f"{self.path}:{lineno}: duplicate id {item_id!r}, already used on line {line}{same}"
            )
        first_line[item_id] = (lineno, raw)
        return item_id

    def _infer_answer_type(self) -> AnswerType:
        declared = {it.meta.get("answer_type") for it in self._items} - {None}
        if len(declared) == 1:
            return declared.pop()  # type: ignore[return-value]
        if all(it.choices for it in self._items):
            return "mcq"
        if all(it.tests for it in self._items):
            return "code"
        if all(it.answer.strip().lower() in {"yes", "no"} for it in self._items):
            return "yesno"
        return "math"

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.path}: a JSONL task has only the split 'test', not {split!r}")
        return list(self._items)
