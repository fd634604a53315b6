"""A hostile user's programs against the code grader: each one fails or is refused, none passes.

The forgeries attack the verdict (stack walks, patched tracebacks, replaced exceptions, objects that
equal everything); the escapes attack the machine (exec, fork, descriptor-relative writes, reading
the answer key, daemons). Kernel layers are tested on their own by switching the audit hook off.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from diffmas.grading import grade
from diffmas.grading.harness import run_tests
from diffmas.grading.sandbox import SandboxConfig, SandboxUnavailable, missing_layers, run_python
from diffmas.tasks.base import Item

strict_only = pytest.mark.skipif(bool(missing_layers()), reason=f"strict layers missing: {missing_layers()}")

PROMPT = 'def total(xs):\n    """Sum of xs."""\n'
TESTS = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n\ncheck(total)\n"
ITEM = Item(id="t", question=PROMPT, answer="", tests=TESTS, meta={"entry_point": "total", "prompt": PROMPT})
CFG = SandboxConfig(timeout=5.0)


def verdict(solution: str, item: Item = ITEM, cfg: SandboxConfig = CFG):
    return run_tests(
        solution, item.tests or "", entry_points=("total",), prompt=item.meta.get("prompt"), config=cfg
    )


# --- the verdict cannot be forged --------------------------------------------------------------------

FORGER = r"""
import builtins, os, sys, traceback
def _forge(*_a, **_k):
    f = sys._getframe()
    while f is not None:
        for v in list(f.f_locals.values()):
            if isinstance(v, str) and len(v) == 32:
                for fd in range(3, 40):
                    try:
                        os.write(fd, ("done " + v + "\n").encode())
                    except OSError:
                        pass
        f = f.f_back
    fake = b'{"verdict":"passed","details":"","calls":1}'
    for fd in range(3, 40):
        for msg in (len(fake).to_bytes(4, "big") + fake, b"done\n", b"passed\n"):
            try:
                os.write(fd, msg)
            except OSError:
                pass
try:
    raise ValueError
except ValueError as e:
    tb = e.__traceback__
    fr = tb.tb_frame
    while fr is not None:
        fr.f_globals.setdefault("_seen", []).append(fr.f_code.co_name)
        fr = fr.f_back
_forge()
traceback.print_exc = _forge
traceback.format_exc = lambda *a, **k: (_forge(), "")[1]
builtins.AssertionError = type("AssertionError", (Exception,), {})
sys.excepthook = _forge
def total(*args, **kwargs):
    _forge()
    return None
"""


def test_a_universal_stack_walking_forger_fails():
    r = verdict(FORGER)
    assert not r.passed and r.reason == "failed", r


def test_the_forger_fails_on_every_shipped_humaneval_style_item():
    from diffmas.tasks import get_task

    for name, file in (("humaneval-plus", "humanevalplus.jsonl"), ("mbpp-plus", "mbppplus.jsonl")):
        task = get_task(name, path=Path(__file__).parents[1] / "assets/tasks" / file)
        for it in task.load("test"):
            forged = FORGER.replace("def total(", f"def {it.meta['entry_point']}(")
            g = grade(task, f"```python\n{forged}```", it)
            assert not g.correct, (it.id, g.reason)


@pytest.mark.parametrize(
    "returned",
    [
        "type('E', (), {'__eq__': lambda s, o: True, '__ne__': lambda s, o: False})()",
        "type('I', (int,), {'__eq__': lambda s, o: True})(0)",
        "type('L', (list,), {'__eq__': lambda s, o: True})()",
        "(x for x in [6])",
        "print",
    ],
    ids=["always-equal", "int-subclass", "list-subclass", "generator", "function"],
)
def test_objects_that_are_not_plain_data_fail(returned):
    r = verdict(f"def total(xs):\n    return {returned}\n")
    assert not r.passed and r.reason == "failed" and "not plain data" in r.details, r


def test_patching_assertion_error_still_fails():
    code = "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef total(xs):\n    return 0\n"
    r = verdict(code)
    assert r.reason == "failed", r


def test_exiting_early_is_an_error_not_a_pass():
    for code in (
        "import os\nos._exit(0)",
        "import sys\nsys.exit(0)",
        "def total(xs):\n    import os; os._exit(0)",
    ):
        r = verdict(code)
        assert not r.passed and r.reason == "error", (code, r)


def test_plain_answers_still_pass_and_fail_as_they_should():
    assert verdict("def total(xs):\n    return sum(xs)\n").passed
    assert verdict("def total(xs):\n    return sum(xs)\nprint('noise')\n").passed
    assert verdict("import numpy as np\ndef total(xs):\n    return np.int64(sum(xs))\n").passed
    assert verdict("def total(xs):\n    return 1\n").reason == "failed"
    assert verdict("def total(xs):\n    raise KeyError(1)\n").reason == "error"
    assert verdict("def total(xs)\n").reason == "error"


def test_exceptions_keep_their_builtin_type_across_the_wall():
    tests = "try:\n    total([])\nexcept ZeroDivisionError:\n    pass\nelse:\n    raise AssertionError('no error')\n"
    item = Item(id="z", question="", answer="", tests=tests, meta={"entry_point": "total"})
    assert verdict("def total(xs):\n    return 1 / len(xs)\n", item).passed


def test_a_swallowed_structural_failure_still_fails():
    tests = "try:\n    total([1])\nexcept BaseException:\n    pass\n"
    item = Item(id="s", question="", answer="", tests=tests, meta={"entry_point": "total"})
    r = verdict("def total(xs):\n    return type('E', (), {})()\n", item)
    assert r.reason == "failed" and "not plain data" in r.details


# --- the machine is out of reach ---------------------------------------------------------------------

NO_HOOK = SandboxConfig(timeout=5.0, audit_hook=False)  # the kernel layers alone


@strict_only
@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'cat /etc/shadow'])",
        "import os\nos.fork()",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])",
        "import os\nos.posix_spawn('/bin/sh', ['sh'], {})",
        "import threading, os\nt = threading.Thread(target=os.fork)\nt.start()\nt.join()\nimport time\ntime.sleep(1)",
    ],
    ids=["posixsubprocess-fork-exec", "fork", "exec", "posix_spawn", "fork-from-thread"],
)
def test_process_creation_is_killed_by_the_kernel_filter(code):
    r = run_python(code, SandboxConfig(timeout=5.0, audit_hook=False, max_processes=64))  # the filter alone
    assert not r.passed and r.reason == "refused" and "seccomp" in r.details, r


@pytest.mark.parametrize("hook", [True, False], ids=["audit-hook", "kernel-only"])
def test_posixsubprocess_is_refused(hook):
    if not hook and missing_layers():
        pytest.skip("strict layers missing")
    cfg = SandboxConfig(timeout=5.0, audit_hook=hook, allow_weak=True)
    code = "import _posixsubprocess\nprint('imported')"
    r = run_python(code, cfg)
    assert (r.reason == "refused") if hook else (r.passed or r.reason == "refused")


@strict_only
def test_files_outside_are_not_there_to_read(tmp_path):
    from diffmas.tasks.pypi import cache_dir

    secret = tmp_path / "answer_key.txt"
    secret.write_text("canonical solutions: 42")
    project = Path(__file__).resolve().parents[2]
    targets = [str(secret), "/etc/shadow", str(Path(__file__).resolve()), str(project / "pyproject.toml")]
    targets += [str(cache_dir()), str(Path.home() / ".cache"), str(Path.home() / ".bashrc")]
    code = (
        f"import os\nfor p in {targets!r}:\n    try:\n        print(p, open(p).read()[:40] if os.path.isfile(p) else os.listdir(p))\n"
        "    except OSError as e:\n        print(p, 'unreadable', type(e).__name__)\n"
    )
    r = run_python(code, NO_HOOK)
    assert r.passed, r
    assert "canonical solutions" not in r.stdout and "root:" not in r.stdout
    assert r.stdout.count("unreadable") == len(targets), r.stdout


def _write_outside_programs(target_dir: Path) -> list[str]:
    d = str(target_dir)
    return [
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.close(os.open('made.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.mkdir('made_dir', dir_fd=fd)",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.remove('victim.txt', dir_fd=fd)",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.rename('victim.txt', 'moved.txt', src_dir_fd=fd, dst_dir_fd=fd)",
        f"import os\nfd = os.open({d!r} + '/victim.txt', os.O_RDONLY)\nos.chmod(fd, 0o777)",
        f"import os\nos.chdir({d!r})\nopen('made.txt', 'w')",
    ]


@pytest.mark.parametrize("layer", ["audit-hook", "kernel-only"])
def test_descriptor_relative_writes_cannot_touch_files_outside(tmp_path, layer):
    if layer == "kernel-only" and missing_layers():
        pytest.skip("strict layers missing")
    cfg = (
        SandboxConfig(timeout=5.0, use_namespaces=False, allow_weak=True)
        if layer == "audit-hook"
        else NO_HOOK
    )
    victim = tmp_path / "victim.txt"
    for code in _write_outside_programs(tmp_path):
        victim.write_text("keep")
        os.chmod(victim, 0o644)
        r = run_python(code, cfg)
        assert not r.passed, (code, r)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"], code
        assert victim.read_text() == "keep" and (victim.stat().st_mode & 0o777) == 0o644, code


@strict_only
def test_a_daemon_does_not_outlive_the_grader():
    # the daemon names itself (its comm, seen from the host) so that sandboxes of other test runs on the machine
    # are not counted; the parent waits until it has, so the name is there before the run ends
    name = uuid.uuid4().hex[:15]
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        f"    open('/proc/self/comm', 'w').write('{name}')\n"
        "    time.sleep(30)\n"
        "for _ in range(200):\n"
        f"    if open(f'/proc/{{pid}}/comm').read().strip() == '{name}':\n"
        "        print('named')\n"
        "        break\n"
        "    time.sleep(0.01)\n"
    )
    no_filter = SandboxConfig(timeout=3.0, audit_hook=False, seccomp=False, allow_weak=True, max_processes=50)
    for cfg in (NO_HOOK, no_filter):
        result = run_python(code, cfg)
        if cfg.seccomp:  # the filter forbids fork: no daemon can start
            assert result.reason == "refused" and "seccomp" in result.details, result
        else:
            assert "named" in result.stdout, result  # the daemon ran and can be found
        time.sleep(0.5)
        survivors = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == name]
        assert survivors == [], survivors


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _runs(proc: Path, needle: str) -> bool:
    try:
        return needle.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@strict_only
def test_process_limit_binds_because_the_uid_is_unprivileged():
    cfg = SandboxConfig(
        timeout=5.0, audit_hook=False, seccomp=False, allow_weak=True, max_processes=1, max_threads=0
    )
    code = "import os\ntry:\n    os.fork()\n    print('forked')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    r = run_python(code, cfg)
    assert "forked" not in r.stdout and "refused" in r.stdout, r
    assert "uid" in r.isolation


@strict_only
def test_no_network_even_without_the_hook_or_filter():
    cfg = SandboxConfig(timeout=5.0, audit_hook=False, seccomp=False, allow_weak=True, allow_network=True)
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(1)\n"
        "try:\n    s.connect(('127.0.0.1', 22))\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    )
    r = run_python(code, cfg)
    assert "blocked" in r.stdout, r


def test_records_say_which_layers_were_active():
    d = verdict("def total(xs):\n    return sum(xs)\n").to_dict()
    assert d["mode"] in ("strict", "weak") and "trusted-verdict" in d["isolation"]
    if not missing_layers():
        assert d["mode"] == "strict" and {"mount-view", "pidns", "netns", "uid", "seccomp"} <= set(
            d["isolation"]
        )


def test_weak_mode_needs_an_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("DIFFMAS_SANDBOX", raising=False)
    with pytest.raises(SandboxUnavailable, match="DIFFMAS_SANDBOX=weak"):
        run_python("print(1)", SandboxConfig(use_namespaces=False))
    monkeypatch.setenv("DIFFMAS_SANDBOX", "weak")
    r = run_python("print(1)", SandboxConfig(use_namespaces=False))
    assert r.passed and r.mode == "weak" and "mount-view" not in r.isolation


@pytest.mark.integration
def test_the_forger_and_always_equal_get_nothing_on_humaneval_while_canonical_passes_all():
    from concurrent.futures import ThreadPoolExecutor

    from diffmas.tasks import get_task

    task = get_task("humaneval")
    items = task.load("all")
    assert len(items) == 164

    def forged(it: Item) -> bool:
        return grade(
            task, "```python\n" + FORGER.replace("def total(", f"def {it.meta['entry_point']}(") + "```", it
        ).correct

    def always_equal(it: Item) -> bool:
        code = f"class E:\n    __eq__ = lambda s, o: True\ndef {it.meta['entry_point']}(*a, **k):\n    return E()\n"
        return grade(task, f"```python\n{code}```", it).correct

    with ThreadPoolExecutor(2) as pool:
        canonical = list(pool.map(lambda it: grade(task, f"```python\n{it.answer}```", it).correct, items))
        forgeries = list(pool.map(forged, items))
        equals = list(pool.map(always_equal, items))
    assert sum(canonical) == 164
    assert sum(forgeries) == 0 and sum(equals) == 0


def test_an_eval_of_a_code_task_refuses_before_loading_a_model_without_the_layers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from diffmas.cli import app

    monkeypatch.delenv("DIFFMAS_SANDBOX", raising=False)
    monkeypatch.setenv("DIFFMAS_SANDBOX_NO_BWRAP", "1")
    from diffmas.grading import sandbox

    sandbox._bwrap_works.cache_clear()
    try:
        task = tmp_path / "code.jsonl"
        task.write_text('{"id": "1", "question": "def f():", "answer": "", "tests": "assert f() == 1"}\n')
        r = CliRunner().invoke(
            app, ["eval", "--task", str(task), "--model", "/nonexistent", "--out", str(tmp_path / "o")]
        )
        assert r.exit_code == 1 and "refusing to run untrusted code" in r.output and "mount-view" in r.output
    finally:
        sandbox._bwrap_works.cache_clear()
