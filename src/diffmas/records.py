"""Per-item records on disk (`samples.jsonl`, `metrics.jsonl`): one reading rule for every reader, torch-free so
that rendering a report never imports the model stack.

The files are append-only and resumed from, so they must stay true when a run is killed mid-write:

- `append_jsonl` writes each row as one complete line in a single `write` on an `O_APPEND` descriptor, then
  fsyncs, so a row is either wholly on disk or a fragment at the very end, never followed by later rows.
- `repair_jsonl` (for writers, before they resume) moves such a torn tail aside into a sidecar file with a warning
  and keeps every complete row; a bad line anywhere else is an error naming the file and line.
- `read_jsonl` (for readers, which must not modify a run) skips a torn tail and raises on any other bad line.
- `reorder_jsonl` puts a finished file's rows in another order by an atomic replace of the whole file, each line's
  bytes kept, so a kill leaves the old file or the new one.
- `locked_dir` holds an exclusive lock on an output directory, so two writers cannot interleave their rows.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_FILE = ".diffmas.lock"


class RecordRepairWarning(UserWarning):
    """A records file was repaired (a torn tail moved aside) or held duplicate rows."""


class OutputDirError(ValueError):
    """An output directory cannot be used: it is a file, not writable, or locked by another run."""


def decode_lines(path: Path, data: bytes) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, ends with a newline) per line; a line that is not UTF-8 is an error naming file and line."""
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if i == last and not raw:
            break  # the empty piece after a final newline
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{i + 1}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            ) from None
        yield i + 1, text, i < last


def _parse(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """Rows of `data`, and the byte offset where a torn last line starts (None when the file is whole).

    A last line that is valid JSON but lacks its newline is a complete row (killed between the row and its newline
    cannot happen with `append_jsonl`, but older writers wrote them separately)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    lines = list(_lines_with_offsets(path, data))
    for lineno, text, start, is_last in lines:
        offset = start
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            if is_last:
                return rows, offset
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            if is_last:
                return rows, offset
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows, None


def _lines_with_offsets(path: Path, data: bytes) -> Iterator[tuple[int, str, int, bool]]:
    """(line number, text, byte offset of its start, is the last non-empty piece) per line."""
    pieces = list(decode_lines(path, data))
    last = max((k for k, (_, text, _) in enumerate(pieces) if text.strip()), default=-1)
    start = 0
    for k, (lineno, text, has_newline) in enumerate(pieces):
        yield lineno, text, start, k == last
        start += len(text.encode("utf-8")) + (1 if has_newline else 0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a run killed mid-write) is skipped, any other bad line is an error."""
    rows, _ = _parse(path, path.read_bytes())
    return rows


def repair_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file about to be resumed ([] when it does not exist).

    A torn last line is moved aside to `<name>.torn-<UTC time>` (kept, not dropped: it may be worth a look) and the
    file truncated to its complete rows, with a warning; appending onto a fragment would corrupt the next row.
    A file whose last row lacks its newline gets one, for the same reason."""
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, torn_at = _parse(path, data)
    if torn_at is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        sidecar = path.with_name(f"{path.name}.torn-{stamp}")
        sidecar.write_bytes(data[torn_at:])
        with path.open("r+b") as f:
            f.truncate(torn_at)
            f.flush()
            os.fsync(f.fileno())
        line = data[:torn_at].count(b"\n") + 1
        warnings.warn(
            f"{path}:{line}: torn last line (a run killed mid-write); moved it to {sidecar.name}, "
            f"kept the {len(rows)} complete rows",
            RecordRepairWarning,
            stacklevel=2,
        )
    elif data and not data.endswith(b"\n"):
        with path.open("ab") as f:
            f.write(b"\n")
    return rows


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows, each as one complete line in one `write`, then fsync: a kill leaves at most a torn tail."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for row in rows:
            _write_all(fd, (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def reorder_jsonl(path: Path, key: Callable[[dict[str, Any]], Any]) -> None:
    """Sort the rows of a JSONL file by `key` (stably), each line's bytes as they were, by writing the new order to
    a temporary file beside it and renaming it over the old one: a kill leaves one whole file or the other. A file
    already in order is left alone. A torn tail refuses: repair it first (`repair_jsonl`)."""
    data = path.read_bytes()
    rows, torn_at = _parse(path, data)
    if torn_at is not None:
        raise ValueError(f"{path}: a torn last line; repair the file before reordering it")
    lines = [line + b"\n" for line in data.split(b"\n") if line.strip()]
    if len(lines) != len(rows):
        raise ValueError(f"{path}: {len(lines)} lines for {len(rows)} rows; cannot reorder it line by line")
    order = sorted(range(len(rows)), key=lambda i: key(rows[i]))
    if order == list(range(len(rows))):
        return
    body = b"".join(lines[i] for i in order)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, path.stat().st_mode & 0o7777)  # mkstemp makes it 0600: keep the file's own mode
        _write_all(fd, body)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    """One `write` of the whole line (regular files take it whole); loop only if the kernel takes less."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def unique_by_id(rows: list[dict[str, Any]], source: Path | str) -> list[dict[str, Any]]:
    """The first row of each id (ids compared as strings); duplicates are dropped with a warning naming them."""
    seen: set[str] = set()
    kept, dropped = [], []
    for row in rows:
        key = str(row.get("id"))
        if key in seen:
            dropped.append(key)
            continue
        seen.add(key)
        kept.append(row)
    if dropped:
        shown = ", ".join(sorted(set(dropped))[:5])
        warnings.warn(
            f"{source}: {len(dropped)} duplicate rows (ids {shown}{', ...' if len(set(dropped)) > 5 else ''}); "
            "each id is counted once, by its first row",
            RecordRepairWarning,
            stacklevel=2,
        )
    return kept


def prepare_dir(path: Path, what: str) -> Path:
    """Create an output directory, or explain (naming `what`, e.g. `--out`) why it cannot be one."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{what} {path} is an existing file, not a directory: choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"{what} {path}: cannot create the directory ({e.strerror})") from None
    try:  # a real write, not os.access: root passes access checks on a read-only mount or directory
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputDirError(
            f"{what} {path} is not writable ({e.strerror}): choose another directory"
        ) from None
    return path


def _write_pid(fd: int) -> None:
    """Record the holder in the lock file, so a refused run can name the process it waits for."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)


def _holder_pid(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


@contextmanager
def locked_dir(path: Path, what: str = "output directory") -> Iterator[None]:
    """Hold an exclusive lock on `path` for the duration; a second holder fails at once with a clear message.

    `filelock.FileLock` (an `flock` on Unix, released by the kernel when the process dies, so a killed run never
    leaves a stale lock); its `on_acquired` hook writes our pid into the lock file for the refusal message."""
    from filelock import FileLock, Timeout

    lock_path = path / LOCK_FILE
    lock = FileLock(lock_path, timeout=0, on_acquired=_write_pid)
    try:
        lock.acquire()
    except Timeout:
        pid = _holder_pid(lock_path)
        raise OutputDirError(
            f"{what} {path} is in use by another run{f' (pid {pid})' if pid else ''}: wait for it to "
            "finish or choose another directory"
        ) from None
    except OSError as e:
        raise OutputDirError(
            f"{what} {path}: cannot create the lock file {lock_path.name} ({e.strerror})"
        ) from None
    try:
        yield
    finally:
        lock.release()
