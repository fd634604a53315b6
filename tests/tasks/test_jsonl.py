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

    with pytest.raises(ValueError, match=r":2: field 'answer' must be a string or a finite number, got true"):
        items_task([{"question": "a", "answer": "1"}, {"question": "b", "answer": True}])
    with pytest.raises(
        ValueError, match=r":1: field 'timeout' must be a positive number of seconds, got 'soon'"
    ):
        items_task([{"question": "a", "answer": "1", "tests": "assert True", "timeout": "soon"}])
