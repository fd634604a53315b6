"""A local task file: any JSONL, CSV or parquet file with `question` and `answer` columns (optional `id`,
`choices`, `tests`, `answer_type`, `timeout` for code items, and `views`: one private string per agent of the
chain) is a task.

Every field is checked when the file is read, so a bad row fails before any model loads, naming file, line (or row)
and field: `answer` is a string or a finite number (not `true`, not `NaN`), `tests` a string, `timeout` a positive
number of seconds, and an item is at most `MAX_ITEM_BYTES` (1 MiB).

JSONL (and `.json`, read as JSON lines) is parsed here line by line with the standard `json` module;
`datasets.load_dataset("json")` would lose what the checks need: arrow unifies a column's types (an answer `3` next
to `2.5` becomes the gold `"3.0"`), reads a missing answer as null, and a bad line surfaces as a generic
`DatasetGenerationError`. CSV and parquet are read by `datasets.load_dataset` ("csv" with every cell as text, so
`"3.50"` stays `"3.50"`; "parquet" with its own column types) and each row then gets the same checks; in a CSV cell,
`choices` and `views` are JSON lists and `timeout` a number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffmas.tasks.base import ANSWER_TYPES, MAX_ITEM_BYTES, AnswerType, Item, Task

TABLE_BUILDERS = {".csv": "csv", ".parquet": "parquet"}  # suffix -> the `datasets` builder that reads it
TASK_FILE_SUFFIXES = frozenset({".jsonl", ".json", *TABLE_BUILDERS})  # a `--task` with one of these is a file
_LIST_FIELDS = ("choices", "views")


class RowChecker:
    """Turns rows into `Item`s with every field checked; an error starts with `at` (e.g. `t.jsonl:3` or
    `t.csv: row 3`) so it names the file and the line or row. Ids are kept unique across the rows it has seen."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[Item] = []
        self._first: dict[str, tuple[str, object]] = {}  # normalised id -> (line/row label, id as written)

    def add(self, row: object, at: str, label: str) -> None:
        """Check `row` and keep its item; `label` ("line 3", "row 3") names it in a duplicate-id error."""
        if not isinstance(row, dict):
            raise ValueError(f"{at}: expected a JSON object, got {type(row).__name__}")
        for key in ("question", "answer"):
            if key not in row:
                raise ValueError(f"{at}: missing field '{key}'")
        _check_answer(row["answer"], at)
        if not isinstance(row["question"], str):
            raise ValueError(f"{at}: field 'question' must be a string")
        choices = row.get("choices")
        if choices is not None and (
            not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
        ):
            raise ValueError(f"{at}: field 'choices' must be a list of strings")
        views = row.get("views")
        if views is not None and (
            not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views)
        ):
            raise ValueError(
                f"{at}: field 'views' must be a non-empty list of strings (one per agent of the chain)"
            )
        tests = row.get("tests")
        if tests is not None and not isinstance(tests, str):
            raise ValueError(
                f"{at}: field 'tests' must be a string of Python test code, got {type(tests).__name__}"
            )
        _check_timeout(row.get("timeout"), at)
        answer_type = row.get("answer_type")
        if answer_type is not None and answer_type not in ANSWER_TYPES:
            raise ValueError(f"{at}: field 'answer_type' must be one of {ANSWER_TYPES}")
        self.items.append(
            Item(
                id=self._item_id(row, at, label),
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

    def _item_id(self, row: dict, at: str, label: str) -> str:
        """The row's id as a string (ids are compared as strings everywhere, so `1` and `"1"` are one id);
        a repeated id is an error naming both lines, since resumption and summaries key on it."""
        raw = row.get("id", f"{self.name}-{len(self.items)}")
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ValueError(f"{at}: field 'id' must be a string or an integer")
        item_id = str(raw)
        if item_id in self._first:
            where, earlier = self._first[item_id]
            same = "" if earlier == raw else f" ({earlier!r} and {raw!r} are the same id as strings)"
            raise ValueError(f"{at}: duplicate id {item_id!r}, already used on {where}{same}")
        self._first[item_id] = (label, raw)
        return item_id


def _check_answer(answer: object, at: str) -> None:
    """A gold answer is a string or a finite number: `null`, `true` or `NaN` would otherwise become the gold
    answers "None", "True" or "nan", which no output matches as meant."""
    number = isinstance(answer, int | float) and not isinstance(answer, bool)
    if isinstance(answer, str) or (number and not (isinstance(answer, float) and not math.isfinite(answer))):
        return
    if answer is None or isinstance(answer, bool):
        got = json.dumps(answer)  # null, true, false: as the file has them
    else:
        got = repr(answer) if isinstance(answer, float) else type(answer).__name__
    raise ValueError(f"{at}: field 'answer' must be a string or a finite number, got {got}")


def _check_timeout(timeout: object, at: str) -> None:
    """A code item's time limit in seconds, checked here rather than by the grader after generation."""
    if timeout is None:
        return
    number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not number or not math.isfinite(timeout) or timeout <= 0:  # type: ignore[arg-type,operator]
        raise ValueError(f"{at}: field 'timeout' must be a positive number of seconds, got {timeout!r}")


def _csv_cell(key: str, text: str, at: str) -> Any:
    """A CSV cell as the JSONL field it stands for: lists from their JSON text, a timeout as a number."""
    if key in _LIST_FIELDS:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                f'{at}: field \'{key}\' must be a JSON list of strings in a CSV cell (e.g. ["A", "B"]), '
                f"got {text!r}"
            ) from None
    if key == "timeout":
        try:
            return float(text)
        except ValueError:
            return text  # the timeout check names it
    return text


def infer_answer_type(items: list[Item]) -> AnswerType:
    """The declared `answer_type` when the rows agree on one, else what every item looks like (choices: mcq, tests:
    code, yes/no answers: yesno), else math."""
    declared = {it.meta.get("answer_type") for it in items} - {None}
    if len(declared) == 1:
        return declared.pop()  # type: ignore[return-value]
    if all(it.choices for it in items):
        return "mcq"
    if all(it.tests for it in items):
        return "code"
    if all(it.answer.strip().lower() in {"yes", "no"} for it in items):
        return "yesno"
    return "math"


def _csv_header(path: Path) -> tuple[list[str], bool]:
    """The column names (the first record), so that `datasets` can be told every column is text, and whether a
    record follows it (`datasets` refuses a header-only file as "no data")."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            return header, any(record for record in reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable csv file ({e})") from None


def table_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a CSV or parquet file through `datasets.load_dataset`; an unreadable file is one line."""
    import logging

    import datasets

    builder = TABLE_BUILDERS[path.suffix.lower()]
    options: dict[str, Any] = {}
    if builder == "csv":  # every cell as text (pandas would read "3.50" as 3.5), and "" or "NA" as written
        header, has_rows = _csv_header(path)
        if not has_rows:
            return
        options = {"features": datasets.Features({name: datasets.Value("string") for name in header})}
        options["keep_default_na"] = False
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.CRITICAL)  # datasets logs the reader's error before raising it: ours says it once
    try:
        data = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as e:  # datasets wraps the reader's error (arrow, pandas) in DatasetGenerationError
        cause = e.__cause__ or e
        detail = " ".join(str(cause).split()) or type(cause).__name__
        raise ValueError(f"{path}: not a readable {builder} file ({detail})") from None
    finally:
        log.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
    yield from data


class JsonlTask(Task):
    """A task read from a local JSONL, CSV or parquet file. Bad rows raise an error naming the file, line (row)
    and field."""

    source = "local file"

    def __init__(self, path: str | Path, answer_type: AnswerType | None = None, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"task file not found: {self.path}")
        self.name = name or self.path.stem
        self._items = self._read()
        self.answer_type = answer_type or self._infer_answer_type()

    def _read(self) -> list[Item]:
        checker = RowChecker(self.name)
        if self.path.suffix.lower() in TABLE_BUILDERS:
            self._read_table(checker)
        else:
            self._read_jsonl(checker)
        if not checker.items:
            raise ValueError(f"{self.path}: no items")
        return checker.items

    def _read_jsonl(self, checker: RowChecker) -> None:
        from diffmas.records import decode_lines

        for lineno, line, _ in decode_lines(self.path, self.path.read_bytes()):
            if not line.strip():
                continue
            at = f"{self.path}:{lineno}"
            size = len(line.encode("utf-8"))
            if size > MAX_ITEM_BYTES:
                raise ValueError(
                    f"{at}: an item of {size:,} bytes, over the limit of {MAX_ITEM_BYTES:,} bytes "
                    "per item (diffmas.tasks.base.MAX_ITEM_BYTES)"
                )
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{at}: invalid JSON ({e.msg})") from e
            checker.add(row, at, f"line {lineno}")

    def _read_table(self, checker: RowChecker) -> None:
        """Rows numbered from 1 (in a CSV, row n is on line n + 1 after the header unless a cell spans lines)."""
        csv = self.path.suffix.lower() == ".csv"
        for n, raw in enumerate(table_rows(self.path), start=1):
            at = f"{self.path}: row {n}"
            size = len(json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8"))
            if size > MAX_ITEM_BYTES:
                raise ValueError(
                    f"{at}: an item of {size:,} bytes, over the limit of {MAX_ITEM_BYTES:,} bytes "
                    "per item (diffmas.tasks.base.MAX_ITEM_BYTES)"
                )
            if csv:  # an empty cell is an absent field, as a key left out of a JSONL row
                row = {k: _csv_cell(k, v, at) for k, v in raw.items() if v != ""}
            else:  # a parquet null is an absent field, except in the required columns (the checks name it)
                row = {k: v for k, v in raw.items() if v is not None or k in ("question", "answer")}
            checker.add(row, at, f"row {n}")

    def _infer_answer_type(self) -> AnswerType:
        return infer_answer_type(self._items)

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.path}: a task file has only the split 'test', not {split!r}")
        return list(self._items)
