"""Run untrusted Python (model-written code and its tests) in a separate, fenced-in process.

Layers, each useful on its own because CI runs as root (where RLIMIT_NPROC does not bind) and some
machines lack namespaces:

* a fresh interpreter (`python -I`) in a throwaway temp directory, with a scrubbed environment (the
  child never sees the parent's variables) and stdin closed;
* `unshare` when available: a new network namespace (no interfaces but a downed loopback) and a new PID
  namespace (the child cannot see or signal other processes, and everything it starts dies with it);
* rlimits: CPU seconds, address space, file size, open files, core dumps, process count;
* an audit hook installed before the untrusted code runs (`sys.addaudithook`; it cannot be removed) that
  ends the process at once on: process creation (fork, exec, spawn, subprocess, os.system), sockets,
  ctypes, writes/deletes/renames outside the working directory, and reading other processes' /proc
  entries. Ending the process (not raising) means untrusted code cannot catch the refusal;
* the parent enforces a wall-clock timeout and kills the whole process group, and caps captured output.

The verdict needs a completion marker written with a per-run nonce after the code finished, so code
that exits early (`sys.exit(0)`, `os._exit(0)`) before its tests ran does not pass.

Limits of the design: it is built for model-written code, not for an adversary who studies this prelude.
Reads are allowed anywhere except other processes' /proc entries (the interpreter must import its
libraries); the filesystem is shared, not a chroot; only the size of each written file is capped (not
their number); and code that digs the nonce out of the prelude's frames could forge a pass.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

Reason = Literal["passed", "failed", "error", "timeout", "memory", "refused"]

# Exit codes the child prelude uses to report how the code ended.
_EXIT_FAILED = 81  # AssertionError: the tests ran and failed
_EXIT_ERROR = 82  # any other exception
_EXIT_MEMORY = 83  # MemoryError
_EXIT_REFUSED = 84  # the audit hook stopped a forbidden action
_EXIT_SETUP = 85  # the prelude itself could not start
_EXIT_CPU = 86  # the CPU-time rlimit was reached (SIGXCPU)

_PRELUDE = r"""
import os, sys
def _diffmas_sandbox():
    import resource, re, traceback
    status_fd = int(sys.argv[1]); nonce = sys.stdin.readline().strip()
    mem, cpu, fsize, nproc, nofile, allow_net = (int(x) for x in sys.argv[2:8])
    code_path = sys.argv[8]
    preload = [m for m in sys.argv[9].split(",") if m]
    def lim(kind, value, hard=None):
        try:
            resource.setrlimit(kind, (value, value if hard is None else hard))
        except (ValueError, OSError):
            pass
    lim(resource.RLIMIT_CORE, 0)
    if mem > 0:
        lim(resource.RLIMIT_AS, mem)
    if cpu > 0:
        import signal
        # soft limit: SIGXCPU, reported as a timeout; hard limit one second later: SIGKILL
        signal.signal(signal.SIGXCPU, lambda *_: os._exit(86))
        lim(resource.RLIMIT_CPU, cpu, cpu + 1)
    lim(resource.RLIMIT_FSIZE, fsize)
    lim(resource.RLIMIT_NOFILE, nofile)
    lim(resource.RLIMIT_NPROC, nproc)
    root = os.path.realpath(os.getcwd())
    own = str(os.getpid())
    write_ok = (root + os.sep, "/dev/null")
    proc_pid = re.compile(r"^/proc/(\d+)(?:/|$)")
    _exit, _write, _realpath, _abspath, _fspath = os._exit, os.write, os.path.realpath, os.path.abspath, os.fspath
    _str, _int, _isinstance, _bytes = str, int, isinstance, bytes
    def refuse(event, detail):
        try:
            _write(status_fd, ("refused " + event + " " + _str(detail)[:200] + "\n").encode())
        finally:
            _exit(84)
    def path_of(p):
        if _isinstance(p, _int):
            return None
        try:
            p = _fspath(p)
            if _isinstance(p, _bytes):
                p = p.decode("utf-8", "replace")
            return _realpath(_abspath(p))
        except Exception:
            return "?"
    def inside(p):
        return p is not None and (p == root or p.startswith(write_ok[0]) or p == write_ok[1])
    spawn_events = {"os.fork", "os.forkpty", "os.vfork", "os.system", "os.posix_spawn", "os.posix_spawnp",
                    "os.exec", "os.spawn", "subprocess.Popen", "pty.spawn", "os.startfile", "os.kill",
                    "os.killpg", "signal.pthread_kill", "os.setuid", "os.setgid", "os.chroot",
                    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
                    "gc.get_referrers", "gc.get_objects", "os.mknod", "os.mkfifo"}
    net_events = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                  "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.socketpair"}
    path_write_events = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                         "os.utime", "os.chflags", "os.lchflags", "shutil.rmtree", "os.setxattr",
                         "os.removexattr", "os.link", "os.symlink", "shutil.copyfile", "shutil.move"}
    def hook(event, args):
        if event in spawn_events:
            refuse(event, args[:1] if args else "")
        if not allow_net and event in net_events:
            refuse(event, args[1:2] if len(args) > 1 else "")
        if event == "open":
            path, mode, flags = (args + (None, None, None))[:3]
            p = path_of(path)
            if p is None:
                return
            m = proc_pid.match(p)
            if m and m.group(1) != own:
                refuse(event, p)
            writing = (mode is not None and any(c in _str(mode) for c in "wax+")) or (
                _isinstance(flags, _int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if writing and not inside(p):
                refuse(event, p)
        elif event in path_write_events:
            for a in args[:2]:
                if _isinstance(a, (_str, _bytes, os.PathLike)) and not inside(path_of(a)):
                    refuse(event, path_of(a))
        elif event in ("os.rename", "os.replace"):
            for a in args[:2]:
                if not inside(path_of(a)):
                    refuse(event, path_of(a))
    with open(code_path, encoding="utf-8") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError):  # the candidate's fault (a truncated answer, say), not the sandbox's
        traceback.print_exc(limit=0)
        sys.stderr.flush()
        _exit(82)
    sys.dont_write_bytecode = True
    for name in preload:  # trusted libraries that dlopen at import (numpy) load before the hook
        try:
            __import__(name)
        except Exception:
            pass
    sys.addaudithook(hook)
    glb = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, glb)
    except AssertionError:
        traceback.print_exc()
        sys.stderr.flush()
        _exit(81)
    except MemoryError:
        _write(2, b"MemoryError\n")
        _exit(83)
    except SystemExit as e:
        sys.stderr.write("SystemExit(%r) before the code finished\n" % (e.code,))
        sys.stderr.flush()
        _exit(82)
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            _exit(82)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    _write(status_fd, ("done " + nonce + "\n").encode())
    _exit(0)
try:
    _diffmas_sandbox()
except BaseException:
    os._exit(85)
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one run. `memory_mb` caps the address space (virtual memory, so leave room for the
    interpreter and numpy: ~300 MB)."""

    timeout: float = 10.0
    memory_mb: int = 1024
    cpu_seconds: int | None = None  # default: ceil(timeout) + 1
    max_output_bytes: int = 64_000
    max_file_bytes: int = 16 * 1024 * 1024
    max_open_files: int = 64
    max_processes: int = 1
    allow_network: bool = False
    use_namespaces: bool = True
    # Imported before the audit hook when the code mentions them: numpy dlopens itself through ctypes
    # at import, which the hook forbids for untrusted code.
    preload: tuple[str, ...] = ("numpy",)


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one run: `passed` only if the code ran to its end and exited cleanly."""

    passed: bool
    reason: Reason
    details: str = ""
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    duration: float = 0.0
    truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "details": self.details,
            "returncode": self.returncode,
            "duration": round(self.duration, 3),
            "truncated": self.truncated,
        }


@lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...]:
    """The `unshare` command line that works on this machine (network + PID namespaces), or ()."""
    if os.environ.get("DIFFMAS_SANDBOX_NO_UNSHARE") or not sys.platform.startswith("linux"):
        return ()
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    candidates = [
        (exe, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
        (exe, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
        (exe, "--net"),
        (exe, "--user", "--map-root-user", "--net"),
    ]
    for cand in candidates:
        try:
            ok = subprocess.run([*cand, "true"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok.returncode == 0:
            return cand
    return ()


def _reader(stream, cap: int, sink: list[bytes], truncated: list[bool]) -> None:
    """Keep the first `cap` bytes of a pipe and drain (discard) the rest so the child never blocks."""
    kept = 0
    while chunk := stream.read1(65536):
        room = cap - kept
        if room > 0:
            sink.append(chunk[:room])
            kept += min(room, len(chunk))
        if len(chunk) > room:
            truncated[0] = True
    stream.close()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_python(code: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code` as a Python program in the sandbox and classify how it ended."""
    cfg = config or SandboxConfig()
    cpu = cfg.cpu_seconds if cfg.cpu_seconds is not None else int(cfg.timeout) + 2
    workdir = tempfile.mkdtemp(prefix="diffmas-sbx-")
    nonce = secrets.token_hex(16)
    status_r, status_w = os.pipe()
    prefix = unshare_prefix() if cfg.use_namespaces else ()
    isolation = ["rlimits", "audit-hook", "scrubbed-env", "tmpdir", "process-group"]
    if prefix:
        isolation.append("netns" if "--net" in prefix else "")
        if "--pid" in prefix:
            isolation.append("pidns")
    try:
        code_path = os.path.join(workdir, "solution.py")
        with open(code_path, "w", encoding="utf-8") as f:
            f.write(code)
        args = [
            *prefix,
            sys.executable,
            "-I",
            "-B",
            "-c",
            _PRELUDE,
            str(status_w),
            str(cfg.memory_mb * 1024 * 1024 if cfg.memory_mb else 0),
            str(cpu),
            str(cfg.max_file_bytes),
            str(cfg.max_processes),
            str(cfg.max_open_files),
            "1" if cfg.allow_network else "0",
            code_path,
            ",".join(m for m in cfg.preload if re.search(rf"\b{re.escape(m)}\b", code)),
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        start = time.monotonic()
        proc = subprocess.Popen(
            args,
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            start_new_session=True,
            close_fds=True,
        )
        os.close(status_w)
        status_w = -1
        out: list[bytes] = []
        err: list[bytes] = []
        status: list[bytes] = []
        trunc_out, trunc_err, trunc_status = [False], [False], [False]
        status_file = os.fdopen(status_r, "rb")
        status_r = -1
        threads = [
            threading.Thread(
                target=_reader, args=(proc.stdout, cfg.max_output_bytes, out, trunc_out), daemon=True
            ),
            threading.Thread(
                target=_reader, args=(proc.stderr, cfg.max_output_bytes, err, trunc_err), daemon=True
            ),
            threading.Thread(target=_reader, args=(status_file, 4096, status, trunc_status), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            assert proc.stdin is not None
            proc.stdin.write((nonce + "\n").encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        timed_out = False
        try:
            proc.wait(timeout=cfg.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        # The child is done (or out of time): kill anything left in its process group either way.
        _kill_group(proc)
        proc.wait()
        duration = time.monotonic() - start
        for t in threads:
            t.join(timeout=2.0)
        stdout = b"".join(out).decode("utf-8", "replace")
        stderr = b"".join(err).decode("utf-8", "replace")
        if prefix and "unshare:" in stderr:  # unshare's own complaints when its child dies by a signal
            stderr = "\n".join(ln for ln in stderr.splitlines() if not ln.startswith("unshare:"))
            if proc.returncode == 1 and not stderr.strip():
                proc.returncode = -signal.SIGKILL
        status_text = b"".join(status).decode("utf-8", "replace")
        truncated = trunc_out[0] or trunc_err[0]
        return _classify(
            proc.returncode,
            timed_out,
            status_text,
            nonce,
            stdout,
            stderr,
            duration,
            truncated,
            tuple(i for i in isolation if i),
        )
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _classify(
    rc: int | None,
    timed_out: bool,
    status: str,
    nonce: str,
    stdout: str,
    stderr: str,
    duration: float,
    truncated: bool,
    isolation: tuple[str, ...],
) -> SandboxResult:
    def result(passed: bool, reason: Reason, details: str) -> SandboxResult:
        return SandboxResult(passed, reason, details, stdout, stderr, rc, duration, truncated, isolation)

    refused = next((ln for ln in status.splitlines() if ln.startswith("refused ")), None)
    if refused:
        return result(False, "refused", refused[len("refused ") :])
    if timed_out:
        return result(False, "timeout", f"wall-clock limit reached after {duration:.1f}s")
    if rc == 0 and f"done {nonce}" in status:
        return result(True, "passed", "")
    if rc == _EXIT_FAILED:
        return result(False, "failed", _last_line(stderr) or "AssertionError")
    if rc == _EXIT_MEMORY or "MemoryError" in _last_line(stderr):
        return result(False, "memory", "memory limit reached (MemoryError)")
    if rc == _EXIT_REFUSED:
        return result(False, "refused", "forbidden action")
    if rc == _EXIT_CPU:
        return result(False, "timeout", "CPU-time limit reached")
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return result(False, "timeout", "CPU-time limit reached (SIGXCPU)")
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT) and "memory" in stderr.lower():
            return result(False, "memory", f"killed by signal {sig} after a memory error")
        if sig == signal.SIGXFSZ:
            return result(False, "refused", "file-size limit reached (SIGXFSZ)")
        return result(False, "error", f"killed by signal {signal.Signals(sig).name}")
    if rc == _EXIT_SETUP:
        return result(False, "error", "sandbox prelude failed to start")
    if rc == 0:
        return result(False, "error", "exited before the code finished (no completion marker)")
    return result(False, "error", _last_line(stderr) or f"exit status {rc}")


def run_many(
    programs: Iterable[str],
    config: SandboxConfig | None = None,
    workers: int = 2,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run programs with a small thread pool (each run is its own process); results in input order."""
    progs = list(programs)
    results: list[SandboxResult | None] = [None] * len(progs)

    def one(i: int) -> None:
        res = run_python(progs[i], config)
        results[i] = res
        if on_result is not None:
            on_result(i, res)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(progs))))
    return [r for r in results if r is not None]


__all__ = ["Reason", "SandboxConfig", "SandboxResult", "run_many", "run_python", "unshare_prefix"]
