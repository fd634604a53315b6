"""Correct programs the grader used to fail: big ints across the wire, /tmp and tempfile, threads.

Each ran fine outside the sandbox and was graded `error` or `refused` inside it; each now passes, and
the limit that remains (weak mode) is checked to say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diffmas.grading import wire
from diffmas.grading.harness import run_tests
from diffmas.grading.sandbox import SandboxConfig, missing_layers, run_python

strict_only = pytest.mark.skipif(bool(missing_layers()), reason=f"strict layers missing: {missing_layers()}")
CFG = SandboxConfig(timeout=10.0)


@pytest.mark.parametrize(
    "value",
    [10**5000, -(10**5000) + 7, 2**20000, -1, 0, 1 << 4096, -(1 << 4097)],
    ids=["10^5000", "-10^5000+7", "2^20000", "-1", "0", "2^4096", "-2^4097"],
)
def test_ints_of_any_size_cross_the_wire_exactly(value):
    tree = wire.encode(value)
    assert type(wire.decode(tree)) is int and wire.decode(tree) == value
    r, w = __import__("os").pipe()
    wire.send(w, {"value": tree})
    assert wire.decode(wire.receive(r)["value"]) == value  # type: ignore[index]


@pytest.mark.parametrize("body", ["", "-", "xyz", "0x10", " 1"])
def test_a_malformed_big_int_is_not_plain_data(body):
    with pytest.raises(wire.NotPlainData):
        wire.decode({"i": body})


def test_a_solution_returning_and_taking_an_int_over_4300_digits_passes():
    tests = (
        "assert power(10, 5000) == 10 ** 5000\n"
        "assert bits(10 ** 5000) == (10 ** 5000).bit_length()\n"
        "assert power(-3, 9001) == (-3) ** 9001\n"
    )
    solution = "def power(b, e):\n    return b ** e\n\ndef bits(n):\n    return n.bit_length()\n"
    r = run_tests(solution, tests, config=CFG)
    assert r.passed, r
    assert not run_tests(
        "def power(b, e):\n    return b ** e + 1\ndef bits(n):\n    return 0\n", tests, config=CFG
    ).passed


TEMP_USER = """
import os, tempfile
def roundtrip(text):
    with tempfile.TemporaryFile("w+") as f:
        f.write(text)
        f.seek(0)
        a = f.read()
    with tempfile.NamedTemporaryFile("w+", suffix=".txt") as f:
        f.write(text)
        f.flush()
        b = open(f.name).read()
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "x"), "w") as f:
        f.write(text)
    c = open(os.path.join(d, "x")).read()
    return [a, b, c]
"""


def test_tempfile_works_in_every_mode():
    tests = "assert roundtrip('hi') == ['hi', 'hi', 'hi']\n"
    for cfg in (CFG, SandboxConfig(timeout=10.0, use_namespaces=False, allow_weak=True)):
        r = run_tests(TEMP_USER, tests, config=cfg)
        assert r.passed, (cfg.use_namespaces, r)


@strict_only
def test_writing_to_tmp_works_in_the_sandboxs_own_tmp():
    name = f"diffmas-probe-{__import__('uuid').uuid4().hex}"
    code = f"open('/tmp/{name}', 'w').write('x')\nimport os\nos.mkdir('/tmp/{name}.d')\nprint(open('/tmp/{name}').read())"
    r = run_python(code, CFG)
    assert r.passed and r.stdout == "x\n", r
    assert (
        not Path(f"/tmp/{name}").exists() and not Path(f"/tmp/{name}.d").exists()
    )  # the host's /tmp untouched


def test_weak_mode_keeps_the_hosts_tmp_out_of_reach():
    # weak mode has no mount view: /tmp is the machine's, so writing there stays refused (tempfile still
    # works: TMPDIR is the work dir); docs/sandbox.md says so
    r = run_python(
        "open('/tmp/diffmas-weak-probe', 'w')",
        SandboxConfig(timeout=5.0, use_namespaces=False, allow_weak=True),
    )
    assert r.reason == "refused" and not Path("/tmp/diffmas-weak-probe").exists()


THREADS = """
import threading
from concurrent.futures import ThreadPoolExecutor
def squares(xs):
    out = {}
    def work(x):
        out[x] = x * x
    ts = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda x: x * x, xs))
    assert again == [out[x] for x in xs]
    return again
"""


@strict_only
def test_a_solution_that_starts_threads_passes():
    tests = "assert squares([1, 2, 3, 4]) == [1, 4, 9, 16]\n"
    r = run_tests(THREADS, tests, config=CFG)
    assert r.passed, r


@strict_only
def test_threads_stay_bounded_by_max_threads():
    code = (
        "import threading, time\nn = 0\ntry:\n    for _ in range(1000):\n"
        "        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n        n += 1\n"
        "except RuntimeError:\n    pass\nprint(n)\n"
    )
    r = run_python(code, SandboxConfig(timeout=10.0, max_threads=5))
    assert r.passed and int(r.stdout) == 5, r
