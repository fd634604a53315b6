"""Hostile code in the sandbox: each attack is stopped or refused, reported, and the next run goes on.

Every test runs twice: with the namespaces `unshare` gives us (when the machine allows them) and without,
so the in-process defences (audit hook, rlimits, process group) are checked on their own too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from diffmas.grading.sandbox import SandboxConfig, missing_layers, run_many, run_python, unshare_prefix


@pytest.fixture(params=["strict", "weak"])
def cfg(request) -> SandboxConfig:
    if request.param == "strict" and missing_layers():
        pytest.skip(f"strict sandbox layers missing here: {missing_layers()}")
    if request.param == "strict":
        return SandboxConfig(timeout=2.0, memory_mb=512)
    return SandboxConfig(timeout=2.0, memory_mb=512, use_namespaces=False, allow_weak=True)


def test_clean_code_passes(cfg):
    r = run_python("print('hello')", cfg)
    assert r.passed and r.reason == "passed" and r.stdout == "hello\n"


def test_assertion_is_a_failure_with_the_message(cfg):
    r = run_python("assert 1 + 1 == 3, 'math is broken'", cfg)
    assert not r.passed and r.reason == "failed"
    assert "math is broken" in r.details


def test_exception_is_an_error(cfg):
    r = run_python("raise KeyError('k')", cfg)
    assert r.reason == "error" and "KeyError" in r.details


def test_syntax_error_is_the_candidates_error(cfg):
    r = run_python("def f(:\n    return [1, 2", cfg)  # a truncated answer
    assert r.reason == "error" and "SyntaxError" in r.details


def test_infinite_loop_times_out(cfg):
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", cfg)
    assert r.reason == "timeout" and not r.passed
    assert time.monotonic() - t0 < cfg.timeout + 3


def test_sleeping_past_the_deadline_times_out(cfg):
    r = run_python("import time\ntime.sleep(60)", cfg)
    assert r.reason == "timeout"


def test_cpu_rlimit_backs_up_the_wall_clock():
    r = run_python("while True:\n    pass", SandboxConfig(timeout=10, cpu_seconds=1))
    assert r.reason == "timeout" and r.duration < 5


def test_fork_bomb_is_refused(cfg):
    r = run_python("import os\nwhile True:\n    os.fork()", cfg)
    assert r.reason == "refused" and "fork" in r.details


def test_subprocess_and_multiprocessing_are_refused(cfg):
    assert run_python("import subprocess\nsubprocess.run(['true'])", cfg).reason == "refused"
    assert run_python("import os\nos.system('true')", cfg).reason == "refused"
    mp = "import multiprocessing as m\np = m.Process(target=print)\np.start()\np.join()"
    assert run_python(mp, cfg).reason == "refused"


def test_ctypes_escape_is_refused(cfg):
    r = run_python("import ctypes\nctypes.CDLL(None).fork()", cfg)
    assert r.reason == "refused"


def test_refusal_cannot_be_caught(cfg):
    code = "import os\ntry:\n    os.fork()\nexcept BaseException:\n    pass\nprint('escaped')"
    r = run_python(code, cfg)
    assert r.reason == "refused" and "escaped" not in r.stdout


def test_memory_bomb_is_stopped(cfg):
    cfg = SandboxConfig(**{**cfg.__dict__, "timeout": 8.0})
    assert run_python("x = bytearray(8 * 1024**3)", cfg).reason == "memory"
    grow = "chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)"
    assert run_python(grow, cfg).reason == "memory"


def test_socket_connect_is_refused(cfg):
    r = run_python("import socket\ns = socket.socket()\ns.connect(('1.1.1.1', 80))", cfg)
    assert r.reason == "refused" and "socket" in r.details
    r = run_python("import socket\nsocket.create_connection(('example.org', 80), timeout=1)", cfg)
    assert r.reason == "refused"


def test_network_namespace_has_no_route_even_when_sockets_are_allowed():
    if not unshare_prefix():
        pytest.skip("unshare namespaces are not available here")
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(1)\n"
        "try:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    )
    r = run_python(code, SandboxConfig(timeout=3, allow_network=True))
    assert r.passed and "blocked" in r.stdout


def test_writing_outside_the_work_dir_is_refused(cfg, tmp_path):
    # tmp_path lives in the host's /tmp: in strict mode the sandbox's /tmp is its own tmpfs, where the
    # folder is not there (an error); in weak mode the audit hook refuses the write
    outside = {"refused", "error"} if "mount-view" in run_python("pass", cfg).isolation else {"refused"}
    target = tmp_path / "escape.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')", cfg)
    assert r.reason in outside and not target.exists()
    r = run_python(f"import os\nos.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)", cfg)
    assert r.reason in outside and not target.exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    assert run_python(f"import os\nos.remove({str(victim)!r})", cfg).reason in outside
    assert run_python(f"import shutil\nshutil.rmtree({str(tmp_path)!r})", cfg).reason in outside
    assert victim.read_text() == "keep me"
    r = run_python("import os\nos.chdir('/tmp')\nopen('escape2.txt', 'w')", cfg)
    assert not Path("/tmp/escape2.txt").exists()  # strict: the sandbox's own /tmp; weak: the host's, refused
    assert r.passed if "mount-view" in r.isolation else r.reason == "refused", r


def test_writing_inside_the_work_dir_is_fine_and_thrown_away(cfg):
    code = "import os\nopen('a.txt', 'w').write('hi')\nos.mkdir('d')\nprint(os.getcwd())\nprint(open('a.txt').read())"
    r = run_python(code, cfg)
    assert r.passed, r.details
    workdir = r.stdout.splitlines()[0]
    assert r.stdout.splitlines()[1] == "hi"
    assert not os.path.exists(workdir)


def test_parent_environment_is_invisible(cfg, monkeypatch):
    monkeypatch.setenv("DIFFMAS_SANDBOX_SECRET", "hunter2-secret")
    r = run_python("import os\nprint(os.environ.get('DIFFMAS_SANDBOX_SECRET'))\nprint(dict(os.environ))", cfg)
    assert r.passed and "hunter2-secret" not in r.stdout
    steal = "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())"
    r = run_python(steal, cfg)
    assert r.reason == "refused" and "hunter2-secret" not in r.stdout
    r = run_python("import os\nprint(open('/proc/self/../1/environ', 'rb').read())", cfg)
    assert "hunter2-secret" not in r.stdout


def test_early_exit_is_not_a_pass(cfg):
    assert run_python("import sys\nsys.exit(0)\nassert False", cfg).reason == "error"
    assert run_python("import os\nos._exit(0)\nassert False", cfg).reason == "error"


def test_output_is_capped(cfg):
    r = run_python(
        "print('x' * 10**7)",
        SandboxConfig(
            timeout=5, max_output_bytes=1000, use_namespaces=cfg.use_namespaces, allow_weak=cfg.allow_weak
        ),
    )
    assert r.passed and r.truncated and len(r.stdout) == 1000


def test_numpy_works_inside(cfg):
    r = run_python("import numpy as np\nassert np.arange(4).sum() == 6", cfg)
    assert r.passed, r.details


def test_evaluation_continues_after_hostile_items():
    programs = [
        "while True: pass",
        "import os\nwhile True: os.fork()",
        "x = bytearray(8 * 1024**3)",
        "import socket\nsocket.socket().connect(('1.1.1.1', 80))",
        "open('/etc/diffmas_evil', 'w')",
        "assert 2 + 2 == 4\nprint('ok')",
    ]
    results = run_many(programs, SandboxConfig(timeout=1.5, memory_mb=512), workers=2)
    assert [r.reason for r in results] == ["timeout", "refused", "memory", "refused", "refused", "passed"]
    assert results[-1].stdout == "ok\n"


def test_result_serialises():
    d = run_python("pass").to_dict()
    assert d["passed"] is True and d["reason"] == "passed" and "duration" in d
