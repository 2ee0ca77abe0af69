"""The runner worker, seen from arx: a sandboxed process that runs ``runner/runner.py``.

Generated mechanisms never run in the arx process. ``RunnerWorker`` starts ``worker_main.py``
(standard library only) in its own process group (``process.start_group``) with an environment
from an allow-list (``allowed_env``: nothing of the user's but the path and the locale), and
talks to it with JSON lines over pipes: the runner's source and config, then one hook call at a
time. On Linux it runs inside bubblewrap (``fence.py``: its own namespaces and unprivileged uid,
no capabilities, a read-only view of the Python installation, a private tmpfs, seccomp, dead
with arx); where bwrap cannot run, the worker fences itself in with its native layers before it
reads anything (``worker_main``). Either way it reports what held (``sandbox``).

Every exchange has a deadline kept here, in arx: when it passes, the worker's whole group gets
SIGKILL (``process.kill_group``), whatever the code was doing (a loop that swallows exceptions,
a loop inside one C call, a blocked read). A worker that exits, is killed, answers garbage or
answers more than ``MAX_REPLY`` bytes is a fault too. Faults are ``MechanismFault`` exceptions
carrying what the worker could say about the culprit (the mechanism whose hook ran, the runner
frames of the traceback); a faulted worker is dead and a new one is started for the next runner.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from arx.core.errors import RunnerLoadError
from arx.core.execution.env import allowed_env
from arx.core.execution.process import kill_group, pid_alive, start_group
from arx.core.levels.fence import SANDBOX_MAIN, SANDBOX_TMP, Launch, bwrap_launch, find_bwrap
from arx.core.llm.jsonextract import json_depth

__all__ = ["ISOLATIONS", "MAX_REPLY", "MechanismFault", "RunnerWorker", "WorkerLimits",
           "WORKER_MAIN"]

#: the worker's own side, run as a script by the interpreter running arx
WORKER_MAIN = Path(__file__).with_name("worker_main.py")
#: the largest answer (bytes) arx reads from a worker
MAX_REPLY = 16 << 20
#: the deepest nesting of lists and objects arx parses in an answer (checked before parsing)
MAX_DEPTH = 100
#: seconds a worker may take to start and fence itself in
START_S = 30.0
#: how long a worker whose output ended may take to exit before its exit code is read
EXIT_WAIT_S = 2.0
#: how much of the worker's stderr arx keeps (the end of it, for a fault's message)
STDERR_TAIL = 4000
#: how the worker is fenced in: ``bwrap`` (``fence.py``), ``native`` (``worker_main``'s own
#: layers), ``auto``: bwrap where it is found and starts, else native
ISOLATIONS = ("auto", "bwrap", "native")
#: why bwrap could not start a worker in this process (then ``auto`` goes native at once)
_BWRAP_FAILED: list[str] = []
#: the private directories of native-mode workers: ``arx-worker-<arx's pid>-<random>`` under
#: the system's temporary directory (bwrap's is a tmpfs that dies with the worker)
TMP_PREFIX = "arx-worker-"
#: whether this process has removed the directories killed arx processes left
_SWEPT: list[bool] = []
#: the variables arx sets for the worker
WORKER_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


@dataclass(frozen=True)
class WorkerLimits:
    """The worker's resource limits (``setrlimit``): address space, open files, bytes per file
    written; the CPU seconds one call may use (a backstop behind the deadline); and the size of
    its private directory (a tmpfs under bwrap: all it can write, files and bytes together)."""

    memory_bytes: int = 2 << 30
    open_files: int = 64
    file_bytes: int = 64 << 20
    cpu_s: float = 0.0
    disk_bytes: int = 64 << 20


class MechanismFault(Exception):
    """The runner failed in its worker: it raised, ran past its deadline, exited or was killed,
    failed to load, answered something invalid, or kept the loop from making progress.

    ``kind`` says which (``exception``, ``load``, ``deadline``, ``exit``, ``result``,
    ``invalid``, ``no_progress``, ``slow``); ``hook`` is the Runner hook arx called;
    ``mechanism`` the class whose hook was running when it failed, if the worker could tell
    (a hint: ``blame`` checks it); ``frames`` the
    ``[qualname, source line]`` of each runner frame of the traceback, innermost last; ``trail``
    the mechanism hooks the call went through."""

    def __init__(self, hook: str, error: str, kind: str = "exception",
                 mechanism: str | None = None, frames: Sequence[Sequence[str]] = (),
                 trail: Sequence[str] = ()):
        last = error.strip().splitlines()[-1] if error.strip() else kind
        super().__init__(f"{hook}: {last}")
        self.hook = hook
        self.error = error
        self.kind = kind
        self.mechanism = mechanism
        self.frames = tuple(tuple(f) for f in frames)
        self.trail = tuple(trail)
        #: set by ``RunnerPolicy``: does the same call fail again on another runner source?
        #: (``blame.observed`` asks it with each mechanism taken out)
        self.retry: Callable[[str], bool] | None = None


class RunnerWorker:
    """One worker process. ``start``, then ``request`` (one JSON message, one answer), ``close``.

    ``deadline_s`` bounds every request after the start (0: no deadline); a request whose worker
    gets one deadline that nothing the worker writes extends (``{"done": n}`` progress lines
    are read and ignored); ``request(..., seconds=)`` gives a call its own budget (the history
    catch-up, ``policy.replay``). ``isolation``
    is one of ``ISOLATIONS``; ``drop_env`` is kept for callers from before the allow-list (the
    worker sees none of the user's variables anyway)."""

    def __init__(self, deadline_s: float, drop_env: Sequence[str] = (),
                 limits: WorkerLimits = WorkerLimits(), isolation: str = "auto"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, not {isolation!r}")
        self.deadline_s = float(deadline_s)
        self.drop_env = tuple(drop_env)
        self.limits = limits
        self.isolation = isolation
        self.proc: subprocess.Popen | None = None
        self.sandbox: dict[str, bool] = {}
        #: why bwrap did not fence this worker in (empty when it did)
        self.note = ""
        self.at: str | None = None
        self._tmp: Path | None = None
        self._buf = b""
        self._err = b""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- life --------------------------------------------------------------------------------
    def start(self) -> dict[str, bool]:
        """Start the worker and wait until it has fenced itself in; returns what held."""
        mode = self.isolation
        if mode == "auto":
            mode = "bwrap" if find_bwrap() and not _BWRAP_FAILED else "native"
            self.note = "" if mode == "bwrap" else (
                _BWRAP_FAILED[0] if _BWRAP_FAILED else "no bwrap found")
        if mode == "bwrap":
            try:
                return self._start("bwrap")
            except RunnerLoadError as e:
                if self.isolation == "bwrap":
                    raise
                _BWRAP_FAILED.append(str(e))
                self.note = str(e)
        return self._start("native")

    def _start(self, mode: str) -> dict[str, bool]:
        settings: dict[str, Any] = {
            "fence": mode, "parent": os.getpid(), "memory": self.limits.memory_bytes,
            "files": self.limits.open_files, "file_bytes": self.limits.file_bytes,
            "tmp_bytes": self.limits.disk_bytes,
            "cpu_s": self.limits.cpu_s or (self.deadline_s + 1 if self.deadline_s else 0)}
        interpreter = [sys.executable, "-s", "-S", "-B"]
        if mode == "bwrap":
            bwrap = find_bwrap()
            settings["tmp"] = SANDBOX_TMP
            # the interpreter itself: a virtualenv's python is a link the sandbox may not hold
            # (under /tmp it is hidden by the private tmpfs); -S needs nothing of the venv
            real = [os.path.realpath(sys.executable), *interpreter[1:]]
            launch = bwrap_launch(bwrap, [*real, SANDBOX_MAIN, json.dumps(settings)],
                                  self.limits.disk_bytes) if bwrap else None
            if launch is None:
                raise RunnerLoadError("bwrap cannot fence the runner worker in: "
                                      + ("no user namespace for root" if bwrap else "no bwrap"))
            cwd = Path("/")
        else:
            if not _SWEPT:
                _SWEPT.append(True)
                sweep_stale(Path(tempfile.gettempdir()))
            self._tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
            settings["tmp"] = str(self._tmp)
            launch = Launch([*interpreter, str(WORKER_MAIN), json.dumps(settings)])
            cwd = self._tmp
        env = allowed_env(settings["tmp"], WORKER_ENV)
        try:
            self.proc = start_group(launch.argv, cwd, env, stdin=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=launch.pass_fds,
                                    preexec=launch.preexec)
        except (OSError, subprocess.SubprocessError) as e:
            self.close()
            raise RunnerLoadError(f"the runner worker could not start: {e}") from None
        finally:
            launch.started()
        for pipe in (self.proc.stdout, self.proc.stdin, self.proc.stderr):
            os.set_blocking(pipe.fileno(), False)
        try:
            ready = self._answer("start", max(START_S, self.deadline_s))
        except MechanismFault as fault:
            raise RunnerLoadError(f"the runner worker did not start ({mode}): {fault.error}",
                                  hint="is the Python running arx complete? (arx starts it "
                                  f"again as `{sys.executable} -s -S`)") from None
        self.sandbox = {k: bool(v) for k, v in (ready.get("sandbox") or {}).items()}
        if mode == "bwrap":
            self.sandbox["die_with_parent"] = True
            self.sandbox["uid"] = _unprivileged(self.proc.pid)
        else:
            self.sandbox["bwrap"] = False
        return self.sandbox

    def close(self) -> None:
        """Stop the worker (its whole group) and remove its directory."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
            kill_group(proc.pid, proc, grace=0.0)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._buf = b""

    def __enter__(self) -> RunnerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------
    def request(self, message: Mapping[str, Any], hook: str,
                seconds: float | None = None) -> dict[str, Any]:
        """Send ``message`` and return the worker's answer within ``seconds`` (default: the
        deadline), sending included; ``MechanismFault`` (the worker then is gone) when the
        answer is a fault, late, missing or unreadable."""
        if not self.alive:
            raise MechanismFault(hook, "the runner worker is not running", "exit")
        self.at = None
        data = json.dumps(message, allow_nan=True).encode("utf-8") + b"\n"
        budget = self.deadline_s if seconds is None else seconds
        end = self._end(budget)
        self._send(data, end, hook)
        answer = self._answer(hook, budget, end)
        if answer.get("ok") is not True and not isinstance(answer.get("fault"), dict):
            self._fail(hook, "result", f"the worker answered {json.dumps(answer)[:200]}, not "
                                       "a result: its own code was tampered with")
        if answer.get("ok") is not True:
            fault = answer["fault"]
            self.close()
            raise MechanismFault(
                str(fault.get("hook") or hook), str(fault.get("error") or "failed"),
                str(fault.get("kind") or "exception"), _owner(fault.get("mechanism")),
                _frames(fault.get("frames")), _names(fault.get("trail")))
        return answer

    @staticmethod
    def _end(seconds: float) -> float | None:
        return time.monotonic() + seconds if seconds > 0 else None

    def _send(self, data: bytes, end: float | None, hook: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            self._watch_stderr(sel)
            while view:
                events = sel.select(self._left(end))
                if not events:
                    self._fail(hook, "deadline", "did not read its input")
                if not any(key.fd == fd for key, _ in events):
                    self._drain_stderr(sel)
                    continue
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except OSError:
                    self._fail(hook, "exit", "stopped reading its input")

    def _answer(self, hook: str, seconds: float, end: float | None = None) -> dict[str, Any]:
        """The next answer line by ``end`` (default: ``seconds`` from now); ``at`` lines on
        the way are noted, ``done`` lines read and ignored (they extend nothing)."""
        end = self._end(seconds) if end is None else end
        while True:
            line = self._line(hook, end)
            if json_depth(line, MAX_DEPTH) > MAX_DEPTH:
                self._fail(hook, "result", f"answered JSON nested deeper than {MAX_DEPTH} levels")
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                self._fail(hook, "result", f"answered something that is not JSON: "
                                           f"{line[:120]!r}")
            if not isinstance(msg, dict):
                self._fail(hook, "result", f"answered {type(msg).__name__}, not an object")
            if "at" in msg and len(msg) == 1:
                self.at = _name(msg["at"])
            elif "done" in msg and len(msg) == 1:
                continue
            else:
                return msg

    def _line(self, hook: str, end: float | None) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            self._watch_stderr(sel)
            while b"\n" not in self._buf:
                if len(self._buf) > MAX_REPLY:
                    self._fail(hook, "result", f"answered more than {MAX_REPLY} bytes")
                events = sel.select(self._left(end))
                if not events:
                    self._fail(hook, "deadline", "")
                if not any(key.fd == fd for key, _ in events):
                    self._drain_stderr(sel)
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._fail(hook, "exit", "")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _watch_stderr(self, sel: selectors.BaseSelector) -> None:
        err = self.proc.stderr if self.proc is not None else None
        if err is not None and not err.closed:
            sel.register(err.fileno(), selectors.EVENT_READ)

    def _drain_stderr(self, sel: selectors.BaseSelector) -> None:
        """Read what the worker wrote to stderr; keep its last ``STDERR_TAIL`` bytes."""
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            sel.unregister(fd)
            self.proc.stderr.close()
            return
        self._err = (self._err + chunk)[-STDERR_TAIL:]

    @staticmethod
    def _left(end: float | None) -> float | None:
        return None if end is None else max(0.0, end - time.monotonic())

    def _fail(self, hook: str, kind: str, detail: str) -> None:
        """Kill the worker and raise the fault ``kind`` for ``hook``."""
        proc, at = self.proc, self.at
        if kind == "exit" and proc is not None:
            # its output ended: it is exiting; its exit code says how (on a busy machine it is
            # not reaped yet when the end of output is read, and the fault said only "stopped")
            try:
                proc.wait(timeout=EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        tail = self._stderr_tail()
        self.close()
        if kind == "deadline":
            detail = f"{hook} took longer than {self.deadline_s:g} s (hook_timeout); the " \
                     "worker was killed" + (f" while {at} ran" if at else "")
        elif kind == "exit":
            detail = f"the runner worker {_ended(proc.returncode if proc else None)} " \
                     f"during {hook}" + (f" (in {at})" if at else "") + \
                     (f": it {detail}" if detail else "")
        error = detail + (f"\nworker stderr:\n{tail}" if tail else "")
        raise MechanismFault(hook, error, kind, _owner(at),
                             trail=(at,) if at else ())

    def _stderr_tail(self) -> str:
        proc = self.proc
        if proc is not None and proc.stderr is not None and not proc.stderr.closed:
            try:  # what it wrote on its way out
                self._err = (self._err + (os.read(proc.stderr.fileno(), 1 << 16) or b""))[
                    -STDERR_TAIL:]
            except OSError:
                pass
        tail, self._err = self._err, b""
        return tail.decode("utf-8", "replace").strip()[-2000:]


def _ended(code: int | None) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _name(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


#: the worker's report (``sandbox``) in words
_LAYERS = {"uid": "unprivileged uid", "caps": "no capabilities", "pidns": "own PID namespace",
           "netns": "no network", "readonly": "read-only files", "tmpfs": "private tmpfs",
           "rlimits": "resource limits", "die_with_parent": "dies with arx",
           "pdeathsig": "parent-death signal"}


def fence_report(isolation: str = "auto") -> str:
    """How a runner worker is fenced in on this machine, in one line (``arx check``): a worker
    is started and says which layers held (``RunnerWorker.sandbox``)."""
    try:
        with RunnerWorker(START_S, isolation=isolation) as worker:
            held = worker.start()
            note = worker.note
    except RunnerLoadError as e:
        return f"the runner worker does not start: {e.message}"
    on = [_LAYERS.get(k, k) for k, v in held.items() if v and k != "bwrap"]
    off = [_LAYERS.get(k, k) for k, v in held.items() if not v and k != "bwrap"]
    how = "bubblewrap" if held.get("bwrap") else f"native layers ({note or 'no bwrap'})"
    return f"{how}: {', '.join(on) or 'none'} held" + (f"; not: {', '.join(off)}" if off else "")


def _unprivileged(pid: int) -> bool:
    """Whether every process of the worker (bwrap and what it runs) has uids other than root's
    as this machine's kernel sees them. Read here, outside: from inside, the worker sees its
    uid only one user namespace up, which is 0 when bwrap nests one (``--disable-userns``, as it
    does when arx is not root)."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return len(procs) > 1 and all(0 not in p.uids() for p in procs)
    except psutil.Error:
        return False


def sweep_stale(tmp: Path) -> list[Path]:
    """Remove the native workers' directories under ``tmp`` whose arx process is gone (a killed
    arx cannot remove its own); ours only (same uid), and only by the pid in their name.
    Returns what was removed."""
    removed = []
    for path in tmp.glob(f"{TMP_PREFIX}*"):
        pid = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.is_symlink() or path.stat().st_uid != os.getuid() \
                    or pid_alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _owner(label: object) -> str | None:
    """The class of a ``Class.hook`` label."""
    name = _name(label)
    return name.split(".")[0] if name else None


def _names(value: object) -> tuple[str, ...]:
    return tuple(v[:200] for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _frames(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple((str(f[0])[:200], str(f[1])[:400]) for f in value
                 if isinstance(f, list) and len(f) == 2)
