"""The sandbox's prelude: trusted code that runs first inside the sandbox, sets the in-process layers, then runs
the untrusted program ("run") or loads it and answers calls from the trusted tests ("serve").

Never imported by the grader: `diffmas.grading.sandbox` reads this file once (`PRELUDE_SOURCE`) and runs its text
with `python -I -B -c`, the settings as JSON in `sys.argv[1]`, so a program in weak mode cannot rewrite what the
next sandbox runs. It is a module so that the linter and the type checker read it; it imports the standard
library only (the sandbox has no diffmas) and loads what it needs before the untrusted code starts: every module
it imports is one the untrusted program finds already loaded. `diffmas_wire` is `diffmas/grading/wire.py`, put
on the sandbox's path by the grader.
"""

# ruff: noqa: SIM105  (try/except/pass, not contextlib.suppress: the sandbox imports no more than it needs)

import os
import sys

# No `typing` (nor `__future__`) import, so annotations naming these are strings:
# the sandboxed process loads nothing it does not need.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, ModuleType
    from typing import Any


def _diffmas_sandbox() -> None:
    import json
    import re
    import resource
    import traceback

    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    _exit, _write = os._exit, os.write

    def lim(kind: int, value: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(kind, (value, value if hard is None else hard))
        except (ValueError, OSError):
            pass

    lim(resource.RLIMIT_CORE, 0)
    if cfg["mem"] > 0:
        lim(resource.RLIMIT_AS, cfg["mem"])
    if cfg["cpu"] > 0:
        import signal

        # soft limit: SIGXCPU, reported as a timeout; hard limit one second later: SIGKILL
        signal.signal(signal.SIGXCPU, lambda *_: os._exit(86))
        lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
    lim(resource.RLIMIT_FSIZE, cfg["fsize"])
    lim(resource.RLIMIT_NOFILE, cfg["nofile"])
    lim(resource.RLIMIT_NPROC, cfg["nproc"])
    for path in cfg["path"]:
        sys.path.insert(0, path)
    import diffmas_wire as wire

    for name in cfg["preload"]:  # trusted libraries that dlopen at import (numpy) load before the hook
        try:
            __import__(name)
        except Exception:
            pass
    if cfg["seccomp"]:
        import ctypes

        bpf = open(cfg["seccomp"], "rb").read()  # noqa: SIM115  (closed when collected; no `with` machinery)

        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        libc = ctypes.CDLL(None, use_errno=True)
        prog = Prog(len(bpf) // 8, bpf)
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
            _write(2, b"seccomp filter could not be loaded\n")
            _exit(85)
        del libc, prog, Prog
        for m in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.") or m == "_ctypes"]:
            del sys.modules[m]
    for m in ("_posixsubprocess", "subprocess", "multiprocessing", "_ctypes", "ctypes"):
        sys.modules.pop(m, None)
    root = os.path.realpath(os.getcwd())
    own = str(os.getpid())
    tmp = cfg["tmp"]  # strict mode: /tmp is the sandbox's own tmpfs, writable like the work dir
    write_ok = (root + os.sep, "/dev/null")
    proc_pid = re.compile(r"^/proc/(\d+)(?:/|$)")
    _realpath, _abspath, _fspath = os.path.realpath, os.path.abspath, os.fspath
    _str, _int, _isinstance, _bytes = str, int, isinstance, bytes
    allow_net = cfg["allow_net"]

    def refuse(event: str, detail: object) -> None:
        try:
            _write(status_fd, ("refused " + event + " " + _str(detail)[:200] + "\n").encode())
        finally:
            _exit(84)

    def inside(p: str | None) -> bool:
        if p is not None and tmp and (p == tmp or p.startswith(tmp + "/")):
            return True
        return p is not None and (p == root or p.startswith(write_ok[0]) or p == write_ok[1])

    spawn_events = {
        "os.fork", "os.forkpty", "os.vfork", "os.system", "os.posix_spawn", "os.posix_spawnp", "os.exec",
        "os.spawn", "subprocess.Popen", "pty.spawn", "os.startfile", "os.kill", "os.killpg",
        "signal.pthread_kill", "os.setuid", "os.setgid", "os.chroot", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.cdata", "ctypes.call_function", "gc.get_referrers", "gc.get_objects", "os.mknod", "os.mkfifo",
        "sys._current_frames",
    }  # fmt: skip
    banned_imports = {"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters", "_testcapi"}
    net_events = {
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.socketpair",
    }  # fmt: skip
    # event -> (indices of path arguments, indices of their dir_fd arguments)
    path_events: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
        "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
        "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.truncate": ((0,), ()),
        "os.utime": ((0,), (3,)), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
        "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "os.link": ((0, 1), (2, 3)),
        "os.symlink": ((1,), (2,)), "os.rename": ((0, 1), (2, 3)), "os.replace": ((0, 1), (2, 3)),
        "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((1,), ()), "shutil.move": ((0, 1), ()),
        "shutil.copytree": ((1,), ()),
    }  # fmt: skip
    _readlink, _isabs, _join, _isdir = os.readlink, os.path.isabs, os.path.join, os.path.isdir

    def resolve(p: "Any", dir_fd: "Any" = None) -> str:
        # the real path a call touches: descriptors through /proc/self/fd, dir_fd-relative paths joined
        try:
            if _isinstance(p, _int):
                p = _readlink(f"/proc/self/fd/{p:d}")
            p = _fspath(p)
            if _isinstance(p, _bytes):
                p = p.decode("utf-8", "replace")
            if _isinstance(dir_fd, _int) and dir_fd >= 0 and not _isabs(p):
                p = _join(_readlink(f"/proc/self/fd/{dir_fd:d}"), p)
            return _realpath(_abspath(p))
        except Exception:
            return "?"

    def hook(event: str, args: "tuple[Any, ...]") -> None:
        if event in spawn_events:
            refuse(event, args[:1] if args else "")
        if event == "import" and args and _str(args[0]).split(".")[0] in banned_imports:
            refuse(event, args[0])
        if not allow_net and event in net_events:
            refuse(event, args[1:2] if len(args) > 1 else "")
        if event == "open":
            path, mode, flags = (args + (None, None, None))[:3]
            if _isinstance(path, _int):  # os.fdopen of a descriptor we already hold
                return
            p = resolve(path)
            m = proc_pid.match(p)
            if m and m.group(1) != own:
                refuse(event, p)
            writing = (mode is not None and any(c in _str(mode) for c in "wax+")) or (
                _isinstance(flags, _int)
                and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            )
            if writing and not inside(p):
                refuse(event, p)
            if not inside(p) and _isdir(p):  # a directory descriptor would let dir_fd= calls write outside
                refuse(event, "a directory outside the work dir: " + p)
        elif event in path_events:
            paths, dir_fds = path_events[event]
            for i, k in enumerate(paths):
                if k >= len(args) or args[k] is None:
                    continue
                d = args[dir_fds[i]] if i < len(dir_fds) and dir_fds[i] < len(args) else None
                p = resolve(args[k], d)
                if not inside(p):
                    refuse(event, p)
        elif event in ("os.chdir", "os.fchdir") and args and _isinstance(args[0], _int):
            refuse(event, "a directory descriptor")

    with open(cfg["code"], encoding="utf-8") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError):  # the candidate's fault (a truncated answer, say), not the sandbox's
        if cfg["mode"] == "serve":
            wire.send(
                cfg["resp"], {"load_error": traceback.format_exc(limit=0).strip()[-300:], "kind": "error"}
            )
        traceback.print_exc(limit=0)
        sys.stderr.flush()
        _exit(82)
    sys.dont_write_bytecode = True
    if cfg["audit"]:
        sys.addaudithook(hook)
    glb = {"__name__": "__main__", "__builtins__": __builtins__}
    if cfg["mode"] == "serve":
        _serve(cfg, wire, code, glb, traceback)
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
        sys.stderr.write(f"SystemExit({e.code!r}) before the code finished\n")
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
    _write(status_fd, ("done " + sys.stdin.readline().strip() + "\n").encode())
    _exit(0)


def _serve(
    cfg: "dict[str, Any]",
    wire: "ModuleType",
    code: "CodeType",
    glb: "dict[str, Any]",
    traceback: "ModuleType",
) -> None:
    # Load the solution, then answer the trusted tests' calls with plain data until they hang up.
    req, resp, _exit = cfg["req"], cfg["resp"], os._exit

    def last(e: BaseException) -> str:
        return (type(e).__name__ + ": " + str(e))[:500]

    try:
        exec(code, glb)
    except BaseException as e:
        wire.send(
            resp, {"load_error": last(e), "kind": "failed" if isinstance(e, AssertionError) else "error"}
        )
        _exit(82)
    wire.send(resp, {"ready": True})  # the tests call entry points the grader names, never ones offered here

    def coerce(v: "Any") -> "Any":  # numpy scalars compare like Python numbers; send them as such
        if type(v).__module__ == "numpy" and getattr(v, "shape", None) == () and hasattr(v, "item"):
            return v.item()
        return v

    def plain(v: "Any") -> "Any":
        v = coerce(v)
        if type(v) in (list, tuple, set, frozenset):
            return type(v)(plain(x) for x in v)
        if type(v) is dict:
            return {plain(k): plain(x) for k, x in v.items()}
        return v

    while True:
        try:
            msg = wire.receive(req)
        except BaseException:
            _exit(82)
        if msg is None:
            sys.stdout.flush()
            _exit(0)
        try:
            fn = glb.get(msg["call"])
            args, kwargs = wire.decode(msg["args"]), wire.decode(msg["kwargs"])
            if not callable(fn):
                raise NameError(f"name {msg['call']!r} is not defined by the solution")
            value = fn(*args, **kwargs)
        except BaseException as e:
            if isinstance(e, MemoryError):
                os.write(2, b"MemoryError\n")
            wire.send(resp, {"raised": type(e).__name__, "message": str(e)[:500]})
            continue
        try:
            out = {"value": wire.encode(plain(value))}
        except BaseException as e:
            out = {"not_plain": str(e)[:300]}
        wire.send(resp, out)


if __name__ == "__main__":
    try:
        _diffmas_sandbox()
    except BaseException:
        try:
            import traceback

            traceback.print_exc(limit=2)
            sys.stderr.flush()
        finally:
            os._exit(85)
