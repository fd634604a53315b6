"""Size + sha256 records of cached files, so that a cache edited or corrupted after it was written is noticed, and
sha256 pins in the code, so that an edit that rewrites the record too is noticed as well.

The converted model folders and the benchmark files extracted from PyPI archives are written once and read by
every later run; without a record, corrupted safetensors bytes, an edited `config.json` or an edited test in a
cached benchmark would be used silently. Writers record every file (`record_files`); readers check them
(`first_mismatch`): the size always, the sha256 once per process per file version (keyed on device, inode,
mtime and size, so a rename does not force a rehash but any rewrite does).

A record lives beside the file it describes, so whoever can edit the file can edit its record. The trusted anchor
is `diffmas.pins`: the sha256 of every file diffmas caches, in the package's own code. `pinned_mismatch` and
`pinned_bytes_mismatch` check a file, or bytes about to be cached, against a pin table (a parameter, so a test can
pass a small one); a name without a pin in a table that pins its folder is refused too (`unpinned`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypedDict


class FileRecord(TypedDict):
    size: int
    sha256: str


_HASHED: dict[tuple[int, int, int, int], str] = {}  # (st_dev, st_ino, st_mtime_ns, st_size) -> sha256
_TENSORS: dict[tuple[int, int, int, int], str] = {}  # tensor_digest's memo


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hash in 1 MiB chunks: model files are hundreds of MB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_memo(path: Path) -> str:
    """`sha256_file`, computed once per process for each version of the file."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


def tensor_digest(path: Path) -> str:
    """sha256 over a safetensors file's tensors (name, dtype, shape and bytes, in name order), not its header's
    formatting or metadata: the same weights give the same digest whichever library release wrote the file.
    Computed once per process for each version of the file."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _TENSORS:
        return _TENSORS[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(st.st_size - 8, 100 << 20):
            raise ValueError(f"{path} is not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path} is not a safetensors file ({e})") from None
        base = 8 + n
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            begin, end = info["data_offsets"]
            digest.update(json.dumps([name, info["dtype"], info["shape"]]).encode())
            f.seek(base + begin)
            left = end - begin
            while left > 0:
                chunk = f.read(min(left, 1 << 22))
                if not chunk:
                    raise ValueError(f"{path} is truncated (tensor {name})")
                digest.update(chunk)
                left -= len(chunk)
    _TENSORS[key] = digest.hexdigest()
    return _TENSORS[key]


def forget_hashes() -> None:
    """Drop the memo (what a fresh process sees); for tests."""
    _HASHED.clear()
    _TENSORS.clear()


def record(path: Path) -> FileRecord:
    return {"size": os.stat(path).st_size, "sha256": sha256_memo(path)}


def record_files(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, FileRecord]:
    """A record of every file under `root` (relative POSIX paths), except hidden ones and the names in `skip`."""
    return {rel: record(root / rel) for rel in record_names(root, skip)}


def mismatch(path: Path, expected: FileRecord) -> str | None:
    """Why `path` does not match its record (None when it does), naming the file."""
    if not path.is_file():
        return f"{path} is missing"
    size = os.stat(path).st_size
    if size != expected["size"]:
        return f"{path} has {size:,} bytes, {expected['size']:,} were recorded when it was cached"
    if sha256_memo(path) != expected["sha256"]:
        return f"{path} does not match the sha256 recorded when it was cached (edited or corrupted)"
    return None


def first_mismatch(
    root: Path, files: dict[str, FileRecord], skip: frozenset[str] = frozenset()
) -> str | None:
    """The first problem of a cached folder against its records: a changed, missing or unexpected file."""
    for rel, expected in sorted(files.items()):
        problem = mismatch(root / rel, expected)
        if problem:
            return problem
    extra = sorted(set(record_names(root, skip)) - set(files))
    return f"{root / extra[0]} was not there when the folder was cached" if extra else None


def record_names(root: Path, skip: frozenset[str] = frozenset()) -> list[str]:
    """The relative paths `record_files` would record, without hashing anything."""
    names = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in skip and not any(p.startswith(".") for p in Path(rel).parts):
            names.append(rel)
    return names


def pinned_mismatch(path: Path, key: str, pins: Mapping[str, str]) -> str | None:
    """Why `path` does not match the sha256 pinned for `key` (None when it does, or when nothing is pinned)."""
    expected = pins.get(key)
    if expected is None:
        return None
    if not path.is_file():
        return f"{path} is missing"
    if sha256_memo(path) != expected:
        return f"{path} does not match the sha256 pinned in diffmas.pins for {key} (edited or corrupted)"
    return None


def pinned_bytes_mismatch(data: bytes, key: str, pins: Mapping[str, str], source: str) -> str | None:
    """Why `data` (about to be cached as `key`, taken from `source`) does not match its pin (None when it does)."""
    expected = pins.get(key)
    if expected is None or hashlib.sha256(data).hexdigest() == expected:
        return None
    return f"{key} from {source} does not match the sha256 pinned in diffmas.pins (the archive was altered)"


def unpinned(keys: Iterable[str], folder: str, pins: Mapping[str, str]) -> list[str]:
    """The `keys` under `folder` that have no pin although other files of `folder` do: a file slipped in among
    pinned ones (a folder nothing pins is not checked, and gives [])."""
    prefix = folder.rstrip("/") + "/"
    if not any(k.startswith(prefix) for k in pins):
        return []
    return sorted(k for k in keys if k.startswith(prefix) and k not in pins)
