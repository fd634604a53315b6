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
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        JsonlTask(_write(tmp_path, *rows))


def test_non_utf8_names_file_and_line(tmp_path):
    path = _write(tmp_path, {"question": "q", "answer": "1"}, raw=b'{"question": "\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not valid UTF-8"):
        JsonlTask(path)
