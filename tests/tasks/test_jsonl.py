"""Local JSONL task files: bad rows are errors naming the file and line; ids are strings and unique."""

from __future__ import annotations

import json

import pytest

from diffmas.tasks.jsonl import JsonlTask


def _write(tmp_path, *rows, raw: bytes = b"") -> str:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join((json.dumps(r) + "\n").encode() for r in rows) + raw)
    return str(path)


def test_ids_are_normalised_to_strings(tmp_path):
    task = JsonlTask(
        _write(tmp_path, {"id": 7, "question": "q", "answer": 3}, {"question": "r", "answer": "x"})
    )
    assert [it.id for it in task.load()] == ["7", "t-1"]
    assert task.load()[0].answer == "3"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"id": 1, "question": "a", "answer": "1"}, {"id": "1", "question": "b", "answer": "2"}],
            r"t\.jsonl:2: duplicate id '1', already used on line 1 \(1 and '1' are the same id",
        ),
        (
            [{"id": "a", "question": "a", "answer": "1"}, {"id": "a", "question": "b", "answer": "2"}],
            r"t\.jsonl:2: duplicate id 'a', already used on line 1$",
        ),
        ([{"id": "a", "question": "a", "answer": None}], r"t\.jsonl:1: field 'answer' .* got null"),
        ([{"id": "a", "question": "a", "answer": ["x"]}], r"t\.jsonl:1: field 'answer' .* got list"),
        (
            [{"id": 1.5, "question": "a", "answer": "1"}],
            r"t\.jsonl:1: field 'id' must be a string or an integer",
        ),
        (
            [{"question": "a", "answer": "1"}, {"question": "b", "answer": True}],
            r"t\.jsonl:2: field 'answer' must be a string or a finite number, got true$",
        ),
        ([{"question": "a", "answer": float("nan")}], r"t\.jsonl:1: field 'answer' .* got nan$"),
        ([{"question": "a", "answer": float("-inf")}], r"t\.jsonl:1: field 'answer' .* got -inf$"),
        (
            [{"question": "a", "answer": "1", "tests": ["assert f() == 1"]}],
            r"t\.jsonl:1: field 'tests' must be a string of Python test code, got list",
        ),
        (
            [{"question": "a", "answer": "1", "tests": "assert f() == 1", "timeout": "soon"}],
            r"t\.jsonl:1: field 'timeout' must be a positive number of seconds, got 'soon'",
        ),
        (
            [{"question": "a", "answer": "1", "tests": "assert f() == 1", "timeout": 0}],
            r"t\.jsonl:1: field 'timeout' must be a positive number of seconds, got 0",
        ),
        (
            [{"question": "a", "answer": "1", "tests": "assert f() == 1", "timeout": True}],
            r"t\.jsonl:1: field 'timeout' must be a positive number of seconds, got True",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        JsonlTask(_write(tmp_path, *rows))


def test_non_utf8_names_file_and_line(tmp_path):
    path = _write(tmp_path, {"question": "q", "answer": "1"}, raw=b'{"question": "\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not valid UTF-8"):
        JsonlTask(path)


def test_numbers_and_timeouts_that_are_fine_still_load(tmp_path):
    task = JsonlTask(
        _write(
            tmp_path,
            {"question": "a", "answer": 2.5, "tests": "assert f() == 1", "timeout": 3},
            {"question": "b", "answer": -4, "tests": "assert f() == 2", "timeout": 0.5},
        )
    )
    assert [it.answer for it in task.load()] == ["2.5", "-4"]
    assert [it.meta["timeout"] for it in task.load()] == [3, 0.5]
    assert task.answer_type == "code"


def test_an_oversized_item_is_refused_before_parsing(tmp_path):
    from diffmas.tasks.base import MAX_ITEM_BYTES

    fits = {"question": "x" * (MAX_ITEM_BYTES - 40), "answer": "1"}
    assert len(json.dumps(fits)) <= MAX_ITEM_BYTES
    JsonlTask(_write(tmp_path, fits))
    huge = {"question": "x" * (10 * MAX_ITEM_BYTES), "answer": "1"}
    with pytest.raises(
        ValueError, match=r"t\.jsonl:2: an item of 10,485,7\d\d bytes, over the limit of 1,048,576"
    ):
        JsonlTask(_write(tmp_path, {"question": "a", "answer": "1"}, huge))


def test_python_rows_get_the_same_checks(tmp_path):
    from diffmas.data import items_task

    with pytest.raises(
        ValueError,
        match=r"^python-data-train: row 2: field .answer. must be a string or a finite number, got true$",
    ):
        items_task([{"question": "a", "answer": "1"}, {"question": "b", "answer": True}])
    with pytest.raises(
        ValueError,
        match=r"^python-data-train: row 1: field .timeout. must be a positive number of seconds, got .soon.$",
    ):
        items_task([{"question": "a", "answer": "1", "tests": "assert True", "timeout": "soon"}])


# ---------------------------------------------------------------------------- CSV and parquet (datasets.load_dataset)
ROWS = [
    {"id": "a", "question": "2+2?", "answer": "4"},
    {"id": 7, "question": "Pick one", "answer": "B", "choices": ["A", "B"], "answer_type": "mcq"},
    {"question": "x", "answer": "3.50", "views": ["left", "right"], "source": "hand"},
]


def _csv(tmp_path, header: list[str], *lines: list[str], name: str = "t.csv") -> str:
    import csv

    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(lines)
    return str(path)


def _parquet(tmp_path, rows: list[dict], name: str = "t.parquet") -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / name
    columns = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist alone takes the first row's keys
    pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), path)
    return str(path)


def _as_csv_cells(row: dict) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in row.items()}


def _view(task) -> list[tuple]:
    return [(it.id, it.question, it.answer, it.choices, it.views, it.meta) for it in task.load()]


def test_csv_and_parquet_give_the_items_jsonl_gives(tmp_path):
    from diffmas.tasks import get_task

    header = ["id", "question", "answer", "choices", "views", "answer_type", "source"]
    lines = [[_as_csv_cells(r).get(k, "") for k in header] for r in ROWS]
    from_jsonl = JsonlTask(_write(tmp_path, *ROWS))
    from_csv = get_task(_csv(tmp_path, header, *lines))
    from_parquet = get_task(
        _parquet(tmp_path, [{**r, "id": str(r.get("id", f"t-{i}"))} for i, r in enumerate(ROWS)])
    )
    assert isinstance(from_csv, JsonlTask) and isinstance(from_parquet, JsonlTask)
    assert _view(from_csv) == _view(from_jsonl) == _view(from_parquet)
    assert from_csv.load()[2].answer == "3.50"  # a CSV cell stays text: "3.50" is not the float 3.5
    assert from_csv.load()[0].meta == {}  # empty cells are absent fields, not ""
    assert from_csv.answer_type == from_parquet.answer_type == "mcq"


def test_parquet_keeps_its_column_types_and_nulls_are_absent(tmp_path):
    task = JsonlTask(
        _parquet(
            tmp_path,
            [{"question": "a", "answer": 3, "tests": None}, {"question": "b", "answer": 4, "tests": None}],
        )
    )
    assert [it.answer for it in task.load()] == ["3", "4"]
    assert [it.tests for it in task.load()] == [None, None]
    assert [it.id for it in task.load()] == ["t-0", "t-1"]


@pytest.mark.parametrize(
    ("header", "lines", "message"),
    [
        (["question"], [["q"]], r"t\.csv: row 1: missing field 'answer'$"),
        (["question", "answer"], [["q", "1"], ["r", ""]], r"t\.csv: row 2: missing field 'answer'$"),
        (
            ["id", "question", "answer"],
            [["x", "q", "1"], ["x", "r", "2"]],
            r"t\.csv: row 2: duplicate id 'x', already used on row 1$",
        ),
        (
            ["question", "answer", "choices"],
            [["q", "A", "A, B"]],
            r"t\.csv: row 1: field 'choices' must be a JSON list of strings in a CSV cell",
        ),
        (
            ["question", "answer", "views"],
            [["q", "A", "[]"]],
            r"t\.csv: row 1: field 'views' must be a non-empty list of strings",
        ),
        (
            ["question", "answer", "tests", "timeout"],
            [["q", "1", "assert True", "soon"]],
            r"t\.csv: row 1: field 'timeout' must be a positive number of seconds, got 'soon'",
        ),
        (
            ["question", "answer", "answer_type"],
            [["q", "1", "essay"]],
            r"t\.csv: row 1: field 'answer_type' must be one of",
        ),
    ],
)
def test_bad_csv_rows_name_file_row_and_field(tmp_path, header, lines, message):
    with pytest.raises(ValueError, match=message):
        JsonlTask(_csv(tmp_path, header, *lines))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"question": "a", "answer": "1"}, {"question": "b", "answer": None}],
            r"t\.parquet: row 2: field 'answer' .* got null$",
        ),
        (
            [{"question": "a", "answer": True}],
            r"t\.parquet: row 1: field 'answer' must be a string or a finite number, got true$",
        ),
        ([{"question": "a", "answer": float("nan")}], r"t\.parquet: row 1: field 'answer' .* got nan$"),
        ([{"question": 1, "answer": "1"}], r"t\.parquet: row 1: field 'question' must be a string$"),
        (
            [{"question": "a", "answer": "1", "tests": "assert True", "timeout": -1.0}],
            r"t\.parquet: row 1: field 'timeout' .* got -1\.0$",
        ),
    ],
)
def test_bad_parquet_rows_name_file_row_and_field(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        JsonlTask(_parquet(tmp_path, rows))


def test_an_unreadable_table_is_one_line(tmp_path, capfd):
    bad = tmp_path / "t.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"^\S*t\.parquet: not a readable parquet file \(") as e:
        JsonlTask(bad)
    assert "\n" not in str(e.value) and "magic bytes" in str(e.value)  # the reader's reason, once
    assert (
        "Failed to read" not in capfd.readouterr().err
    )  # datasets' own log line of the same error is silenced
    empty = _csv(tmp_path, ["question", "answer"])
    with pytest.raises(ValueError, match=r"t\.csv: no items$"):
        JsonlTask(empty)
