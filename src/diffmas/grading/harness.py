"""The code grader's verdict, decided where the candidate cannot reach it.

Two processes per graded answer:

* the **solution process** (untrusted, behind every layer of `diffmas.grading.sandbox`) loads the
  candidate's code and then only answers calls: a function name and plain-data arguments in, a
  plain-data return value (or the name of the exception it raised) out;
* the **test process** (trusted: the dataset's own test code) runs the item's tests with the entry
  point(s) replaced by a proxy that forwards the call through a pipe and rebuilds the reply from
  builtin types only (`diffmas.grading.wire`). It alone writes the verdict, on a pipe that only the
  grader holds.

The entry points are the only names that cross, and the grader names them (the dataset's
`entry_point`, names the dataset declares, or the names the tests use without binding them that are
not builtins and not the prompt's): whatever the solution defines, the tests' `abs`, `zip` and
`encode_cyclic` are the trusted side's. A pass needs at least one completed call of an entry point
(tests that never reach the solution prove nothing), and a `StopIteration` the solution raises
arrives as an error (it would end a loop of the tests, `all(map(candidate, ...))`, as if it passed).

So a stack walk, a patched traceback or a replaced `AssertionError` in the candidate changes nothing:
none of that runs in the process that decides; an object whose `__eq__` says yes cannot cross the
wall (it is not plain data, which counts as a failure); and exiting early leaves the tests without
answers (an error). The cost is a contract on the tests: they call solution functions with plain
data and compare what comes back (true of HumanEval, HumanEval+, MBPP+ and input/output tests).
Arguments travel by value, so a test that inspects an argument mutated in place is not supported.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import select
import shutil
import subprocess
import symtable
import sys
import time
from dataclasses import replace
from pathlib import Path

from diffmas.grading import wire
from diffmas.grading.sandbox import (
    WIRE_PATH,
    WIRE_SOURCE,
    OutputCapture,
    SandboxConfig,
    SandboxResult,
    available_layers,
    check_isolation,
    classify_exit,
    clean_stderr,
    kill_tree,
    start_untrusted,
)

# The trusted test process (runner.py), read once like wire.py and run as `python -c` text: never imported, never
# a file read after the grader started. Its job (prompt, tests, entry points) arrives on stdin as JSON.
RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNNER_SOURCE = RUNNER_PATH.read_text(encoding="utf-8")


def run_tests(
    solution: str,
    tests: str,
    *,
    entry_points: tuple[str, ...] = (),
    prompt: str | None = None,
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Grade `solution` against the trusted `tests`: passed only if the trusted process says so.

    `entry_points` are the solution functions the tests call, and the only ones: empty, they are the
    names the tests leave unbound (`solution_names`). `prompt` (HumanEval style) is trusted code run in
    the test process first, so the tests' helpers are the dataset's, not the candidate's.
    """
    entries = tuple(entry_points) or solution_names(tests, prompt)
    bad = [n for n in entries if not (isinstance(n, str) and n.isidentifier())]
    if bad:
        raise ValueError(f"entry points must be Python identifiers, got {bad!r}")
    cfg = config or SandboxConfig()
    check_isolation(cfg)  # refuse before starting anything
    start = time.monotonic()
    key = secrets.token_bytes(32)  # the verdict's signature key: the test process and this one only
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    untrusted = tester = None
    try:
        # The trusted test process starts first and loads all it needs (wire from this process's memory,
        # the tests' imports) before the solution process exists: nothing the solution writes to disk
        # reaches it. Its job, with the key, goes through a pipe that is closed before the solution starts.
        tester = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-B",
                "-c",
                RUNNER_SOURCE,
                str(req_w),
                str(resp_r),
                str(verdict_w),
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(req_w, resp_r, verdict_w),
            start_new_session=True,
            close_fds=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
        )
        for fd in (req_w, resp_r, verdict_w):
            os.close(fd)
        req_w = resp_r = verdict_w = -1
        job = {
            "prompt": prompt or "",
            "tests": tests,
            "entries": list(entries),
            "wire": str(WIRE_PATH),
            "wire_source": WIRE_SOURCE,
            "key": key.hex(),
            "mem": max(cfg.memory_mb, 2048) * 1024 * 1024 if cfg.memory_mb else 0,
        }
        with contextlib.suppress(BrokenPipeError, OSError):
            assert tester.stdin is not None
            tester.stdin.write(json.dumps(job).encode())
            tester.stdin.close()
        # Without the mount view (weak mode) the solution could rewrite files the test process has yet to
        # load: it starts only once the test process is ready. With it, nothing on the host is in its
        # reach, and the two start side by side.
        ready_first = "mount-view" not in available_layers(cfg)
        if ready_first and not _wait_ready(tester, max(1.0, cfg.timeout)):
            return _not_started(tester, start)
        untrusted = start_untrusted(solution, cfg, "serve", {"req": req_r, "resp": resp_w})
        if not ready_first and not _wait_ready(tester, max(1.0, cfg.timeout)):
            return _not_started(tester, start)
        tester_err = OutputCapture(tester, None, 16_000)
        for fd in (req_r, resp_w):
            os.close(fd)
        req_r = resp_w = -1
        capture = OutputCapture(untrusted.proc, untrusted.status_r, cfg.max_output_bytes)
        with contextlib.suppress(BrokenPipeError, OSError):
            assert untrusted.proc.stdin is not None
            untrusted.proc.stdin.close()
        timed_out = False
        try:
            tester.wait(timeout=max(0.1, cfg.timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            timed_out = True
        kill_tree(tester)
        verdict, forged = _read_verdict(verdict_r, key)
        if verdict is not None and verdict["verdict"] == "gone":
            with contextlib.suppress(subprocess.TimeoutExpired):
                untrusted.proc.wait(timeout=1.0)  # let its exit status settle: a refusal, say
        untrusted.kill()
        stdout, stderr, status = capture.join()
        _, tester_stderr, _ = tester_err.join()
    finally:
        for fd in (req_r, req_w, resp_r, resp_w, verdict_w, verdict_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if tester is not None and tester.poll() is None:
            kill_tree(tester)
        if untrusted is not None:
            if untrusted.proc.poll() is None:
                untrusted.kill()
            shutil.rmtree(untrusted.host_dir, ignore_errors=True)
    duration = time.monotonic() - start
    base = classify_exit(
        untrusted.proc.returncode, timed_out, status, None, stdout, clean_stderr(stderr), duration,
        capture.truncated[0], untrusted,
    )  # fmt: skip
    isolation = (*base.isolation, "trusted-verdict")
    base = replace(base, isolation=isolation)
    if timed_out:
        return replace(
            base, passed=False, reason="timeout", details=f"wall-clock limit reached after {duration:.1f}s"
        )
    if forged:
        return replace(
            base, passed=False, reason="error", details=f"the verdict pipe was tampered with: {forged}"
        )
    if verdict is None:
        last = tester_stderr.strip().splitlines()[-1:] or [f"exit status {tester.returncode}"]
        return replace(
            base, passed=False, reason="error", details=f"the test process ended without a verdict: {last[0]}"
        )
    kind, details = verdict["verdict"], str(verdict.get("details", ""))
    if kind == "passed" and not (type(verdict.get("calls")) is int and verdict["calls"] >= 1):
        kind, details = "error", "the tests never completed a call of the entry point"
    if kind == "passed":
        return replace(base, passed=True, reason="passed", details="")
    if kind == "failed":
        return replace(base, passed=False, reason="failed", details=details or "AssertionError")
    if kind == "not_plain":
        return replace(base, passed=False, reason="failed", details=f"not plain data: {details}")
    if kind == "gone" and base.reason in ("refused", "memory", "timeout"):
        return base  # the solution process was stopped: say why
    if "MemoryError" in details:
        return replace(base, passed=False, reason="memory", details=details)
    return replace(base, passed=False, reason="error", details=details or base.details)


def solution_names(tests: str, prompt: str | None = None) -> tuple[str, ...]:
    """The names the tests call on the solution when the dataset names none: every global the tests
    read that neither the tests nor the prompt bind and that is not a builtin (sorted). Computed from
    the trusted text alone, so a solution cannot add a name; () if the tests do not parse."""
    try:
        used, bound = _globals(tests)
    except SyntaxError:
        return ()
    if prompt:
        for text in (prompt, prompt.rstrip() + "\n    pass\n"):
            try:
                bound |= _globals(text)[1]
                break
            except SyntaxError:
                continue
    return tuple(sorted(n for n in used - bound if n not in _BUILTINS))


_BUILTINS = frozenset(dir(builtins))


def _globals(source: str) -> tuple[set[str], set[str]]:
    """(globals read anywhere, names bound at module level) of `source`."""
    top = symtable.symtable(source, "tests.py", "exec")
    bound = {
        s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()
    }
    used = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for sym in table.get_symbols():
            if sym.is_declared_global() and sym.is_assigned():
                bound.add(sym.get_name())
            elif sym.is_global() and sym.is_referenced():
                used.add(sym.get_name())
    return used, bound


def _not_started(tester: subprocess.Popen, start: float) -> SandboxResult:
    """The result when the test process never said it was ready (it crashed loading, say)."""
    kill_tree(tester)
    err = tester.stderr.read().decode("utf-8", "replace") if tester.stderr else ""
    last = err.strip().splitlines()[-1:] or [f"exit status {tester.returncode}"]
    return SandboxResult(
        False, "error", f"the test process did not start: {last[0]}"[:500], duration=time.monotonic() - start
    )


def _wait_ready(tester: subprocess.Popen, timeout: float) -> bool:
    """Wait for the test process's `ready` line (it has loaded what it needs)."""
    assert tester.stdout is not None
    fd, got, deadline = tester.stdout.fileno(), b"", time.monotonic() + timeout
    while b"\n" not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False
        got += chunk
    return got.split(b"\n", 1)[0] == b"ready"  # what the tests print after it is not kept


def _read_verdict(fd: int, key: bytes) -> tuple[dict | None, str]:
    """The test process's verdict and "", or None and "" if it wrote none (it crashed or was killed), or
    None and why when the pipe holds anything but one message signed with `key` (a forged verdict)."""
    os.set_blocking(fd, False)
    try:
        message = wire.receive(fd)
    except BlockingIOError:
        return None, ""
    except (wire.NotPlainData, OSError) as e:
        return None, f"unreadable message ({e})"
    if message is None:
        return None, ""
    body = {k: v for k, v in message.items() if k != "mac"}
    mac = hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()
    if type(message.get("mac")) is not str or not hmac.compare_digest(mac, message["mac"]):
        return None, "a verdict without the test process's signature"
    try:
        extra = os.read(fd, 1)
    except BlockingIOError:
        extra = b""
    if extra:
        return None, "more than one message"
    return body, ""


__all__ = ["run_tests", "solution_names"]
