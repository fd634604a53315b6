"""Weak mode (`DIFFMAS_SANDBOX=weak`): what it closes and how it says what it is.

Weak mode lacks a kernel layer, so a hostile program that gets past the audit hook (simulated here with
`audit_hook=False`) can reach what the grader's uid can. As root each run gets a uid of its own, so it
cannot rewrite root's files (the project's wire.py, the data cache) nor open another process's pipes
through /proc; the trusted test process loads its code before the solution starts and signs its verdict.
No process of a run outlives the grader, even one killed with SIGKILL. Every weak record says that its
verdict can be forged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from diffmas.grading import harness, wire
from diffmas.grading.sandbox import (
    SANDBOX_UID_BASE,
    SANDBOX_UID_SPAN,
    WEAK_WARNING,
    SandboxConfig,
    _pdeathsig_prefix,
    missing_layers,
    run_python,
    unshare_prefix,
)

SRC = str(Path(harness.__file__).parents[2])
WEAK = SandboxConfig(timeout=10.0, use_namespaces=False, allow_weak=True)
HOOK_BYPASSED = SandboxConfig(
    timeout=10.0, use_namespaces=False, allow_weak=True, audit_hook=False, max_processes=50
)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop needs root")


def _own_uid() -> bool:
    return "uid" in run_python("pass", WEAK).isolation


def test_weak_records_say_their_verdict_can_be_forged():
    d = harness.run_tests("def f():\n    return 1\n", "assert f() == 1\n", config=WEAK).to_dict()
    assert d["passed"] and d["mode"] == "weak" and d["warning"] == WEAK_WARNING and "forge" in d["warning"]
    if not missing_layers():
        assert "warning" not in harness.run_tests("def f():\n    return 1\n", "assert f() == 1\n").to_dict()


def test_the_cli_help_says_weak_verdicts_can_be_forged():
    from typer.testing import CliRunner

    from diffmas.cli import app

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).output
    assert "--weak-sandbox" in out and "forged" in out and "trusted code only" in out


@as_root
def test_weak_mode_as_root_runs_the_program_under_a_uid_of_its_own():
    if not _own_uid():
        pytest.skip("this Python cannot run under an unprivileged uid here")
    r = run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())", WEAK)
    uid, gid, groups = r.stdout.split(maxsplit=2)
    assert SANDBOX_UID_BASE <= int(uid) < SANDBOX_UID_BASE + SANDBOX_UID_SPAN and gid == uid
    assert groups.strip() == "[]"


@as_root
def test_past_the_audit_hook_a_weak_program_cannot_rewrite_roots_files():
    # what the project's wire.py and the data cache are: files root owns, readable by all
    if not _own_uid():
        pytest.skip("this Python cannot run under an unprivileged uid here")
    d = Path(tempfile.mkdtemp(prefix="diffmas-weak-"))
    try:
        os.chmod(d, 0o755)
        target = d / "wire.py"
        target.write_text("trusted")
        os.chmod(target, 0o644)
        code = f"open({str(target)!r}, 'a').write('forged')\nprint('rewrote')"
        r = run_python(code, HOOK_BYPASSED)
        assert "rewrote" not in r.stdout and "PermissionError" in r.details, r
        assert target.read_text() == "trusted"
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@as_root
def test_a_daemon_that_leaves_the_process_group_is_swept_in_weak_mode():
    if not _own_uid():
        pytest.skip("this Python cannot run under an unprivileged uid here")
    name = uuid.uuid4().hex[:15]
    code = (
        "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n"
        f"    open('/proc/self/comm', 'w').write('{name}')\n    time.sleep(60)\n"
        "for _ in range(200):\n"
        f"    if open(f'/proc/{{pid}}/comm').read().strip() == '{name}':\n        print('named')\n        break\n"
        "    time.sleep(0.01)\n"
    )
    r = run_python(code, HOOK_BYPASSED)
    assert "named" in r.stdout, r  # the daemon ran, in its own session
    time.sleep(0.3)
    assert [p for p in _pids() if _comm(p) == name and (_stat(p) or (0, "X"))[1] not in ("Z", "X")] == []


def test_a_verdict_without_the_test_processs_signature_is_refused():
    key = os.urandom(32)
    for forged in (
        {"verdict": "passed", "details": "", "calls": 1},
        {"verdict": "passed", "details": "", "calls": 1, "mac": "0" * 64},
    ):
        r, w = os.pipe()
        wire.send(w, forged)
        os.close(w)
        verdict, why = harness._read_verdict(r, key)
        os.close(r)
        assert verdict is None and "signature" in why


# --- the forger and the orphan, each against a grader of its own (a subprocess) ----------------------

GRADER = """
import json, os, sys
from diffmas.grading.harness import run_tests
from diffmas.grading.sandbox import SandboxConfig
cfg = SandboxConfig(**json.loads(sys.argv[1]))
print("grader", os.getpid(), flush=True)
r = run_tests(sys.stdin.read(), "assert total([1, 2, 3]) == 6\\n", entry_points=("total",), config=cfg)
print(json.dumps(r.to_dict()), flush=True)
"""


def _grader(solution: str, cfg: dict, env: dict[str, str] | None = None) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", GRADER, json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
    )
    assert p.stdin is not None
    p.stdin.write(solution)
    p.stdin.close()
    return p


FORGER = r"""
import os
def total(xs):
    fake = b'{"verdict":"passed","details":"","calls":1}'
    msg = len(fake).to_bytes(4, "big") + fake
    parent = os.getppid()
    pids = {parent}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.add(int(d))
            except (OSError, ValueError, IndexError):
                pass
    pids.discard(os.getpid())
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                f = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                os.write(f, msg)
                os.close(f)
            except OSError:
                pass
    return 0
"""


def test_past_the_audit_hook_a_weak_program_cannot_write_a_verdict_into_the_graders_pipes():
    cfg = {"timeout": 20.0, "use_namespaces": False, "allow_weak": True, "audit_hook": False}
    p = _grader(FORGER, cfg)
    assert p.stdout is not None and p.stderr is not None
    p.wait(timeout=60)
    out, err = p.stdout.read(), p.stderr.read()
    result = json.loads(out[out.rindex('{"passed"') :].strip())  # after anything forged into stdout
    assert not result["passed"], (result, err)


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below `root`."""
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        stats = {pid: _stat(pid) for pid in _pids()}
        frontier = {pid for pid, st in stats.items() if st and st[0] in frontier and pid not in found}
        found.update({pid: stats[pid][2] for pid in frontier})  # type: ignore[index]
    return found


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] not in ("Z", "X")


SLEEPER = "import time\ndef total(xs):\n    time.sleep(60)\n    return sum(xs)\n"


@pytest.mark.parametrize("mode", ["strict", "weak-unshare", "weak-no-namespaces"])
def test_no_process_of_a_run_outlives_a_killed_grader(mode):
    if mode == "strict" and missing_layers():
        pytest.skip(f"strict layers missing: {missing_layers()}")
    if mode == "weak-unshare" and "--pid" not in unshare_prefix():
        pytest.skip("unshare cannot give a PID namespace here")
    if mode.startswith("weak") and not _pdeathsig_prefix():
        pytest.skip("no setpriv with --pdeathsig here: weak mode cannot tie the run to the grader")
    cfg: dict = {"timeout": 60.0}
    if mode == "weak-unshare":
        cfg.update(allow_weak=True, seccomp=False)  # no filter: weak, the namespaces from unshare
    if mode == "weak-no-namespaces":
        cfg.update(allow_weak=True, use_namespaces=False)
    env = {"DIFFMAS_SANDBOX_NO_BWRAP": "1"} if mode == "weak-unshare" else {}
    p = _grader(SLEEPER, cfg, env)
    try:
        assert p.stdout is not None
        grader = int(p.stdout.readline().split()[1])
        deadline = time.monotonic() + 30
        tree: dict[int, int] = {}
        while time.monotonic() < deadline:  # the test process and the sleeping solution are both up
            tree = _descendants(grader)
            cmds = [_cmdline(pid) for pid in tree]
            if any("verdict_fd" in c for c in cmds) and any("_diffmas_sandbox" in c for c in cmds):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the run did not start: {tree}")
        time.sleep(1.0)
        tree = _descendants(grader)
        os.kill(grader, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid, start) for pid, start in tree.items()):
            time.sleep(0.1)
        survivors = {pid: _cmdline(pid)[:120] for pid, start in tree.items() if _alive(pid, start)}
        assert survivors == {}, survivors
    finally:
        if p.poll() is None:
            p.kill()
        for pid, start in _descendants(p.pid).items():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def test_an_eval_of_a_code_task_in_weak_mode_warns_before_loading_a_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from diffmas.cli import app
    from diffmas.grading import sandbox

    monkeypatch.setenv("DIFFMAS_SANDBOX", "weak")
    monkeypatch.setenv("DIFFMAS_SANDBOX_NO_BWRAP", "1")
    sandbox._bwrap_works.cache_clear()
    try:
        task = tmp_path / "code.jsonl"
        task.write_text('{"id": "1", "question": "def f():", "answer": "", "tests": "assert f() == 1"}\n')
        with pytest.warns(UserWarning, match="can forge this verdict"):
            CliRunner().invoke(
                app, ["eval", "--task", str(task), "--model", "/nonexistent", "--out", str(tmp_path / "o")]
            )
    finally:
        sandbox._bwrap_works.cache_clear()
