"""File records of caches: size always checked, sha256 once per process per file version."""

from __future__ import annotations

import os

from diffmas import integrity


def test_sha256_is_memoised_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    integrity.forget_hashes()
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    first = integrity.sha256_memo(path)
    assert integrity.sha256_memo(path) == first and len(hashed) == 1
    path.write_bytes(b"b" * 100)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a distinct mtime even on coarse clocks
    assert integrity.sha256_memo(path) != first and len(hashed) == 2


def test_first_mismatch_names_changed_missing_and_unexpected_files(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    files = integrity.record_files(tmp_path)
    assert integrity.first_mismatch(tmp_path, files) is None
    (tmp_path / "c").write_bytes(b"3")
    assert "c was not there" in integrity.first_mismatch(tmp_path, files)
    (tmp_path / "c").unlink()
    (tmp_path / "b").write_bytes(b"22")
    assert "b has 2 bytes, 1 were recorded" in integrity.first_mismatch(tmp_path, files)
    (tmp_path / "a").unlink()
    assert integrity.first_mismatch(tmp_path, files).endswith("a is missing")


def test_a_pin_catches_a_file_whose_record_was_rewritten_with_it(tmp_path):
    import hashlib

    path = tmp_path / "tests.py"
    path.write_bytes(b"assert f(1) == 2")
    pins = {"pkg-1.0/tests.py": hashlib.sha256(b"assert f(1) == 2").hexdigest()}
    assert integrity.pinned_mismatch(path, "pkg-1.0/tests.py", pins) is None
    path.write_bytes(b"pass")
    integrity.forget_hashes()
    record = integrity.record(path)  # what an editor of the cache writes beside it
    assert integrity.mismatch(path, record) is None
    assert "pinned in diffmas.pins for pkg-1.0/tests.py" in integrity.pinned_mismatch(
        path, "pkg-1.0/tests.py", pins
    )
    assert integrity.pinned_mismatch(path, "other/tests.py", pins) is None  # nothing pinned: records only
    path.unlink()
    assert integrity.pinned_mismatch(path, "pkg-1.0/tests.py", pins).endswith("is missing")
    assert integrity.pinned_bytes_mismatch(b"assert f(1) == 2", "pkg-1.0/tests.py", pins, "a.whl") is None
    assert "from a.whl does not match" in integrity.pinned_bytes_mismatch(
        b"pass", "pkg-1.0/tests.py", pins, "a.whl"
    )


def test_a_file_slipped_among_pinned_ones_is_unpinned():
    pins = {"pkg-1.0/data/a.toml": "0" * 64}
    keys = ["pkg-1.0/data/a.toml", "pkg-1.0/data/b.toml", "pkg-1.0/other/c.toml"]
    assert integrity.unpinned(keys, "pkg-1.0/data/", pins) == ["pkg-1.0/data/b.toml"]
    assert integrity.unpinned(keys, "pkg-1.0/other", pins) == []  # a folder nothing pins is not checked
