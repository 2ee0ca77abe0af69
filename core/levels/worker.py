"""The runner worker, seen from arx: a sandboxed process that runs ``runner/runner.py``.

Generated mechanisms never run in the arx process. ``RunnerWorker`` starts ``worker_main.py``
(standard library only) in its own process group (``process.start_group``) with the environment
of untrusted code (``scrub_env(untrusted=True)``: no provider keys, no ``[llm] api_key_env``
names, nothing that looks secret), in an empty temporary directory, and talks to it with JSON
lines over pipes: the runner's source and config, then one hook call at a time. The worker fences
itself in before it reads anything (limits, no network, files, syscalls: see ``worker_main``) and
reports what held (``sandbox``).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.core.errors import RunnerLoadError
from arx.core.execution.env import scrub_env
from arx.core.execution.process import kill_group, start_group

__all__ = ["MAX_REPLY", "MechanismFault", "RunnerWorker", "WorkerLimits", "WORKER_MAIN"]

#: the worker's own side, run as a script by the interpreter running arx
WORKER_MAIN = Path(__file__).with_name("worker_main.py")
#: the largest answer (bytes) arx reads from a worker
MAX_REPLY = 16 << 20
#: seconds a worker may take to start and fence itself in
START_S = 30.0
#: how long a worker whose output ended may take to exit before its exit code is read
EXIT_WAIT_S = 2.0


@dataclass(frozen=True)
class WorkerLimits:
    """The worker's resource limits (``setrlimit``): address space, open files, bytes per file
    written; and the CPU seconds one call may use (a backstop behind the deadline)."""

    memory_bytes: int = 2 << 30
    open_files: int = 64
    file_bytes: int = 64 << 20
    cpu_s: float = 0.0


class MechanismFault(Exception):
    """The runner failed in its worker: it raised, ran past its deadline, exited or was killed,
    failed to load, answered something invalid, or kept the loop from making progress.

    ``kind`` says which (``exception``, ``load``, ``deadline``, ``exit``, ``result``,
    ``invalid``, ``no_progress``); ``hook`` is the Runner hook arx called; ``mechanism`` the class
    whose hook was running when it failed, if the worker could tell; ``frames`` the
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


class RunnerWorker:
    """One worker process. ``start``, then ``request`` (one JSON message, one answer), ``close``.

    ``deadline_s`` bounds every request after the start (0: no deadline); a request whose worker
    sends progress lines (``{"done": n}``) gets the deadline afresh after each."""

    def __init__(self, deadline_s: float, drop_env: Sequence[str] = (),
                 limits: WorkerLimits = WorkerLimits()):
        self.deadline_s = float(deadline_s)
        self.drop_env = tuple(drop_env)
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.sandbox: dict[str, bool] = {}
        self.at: str | None = None
        self._tmp: Path | None = None
        self._buf = b""
        self._stderr: Any = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- life --------------------------------------------------------------------------------
    def start(self) -> dict[str, bool]:
        """Start the worker and wait until it has fenced itself in; returns what held."""
        self._tmp = Path(tempfile.mkdtemp(prefix="arx-worker-"))
        settings = {"tmp": str(self._tmp), "parent": os.getpid(),
                    "memory": self.limits.memory_bytes, "files": self.limits.open_files,
                    "file_bytes": self.limits.file_bytes,
                    "cpu_s": self.limits.cpu_s or (self.deadline_s + 1 if self.deadline_s else 0)}
        env = {k: v for k, v in scrub_env(self.drop_env, untrusted=True).items()
               if not k.startswith("PYTHON")}
        env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8")
        self._stderr = open(self._tmp / "stderr.txt", "wb")  # noqa: SIM115 - closed in close()
        argv = [sys.executable, "-s", "-S", "-B", str(WORKER_MAIN), json.dumps(settings)]
        try:
            self.proc = start_group(argv, self._tmp, env, stdin=subprocess.PIPE,
                                    stderr=self._stderr)
        except OSError as e:
            self.close()
            raise RunnerLoadError(f"the runner worker could not start: {e}") from None
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stdin.fileno(), False)
        try:
            ready = self._answer("start", max(START_S, self.deadline_s))
        except MechanismFault as fault:
            raise RunnerLoadError(f"the runner worker did not start: {fault.error}",
                                  hint="is the Python running arx complete? (arx starts it "
                                  f"again as `{sys.executable} -s -S`)") from None
        self.sandbox = {k: bool(v) for k, v in (ready.get("sandbox") or {}).items()}
        return self.sandbox

    def close(self) -> None:
        """Stop the worker (its whole group) and remove its directory."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            kill_group(proc.pid, proc, grace=0.0)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._buf = b""

    def __enter__(self) -> RunnerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------
    def request(self, message: Mapping[str, Any], hook: str) -> dict[str, Any]:
        """Send ``message`` and return the worker's answer; ``MechanismFault`` (the worker then
        is gone) when the answer is a fault, late, missing or unreadable."""
        if not self.alive:
            raise MechanismFault(hook, "the runner worker is not running", "exit")
        self.at = None
        data = json.dumps(message, allow_nan=True).encode("utf-8") + b"\n"
        end = self._end(self.deadline_s)
        self._send(data, end, hook)
        answer = self._answer(hook, self.deadline_s)
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
            while view:
                if not sel.select(self._left(end)):
                    self._fail(hook, "deadline", "did not read its input")
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except OSError:
                    self._fail(hook, "exit", "stopped reading its input")

    def _answer(self, hook: str, seconds: float) -> dict[str, Any]:
        """The next answer line; ``at`` and ``done`` lines on the way are noted."""
        end = self._end(seconds)
        while True:
            line = self._line(hook, end)
            try:
                msg = json.loads(line)
            except ValueError:
                self._fail(hook, "result", f"answered something that is not JSON: "
                                           f"{line[:120]!r}")
            if not isinstance(msg, dict):
                self._fail(hook, "result", f"answered {type(msg).__name__}, not an object")
            if "at" in msg and len(msg) == 1:
                self.at = _name(msg["at"])
            elif "done" in msg and len(msg) == 1:
                end = self._end(seconds)
            else:
                return msg

    def _line(self, hook: str, end: float | None) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                if len(self._buf) > MAX_REPLY:
                    self._fail(hook, "result", f"answered more than {MAX_REPLY} bytes")
                if not sel.select(self._left(end)):
                    self._fail(hook, "deadline", "")
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._fail(hook, "exit", "")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

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
        if self._tmp is None:
            return ""
        try:
            with open(self._tmp / "stderr.txt", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2000))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""


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
