"""Records on disk under faults: torn tails are moved aside (never appended onto), a torn row in the middle is an
error naming file and line, rows are whole lines, output directories are locked and checked."""

from __future__ import annotations

import json
import multiprocessing
import os
import re

import pytest

from diffmas.records import (
    OutputDirError,
    RecordRepairWarning,
    append_jsonl,
    locked_dir,
    prepare_dir,
    read_jsonl,
    reorder_jsonl,
    repair_jsonl,
    unique_by_id,
)


def test_repair_moves_a_torn_tail_aside_and_keeps_every_complete_row(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "outp')
    with pytest.warns(RecordRepairWarning, match=r"samples\.jsonl:3: torn last line"):
        rows = repair_jsonl(path)
    assert rows == [{"id": "a"}, {"id": "b"}]
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'
    (sidecar,) = tmp_path.glob("samples.jsonl.torn-*")
    assert sidecar.read_bytes() == b'{"id": "c", "outp'
    append_jsonl(path, [{"id": "c"}])  # the rerun's row lands on a line of its own
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}, {"id": "c"}]


def test_repair_of_a_whole_file_changes_nothing(tmp_path, recwarn):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n')
    assert repair_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    assert not list(tmp_path.glob("*.torn-*")) and not recwarn.list
    assert repair_jsonl(tmp_path / "absent.jsonl") == []


def test_a_complete_last_row_without_its_newline_is_kept_and_terminated(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}')
    assert repair_jsonl(path) == [{"step": 1}, {"step": 2}]
    append_jsonl(path, [{"step": 3}])
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_a_torn_row_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b", "x\n{"id": "c"}\n')
    for read in (repair_jsonl, read_jsonl):
        with pytest.raises(ValueError, match=r"samples\.jsonl:2: not valid JSON"):
            read(path)
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b", "x\n{"id": "c"}\n'  # left as it was


def test_non_utf8_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(ValueError, match=r"samples\.jsonl:2: not valid UTF-8"):
        read_jsonl(path)


def test_append_writes_each_row_as_one_whole_line(tmp_path, monkeypatch):
    path = tmp_path / "samples.jsonl"
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr("diffmas.records.os.write", recording_write)
    rows = [{"id": "a", "text": "é" * 1000}, {"id": "b"}]
    append_jsonl(path, rows)
    assert [json.loads(w) for w in writes] == rows and all(w.endswith(b"\n") for w in writes)


def test_unique_by_id_counts_an_id_once_and_compares_ids_as_strings(tmp_path):
    rows = [{"id": "1", "v": 0}, {"id": 1, "v": 1}, {"id": "2", "v": 2}]
    with pytest.warns(RecordRepairWarning, match="1 duplicate rows"):
        assert unique_by_id(rows, tmp_path) == [{"id": "1", "v": 0}, {"id": "2", "v": 2}]


def _hold_lock(path, ready, release):
    with locked_dir(path):
        ready.set()
        release.wait(30)


def test_a_locked_directory_refuses_a_second_writer(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        busy = rf"in use by another run \(pid {holder.pid}\)"
        with pytest.raises(OutputDirError, match=busy), locked_dir(tmp_path):
            pass
    finally:
        release.set()
        holder.join(30)
    with locked_dir(tmp_path):  # released when the holder is gone
        pass


def test_a_lock_names_its_holder_and_is_reentrant_after_release(tmp_path):
    with locked_dir(tmp_path):
        assert (tmp_path / ".diffmas.lock").read_text() == str(os.getpid())
        with (
            pytest.raises(
                OutputDirError,
                match=rf"^output directory {re.escape(str(tmp_path))} is in use by another run \(pid ",
            ),
            locked_dir(tmp_path),
        ):  # a second lock in the same process is refused too
            pass
    with locked_dir(tmp_path):
        pass


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with (
        pytest.raises(
            OutputDirError, match=r"^--out .*afile: cannot create the lock file \.diffmas\.lock \("
        ),
        locked_dir(afile, "--out"),
    ):
        pass


def test_prepare_dir_refuses_a_file_and_an_unwritable_directory(tmp_path, monkeypatch):
    afile = tmp_path / "out"
    afile.write_text("x")
    with pytest.raises(OutputDirError, match=r"--out .*out is an existing file"):
        prepare_dir(afile, "--out")
    with pytest.raises(OutputDirError, match="cannot create"):
        prepare_dir(afile / "sub", "--out")

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("diffmas.records.tempfile.TemporaryFile", read_only)
    with pytest.raises(OutputDirError, match=r"run\.out .* is not writable \(Permission denied\)"):
        prepare_dir(tmp_path / "ro", "run.out")


def test_reorder_keeps_each_lines_bytes_and_replaces_the_file_whole(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [b'{"id": "b", "x": 1.10}\n', b'{"id":"a"}\n', b"\n", b'{"id": "c", "t": "\xc3\xa9"}']
    path.write_bytes(b"".join(lines))
    path.chmod(0o640)
    reorder_jsonl(path, lambda r: r["id"])
    assert path.read_bytes() == lines[1] + lines[0] + lines[3] + b"\n"  # bytes kept; blank line gone
    assert path.stat().st_mode & 0o777 == 0o640  # the file's own mode, not the temporary's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary file left
    inode = path.stat().st_ino
    reorder_jsonl(path, lambda r: r["id"])  # already in order: left alone
    assert path.stat().st_ino == inode


def test_reorder_refuses_a_torn_file_and_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "r.jsonl"
    data = b'{"id": "b"}\n{"id": "a"}\n{"id": "c", "t'
    path.write_bytes(data)
    with pytest.raises(ValueError, match="torn last line"):
        reorder_jsonl(path, lambda r: r["id"])
    assert path.read_bytes() == data
