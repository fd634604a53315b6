"""The trusted test process of the code grader: it runs the item's tests, with the entry points replaced by
proxies that call into the sandboxed solution through a pipe, and alone writes the verdict (HMAC-signed).

Never imported by the grader: `diffmas.grading.harness` reads this file once (`RUNNER_SOURCE`) and runs its text
with `python -I -B -c`, the pipe descriptors and the grader's pid in `sys.argv[1:5]` and its job (prompt, tests,
entry points, wire.py's source, the key) as JSON on stdin. It is a module so that the linter and the type checker
read it; it imports the standard library only, and `diffmas.grading.wire` arrives as source text from the
grader's memory, never from a file the solution could have rewritten.
"""

# ruff: noqa: SIM105  (try/except/pass, not contextlib.suppress: the test process imports no more than it needs)

import ast
import builtins
import hashlib
import hmac
import importlib
import json
import os
import resource
import sys
import traceback
import types

# No `typing` (nor `__future__`) import, so annotations naming these are strings:
# the test process loads only what the tests need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


def harden(parent: int) -> None:
    # die with the grader (a SIGKILLed grader runs no cleanup), and keep other processes of this uid out
    # of /proc/<pid>/fd (its pipes) and ptrace: a non-dumpable process is the kernel's to inspect only
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(0)


def preload(texts: list[str]) -> None:
    # everything the tests import, loaded before the solution process exists
    for text in texts:
        for source in (text, text.rstrip() + "\n    pass\n"):
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else (
                        [node.module]
                        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        else []
                    )
                )
                for name in names:
                    try:
                        importlib.import_module(name)
                    except Exception:
                        pass
            break


def main() -> None:
    req, resp, verdict_fd, parent = (int(x) for x in sys.argv[1:5])
    harden(parent)
    job = json.loads(sys.stdin.read())
    wire = types.ModuleType("diffmas_wire")  # from the grader's memory, not from a file on disk
    exec(compile(job["wire_source"], job["wire"], "exec"), wire.__dict__)
    key = bytes.fromhex(job["key"])
    preload([job["prompt"], job["tests"]])
    if job["mem"] > 0:
        resource.setrlimit(resource.RLIMIT_AS, (job["mem"], job["mem"]))
    os.write(1, b"ready\n")  # only now does the grader start the solution process

    def verdict(kind: str, details: object = "", calls: int = 0) -> "NoReturn":
        body = {"verdict": kind, "details": str(details)[:500], "calls": calls}
        mac = hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()
        wire.send(verdict_fd, dict(body, mac=mac))
        sys.stdout.flush()
        os._exit(0)

    class Gone(BaseException):
        pass

    class NotPlain(BaseException):
        pass

    class HarnessLimit(BaseException):
        pass

    STOPS = (StopIteration, StopAsyncIteration)
    broken: list[
        BaseException
    ] = []  # the first structural failure: kept even if a test swallows the exception
    calls = [0]
    try:
        hello = wire.receive(resp)
    except wire.NotPlainData as e:
        verdict("error", f"malformed reply from the solution process: {e}")
    if hello is None:
        verdict("gone", "the solution process ended before the tests ran")
    if "load_error" in hello:
        kind = "failed" if hello.get("kind") == "failed" else "error"
        verdict(kind, f"the solution failed to load: {str(hello.get('load_error'))[:300]}")
    ns: dict[str, Any] = {"__name__": "__main__"}
    if job["prompt"]:  # the dataset's prompt: its helpers and imports, trusted
        try:
            exec(compile(job["prompt"], "prompt.py", "exec"), ns)
        except SyntaxError:
            exec(compile(job["prompt"].rstrip() + "\n    pass\n", "prompt.py", "exec"), ns)

    def proxy(name: str) -> "Callable[..., Any]":
        def candidate(*args: "Any", **kwargs: "Any") -> "Any":
            if broken:
                raise broken[0]
            try:
                message = {"call": name, "args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)}
            except wire.NotPlainData as e:
                broken.append(HarnessLimit(f"the test passed {e} to {name}: arguments must be plain data"))
                raise broken[0] from None
            try:
                wire.send(req, message)
                reply = wire.receive(resp)
            except (BrokenPipeError, OSError):
                reply = None
            except wire.NotPlainData as e:
                broken.append(NotPlain(f"{name} replied with {e}"))
                raise broken[0] from None
            if reply is None:
                broken.append(Gone(f"the solution process ended during a call to {name}"))
                raise broken[0]
            if "value" in reply:
                try:
                    value = wire.decode(reply["value"])
                except wire.NotPlainData as e:
                    broken.append(NotPlain(f"{name} returned {e}"))
                    raise broken[0] from None
                calls[0] += 1  # a completed call: the solution answered with plain data
                return value
            if "not_plain" in reply:
                broken.append(NotPlain(f"{name} returned {str(reply['not_plain'])[:200]}"))
                raise broken[0]
            if "raised" not in reply:
                broken.append(NotPlain(f"{name}: malformed reply"))
                raise broken[0]
            calls[0] += 1  # completed too: the solution answered by raising
            kind, text = str(reply.get("raised", "Exception")), str(reply.get("message", ""))[:500]
            cls = getattr(builtins, kind, None)
            # StopIteration would end the tests' own loop (`all(map(candidate, ...))`) instead of failing
            # it: it arrives as an error, as PEP 479 does for generators
            if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, STOPS):
                try:
                    raise cls(text)
                except TypeError:
                    pass
            raise RuntimeError(f"{name} raised {kind}: {text}")

        candidate.__name__ = name
        return candidate

    # Only the entry points cross: builtins, the prompt's helpers and the tests' own names stay the
    # trusted side's whatever the solution defines.
    for name in job["entries"]:
        ns[name] = proxy(name)
    try:
        exec(compile(job["tests"], "tests.py", "exec"), ns)
    except SystemExit as e:
        if e.code not in (None, 0):
            verdict("error", f"the tests exited with status {e.code!r}", calls[0])
    except AssertionError:
        if not broken:
            verdict("failed", traceback.format_exc(limit=-1).strip().splitlines()[-1], calls[0])
    except (Gone, NotPlain, HarnessLimit):
        pass
    except MemoryError:
        verdict("error", "MemoryError in the tests", calls[0])
    except BaseException as e:
        if not broken:
            verdict("error", f"{type(e).__name__}: {e}", calls[0])
    if broken:
        kind = {"Gone": "gone", "NotPlain": "not_plain", "HarnessLimit": "error"}[type(broken[0]).__name__]
        verdict(kind, broken[0], calls[0])
    if calls[0] < 1:
        verdict(
            "error", "the tests never completed a call of " + " or ".join(job["entries"] or ["the solution"])
        )
    verdict("passed", "", calls[0])


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc(limit=3)
        os._exit(85)
