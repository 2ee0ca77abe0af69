"""The runner worker's own side: the process in which ``runner/runner.py`` and its mechanisms run.

arx never imports the managed runner. ``worker.py`` starts this file as a script, with the
standard library only (``python -s -S``; it imports nothing from arx and needs nothing secret),
in an allow-listed environment and a directory of its own, and talks to it with one JSON object
per line: the runner's source and config in, then one hook call at a time (the context in, the
hook's result out). Before it reads anything it fences itself in, each layer where the platform
allows it, and reports which ones held (``sandbox`` in its first line):

``worker_fence.fence``: under bwrap, the resource limits and a last seccomp filter in the
namespaces bwrap made; elsewhere the native layers (rlimits, parent-death signal, a network
namespace, Landlock, seccomp).

Then it loads the runner under a fresh module name, wraps the hooks of every object in
``runner.mechanisms`` so that a fault names the mechanism whose hook raised (and tells the parent,
with ``{"at": ...}`` lines, which mechanism hook is running, for a deadline), and answers calls.
A fault is an answer ``{"ok": false, "fault": {...}}``; whatever the code does to this process
(exit, loop, crash, monkeypatch), arx only sees lines on a pipe, checks them, and kills the
worker at its deadline.
"""

import json
import linecache
import os
import resource
import sys
import traceback
import types

from worker_fence import fence  # its sibling, imported while its directory is on sys.path

#: where the runner's code claims to live (tracebacks name it; the source is in linecache)
FILENAME = "runner.py"
#: the Runner hooks the engine calls, and the optional hooks of a mechanism object
RUNNER_HOOKS = ("build_prompt", "focus", "filter_candidates", "select", "confirm_seeds", "accept",
                "observe")
MECHANISM_HOOKS = ("extend_prompt", "focus", "filter_candidates", "observe")
#: Runner hooks added after runners were first written: a runner without one answers None
#: (``prune``: never stop a trial early), so the runners of older run branches still load
OPTIONAL_HOOKS = ("prune",)
#: the largest answer line (bytes); the parent refuses longer ones too
MAX_REPLY = 16 << 20

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
            if hook in OPTIONAL_HOOKS and not callable(getattr(self.runner, hook, None)):
                return self.answer(None)
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
