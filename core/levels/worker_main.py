"""The runner worker's own side: the process in which ``runner/runner.py`` and its mechanisms run.

arx never imports the managed runner. ``worker.py`` starts this file as a script, with the
standard library only (``python -s -S``; it imports nothing from arx and needs nothing secret),
in a scrubbed environment and an empty temporary directory, and talks to it with one JSON object
per line: the runner's source and config in, then one hook call at a time (the context in, the
hook's result out). Before it reads anything it fences itself in, each layer where the platform
allows it, and reports which ones held (``sandbox`` in its first line):

- ``rlimits``: address space, open files, file size, no core dumps, no new processes
  (``RLIMIT_NPROC``, for a user other than root), and a CPU-time limit per call;
- ``pdeathsig``: killed with arx (Linux);
- ``netns``: a new network namespace, so no network at all (Linux, with the right to create one);
- ``landlock``: files readable only under the Python installation, writable only in its own
  directory, nothing executable, no TCP, no signals out (Linux >= 5.13 with Landlock enabled);
- ``seccomp``: no fork, clone, exec, socket, ptrace, kill, io_uring, namespaces (Linux, x86_64
  and aarch64).

Then it loads the runner under a fresh module name, wraps the hooks of every object in
``runner.mechanisms`` so that a fault names the mechanism whose hook raised (and tells the parent,
with ``{"at": ...}`` lines, which mechanism hook is running, for a deadline), and answers calls.
A fault is an answer ``{"ok": false, "fault": {...}}``; whatever the code does to this process
(exit, loop, crash, monkeypatch), arx only sees lines on a pipe, checks them, and kills the
worker at its deadline.
"""

import ctypes
import json
import linecache
import os
import platform
import resource
import struct
import sys
import traceback
import types

#: where the runner's code claims to live (tracebacks name it; the source is in linecache)
FILENAME = "runner.py"
#: the Runner hooks the engine calls, and the optional hooks of a mechanism object
RUNNER_HOOKS = ("build_prompt", "focus", "filter_candidates", "select", "confirm_seeds", "accept",
                "observe")
MECHANISM_HOOKS = ("extend_prompt", "focus", "filter_candidates", "observe")
#: the pure-computation modules a runner may use, imported before the files are fenced off
PRELOAD = ("bisect", "collections", "copy", "dataclasses", "enum", "functools", "heapq",
           "itertools", "json", "math", "random", "re", "statistics", "typing")
#: the largest answer line (bytes); the parent refuses longer ones too
MAX_REPLY = 16 << 20

_X32 = 0x40000000
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: syscalls the worker may not make (EPERM): new processes and programs, sockets, tracing and
#: signalling others, io_uring, namespaces and mounts, kernel keys, module loading
_DENIED = {
    "x86_64": (56, 57, 58, 59, 322, 435, 41, 53, 101, 62, 200, 234, 129, 297, 424, 434, 438,
               310, 311, 272, 308, 165, 166, 155, 161, 321, 298, 425, 426, 427, 248, 249, 250,
               175, 313, 246, 169, 323),
    "aarch64": (220, 221, 281, 435, 198, 199, 117, 129, 130, 131, 138, 240, 424, 434, 438, 270,
                271, 97, 268, 40, 39, 41, 51, 280, 241, 425, 426, 427, 217, 218, 219, 105, 273,
                104, 142, 282),
}


class _Out:
    """The reply pipe: a private copy of stdout (fd 1 itself now points at stderr)."""

    def __init__(self) -> None:
        self.fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, obj: dict) -> None:
        try:
            data = json.dumps(obj).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as e:
            data = json.dumps({"ok": False, "fault": {
                "kind": "result", "error": f"the answer is not JSON data: {e}"}}).encode() + b"\n"
        if len(data) > MAX_REPLY:
            data = json.dumps({"ok": False, "fault": {
                "kind": "result", "error": f"the answer is {len(data)} bytes, more than "
                                           f"{MAX_REPLY}"}}).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


# ---- the fence ---------------------------------------------------------------------------------


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _rlimits(settings: dict) -> bool:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, settings["files"]),
              (resource.RLIMIT_FSIZE, settings["file_bytes"])]
    if settings["memory"] and sys.platform != "darwin":  # macOS does not enforce RLIMIT_AS
        limits.append((resource.RLIMIT_AS, settings["memory"]))
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC (seccomp covers it)
        limits.append((resource.RLIMIT_NPROC, 0))
    ok = True
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            ok = False
    return ok


def _pdeathsig(libc, parent: int) -> bool:
    if libc is None or not sys.platform.startswith("linux"):
        return False
    if libc.prctl(1, 9, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, SIGKILL
        return False
    if os.getppid() != parent:  # arx went before the signal was armed
        os._exit(3)
    return True


def _netns(libc) -> bool:
    if libc is None or not sys.platform.startswith("linux"):
        return False
    for flags in (0x40000000, 0x10000000 | 0x40000000):  # CLONE_NEWNET, + CLONE_NEWUSER
        if libc.unshare(flags) == 0:
            return True
    return False


def _syscall(libc, *args):
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(*args)


def _landlock(libc, tmp: str) -> bool:
    """Files: read-only under the Python installation, read-write in ``tmp``, no exec; no TCP;
    no signals or abstract sockets outside the worker (as far as the kernel's ABI goes)."""
    if libc is None or not sys.platform.startswith("linux"):
        return False
    abi = _syscall(libc, 444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    if abi < 1:
        return False
    fs = (1 << 13) - 1
    fs |= (1 << 13) if abi >= 2 else 0
    fs |= (1 << 14) if abi >= 3 else 0
    fs |= (1 << 15) if abi >= 5 else 0
    attr = struct.pack("Q", fs)
    if abi >= 4:
        attr += struct.pack("Q", 0b11)  # bind and connect TCP
    if abi >= 6:
        attr += struct.pack("Q", 0b11)  # scoped: abstract unix sockets, signals
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _syscall(libc, 444, buf, len(attr), 0)
    if ruleset < 0:
        return False
    read = (1 << 2) | (1 << 3)
    roots = {os.path.dirname(os.__file__), sys.prefix, sys.base_prefix, sys.exec_prefix}
    rules = [(p, read) for p in sorted(roots) if p and os.path.isdir(p)]
    rules.append((tmp, fs & ~1))
    try:
        for path, access in rules:
            fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY))
            rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
            added = _syscall(libc, 445, ruleset, 1, rule, 0)
            os.close(fd)
            if added != 0:
                return False
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        return _syscall(libc, 446, ruleset, 0) == 0
    finally:
        os.close(ruleset)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp(libc) -> bool:
    machine = platform.machine()
    if libc is None or not sys.platform.startswith("linux") or machine not in _ARCH:
        return False
    deny = (0x00050000 | 1, )  # SECCOMP_RET_ERRNO | EPERM
    allow = 0x7FFF0000
    numbers = _DENIED[machine]
    prog = [(0x20, 0, 0, 4),  # ld arch
            (0x15, 1, 0, _ARCH[machine]),  # jeq native: skip the deny
            (0x06, 0, 0, deny[0]),
            (0x20, 0, 0, 0)]  # ld nr
    if machine == "x86_64":
        prog.append((0x35, len(numbers) + 1, 0, _X32))  # jge x32 -> deny
    for k, nr in enumerate(numbers):
        prog.append((0x15, len(numbers) - k, 0, nr))  # jeq nr -> deny
    prog += [(0x06, 0, 0, allow), (0x06, 0, 0, deny[0])]
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    if libc.prctl(38, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def fence(settings: dict) -> dict:
    """Apply every layer this platform allows; what held, by name."""
    libc = _libc()
    for name in PRELOAD:
        __import__(name)
    held = {"netns": _netns(libc)}
    held["pdeathsig"] = _pdeathsig(libc, settings["parent"])
    held["rlimits"] = _rlimits(settings)
    held["landlock"] = _landlock(libc, settings["tmp"])
    held["seccomp"] = _seccomp(libc)
    return held


# ---- the runner --------------------------------------------------------------------------------


class Worker:
    """The loaded runner and the bookkeeping that lets a fault name its mechanism."""

    def __init__(self, out: _Out, cpu_s: float):
        self.out = out
        self.cpu_s = cpu_s
        self.runner = None
        self.stack: list[str] = []
        self.wrapped: dict[int, object] = {}
        self.blame: str | None = None
        self.emptied: str | None = None
        self.trail: list[str] = []
        self.counts: dict[str, int] = {}
        self.probe: dict = {}
        self.ctx: dict = {}
        #: the run's history records as far as arx sent them (arx sends only new ones)
        self.history: list = []

    # -- bookkeeping
    def mark(self) -> None:
        self.out.send({"at": self.stack[-1] if self.stack else None})

    def wrap(self, obj: object, name: str, fn) -> object:
        label = f"{type(obj).__name__}.{name}"

        def hook(*args, **kwargs):
            self.stack.append(label)
            if label not in self.trail:
                self.trail.append(label)
            self.mark()
            try:
                out = fn(*args, **kwargs)
            except BaseException:
                if self.blame is None:
                    self.blame = label
                raise
            finally:
                self.stack.pop()
                self.mark()
            if name == "filter_candidates" and len(args) > 1 and args[1] \
                    and isinstance(out, (list, tuple)) and not out and self.emptied is None:
                self.emptied = label
            return out
        return hook

    def wrap_mechanisms(self) -> None:
        mechanisms = getattr(self.runner, "mechanisms", None)
        if not isinstance(mechanisms, list):
            return
        for obj in mechanisms:
            if id(obj) in self.wrapped:
                continue
            self.wrapped[id(obj)] = obj
            for name in MECHANISM_HOOKS:
                try:
                    fn = getattr(obj, name, None)
                    if callable(fn):
                        setattr(obj, name, self.wrap(obj, name, fn))
                except Exception:  # a mechanism that refuses attributes keeps its own hooks
                    pass

    def fault(self, kind: str, hook: str, exc: BaseException) -> dict:
        frames = []
        for frame, line in traceback.walk_tb(exc.__traceback__):
            code = frame.f_code
            if code.co_filename != FILENAME:
                continue
            qualname = getattr(code, "co_qualname", None)
            if qualname is None:
                owner = frame.f_locals.get("self")
                qualname = f"{type(owner).__name__}.{code.co_name}" if owner is not None \
                    else code.co_name
            frames.append([qualname, linecache.getline(FILENAME, line).strip()])
        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
        return {"ok": False, "fault": {"kind": kind, "hook": hook, "error": error[-4000:],
                                       "mechanism": self.blame, "frames": frames[-12:],
                                       "trail": self.trail}}

    def n_candidates(self):
        value = getattr(self.runner, "n_candidates", 1)
        if isinstance(value, int) and not isinstance(value, bool):
            return min(value, 1 << 31)
        return repr(value)[:80]

    def limit_cpu(self) -> None:
        if not self.cpu_s:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + self.cpu_s) + 1
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            pass

    def begin(self) -> None:
        self.blame = self.emptied = None
        self.trail = []
        self.limit_cpu()

    def answer(self, result=None) -> dict:
        return {"ok": True, "result": result, "n_candidates": self.n_candidates(),
                "emptied": self.emptied, "trail": self.trail}

    # -- operations
    def load(self, msg: dict) -> dict:
        self.begin()
        source = msg["source"]
        hook = "load"
        try:
            code = compile(source, FILENAME, "exec", dont_inherit=True)
            linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
            module = types.ModuleType(msg["module"])
            module.__file__ = FILENAME
            sys.modules[msg["module"]] = module
            exec(code, module.__dict__)
            cls = getattr(module, "Runner", None)
            if not isinstance(cls, type):
                raise TypeError("runner.py defines no class Runner")
            self.counting(module, msg.get("probe"))
            hook = "__init__"
            self.runner = cls(dict(msg["config"]))
            missing = [h for h in RUNNER_HOOKS if not callable(getattr(self.runner, h, None))]
            if missing:
                raise TypeError(f"Runner lacks hook(s): {', '.join(missing)}")
            self.wrap_mechanisms()
        except BaseException as e:
            return self.fault("load", hook, e)
        return self.answer()

    def call(self, msg: dict) -> dict:
        self.begin()
        hook = msg["hook"]
        if "ctx" in msg:
            self.ctx = self.context(msg["ctx"])
        try:
            self.wrap_mechanisms()
            result = getattr(self.runner, hook)(self.ctx, *msg.get("args", ()))
            self.wrap_mechanisms()
            return self.answer(None if hook == "observe" else result)
        except BaseException as e:
            return self.fault("exception", hook, e)

    def context(self, ctx: dict) -> dict:
        """The hooks' ``ctx``: the history arx sent before plus the records new in this one.
        Each context gets its own list of copied records, so a hook that edits them changes
        nothing the next context shows (their nested values are shared)."""
        if "history_tail" in ctx:
            self.history = self.history[:ctx.pop("history_from")] + ctx.pop("history_tail")
        elif isinstance(ctx.get("history"), list):
            self.history = ctx["history"]
        else:
            return ctx
        ctx["history"] = [dict(r) if isinstance(r, dict) else r for r in self.history]
        return ctx

    def replay(self, msg: dict) -> dict:
        """observe() every record again, as a fresh runner does (one progress line each)."""
        base = msg["ctx"]
        for k, record in enumerate(msg["records"]):
            self.begin()
            ctx = dict(base, iteration=record.get("iteration"), history=list(base["history"]))
            try:
                self.wrap_mechanisms()
                self.runner.observe(ctx, record)
            except BaseException as e:
                return self.fault("exception", "observe", e)
            self.out.send({"done": k + 1})
        return self.answer()

    # -- the gate's integration probe
    def counting(self, module: types.ModuleType, probe: dict | None) -> None:
        if not probe:
            return
        name = probe.get("mechanism")
        cls = getattr(module, name, None) if name else None
        info = {"class": isinstance(cls, type), "methods": [], "missing": []}
        if isinstance(cls, type):
            original = cls.__init__

            def init(obj, *args, **kwargs):
                if type(obj) is cls:
                    self.count(f"{name}.__init__")
                original(obj, *args, **kwargs)
            for attr, fn in list(vars(cls).items()):
                if isinstance(fn, types.FunctionType) and attr not in ("__init__",
                                                                         "__post_init__"):
                    info["methods"].append(attr)
                    setattr(cls, attr, self.counted(fn, f"{name}.{attr}"))
            cls.__init__ = init
        runner = module.Runner
        for method in probe.get("methods", ()):
            fn = vars(runner).get(method)
            if isinstance(fn, types.FunctionType):
                setattr(runner, method, self.counted(fn, f"Runner.{method}"))
            else:
                info["missing"].append(method)
        self.probe = info

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def counted(self, fn, key: str):
        def counting(*args, **kwargs):
            self.count(key)
            return fn(*args, **kwargs)
        counting.__name__ = getattr(fn, "__name__", key)
        return counting

    def report(self, msg: dict) -> dict:
        return {"ok": True, "result": {**self.probe, "calls": dict(self.counts)}}


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    settings = json.loads(sys.argv[1])
    out = _Out()
    in_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    held = fence(settings)
    worker = Worker(out, settings.get("cpu_s") or 0)
    out.send({"ok": True, "ready": True, "sandbox": held, "pid": os.getpid()})
    ops = {"load": worker.load, "call": worker.call, "replay": worker.replay,
           "probe": worker.report}
    with os.fdopen(in_fd, "rb") as stream:
        for line in stream:
            msg = json.loads(line)
            op = ops.get(msg.get("op"))
            if op is None:
                break
            out.send(op(msg))
    os._exit(0)


if __name__ == "__main__":
    main()
