"""Process groups: the one place arx starts a child, watches it, and kills all it started.

``start_group`` runs a command in a new session, so the child's pgid is its pid and one
``killpg`` reaches every process it started, grandchildren included. ``kill_group`` stops such a
group politely: SIGTERM, up to ``KILL_GRACE_S`` for it to go, then SIGKILL. Trials, executor
slots, Ray tasks and the Level-2 gate all start and stop their children this way.

A running trial's group is recorded in a pid file (``write_pid_file``): ``kill_stale`` finds it
after ``kill -9 arx``, and ``signal_recorded`` signals it from a thread that does not own it. A
record holds the group leader's start time, so a pid the system has since reused is left alone.

``SignalGuard`` holds SIGINT, SIGTERM and SIGHUP while arx's children run: the children are
stopped first, and the signal is then handed to the handler arx had (Ctrl-C still raises
``KeyboardInterrupt``, a default SIGTERM still ends arx).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: seconds between SIGTERM and SIGKILL when a group is stopped
KILL_GRACE_S = 5.0
#: the signals ``SignalGuard`` holds: the ways a user or a scheduler stops arx
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# ---------------------------------------------------------------------- groups


def start_group(argv: Sequence[str], cwd: Path, env: Mapping[str, str], *,
                text: bool = False, stdin: int = subprocess.DEVNULL,
                stderr: Any = subprocess.STDOUT, pass_fds: Sequence[int] = (),
                preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start ``argv`` in ``cwd`` as the leader of a new session and process group.

    stdin is ``/dev/null`` (``stdin=subprocess.PIPE``: a pipe, for a child that is talked to);
    stdout is a pipe (``proc.stdout``) and stderr goes into it unless ``stderr`` names another
    file. ``env`` is the child's whole environment (see ``env.scrub_env``); ``pass_fds`` the
    fds it inherits besides; ``preexec`` runs in the child before exec (the runner worker's
    fence, ``levels/fence.py``). Raises ``OSError`` when the command cannot start.
    """
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=stdin,
                            stdout=subprocess.PIPE, stderr=stderr, text=text,
                            start_new_session=True, pass_fds=tuple(pass_fds),
                            preexec_fn=preexec)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is alive (zombies waiting to be reaped count not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def kill_group(pgid: int, proc: subprocess.Popen | None = None,
               grace: float | None = None) -> bool:
    """SIGTERM the group, wait up to ``grace`` s (default ``KILL_GRACE_S``), then SIGKILL.

    ``proc``, the group's leader when this process started it, is reaped along the way so its
    zombie does not keep the group "alive". Returns whether the group was alive.
    """
    grace = KILL_GRACE_S if grace is None else grace
    if proc is not None:
        proc.poll()
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if proc is not None:
            proc.poll()
        if not group_alive(pgid):
            return True
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate(pid: int) -> bool:
    """Ask process ``pid`` (not a group: e.g. the arx process holding a run) to stop with
    SIGTERM, as ``kill PID`` would; False when it is gone already."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


# ---------------------------------------------------------------------- pid files


def write_pid_file(path: Path, pgid: int, command: str) -> None:
    """Record the running group ``pgid`` in ``path`` (atomically), for ``kill_stale``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pgid": pgid, "start": start_ticks(pgid), "arx_pid": os.getpid(), "command": command}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)


def _read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """(pgid, recorded start) of a pid file; None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
        return int(record["pgid"]), record.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def signal_recorded(path: Path, sig: int) -> None:
    """Send ``sig`` to the group recorded in ``path``, if it is still that group."""
    found = _read_pid_file(path)
    if found is None:
        return
    pgid, recorded = found
    if pgid <= 1 or pgid == os.getpgrp() or recorded != start_ticks(pgid):
        return
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def kill_stale(pid_path: Path) -> bool:
    """Kill the trial group recorded in ``pid_path`` by an arx that died without cleaning up.

    Call it while holding the run's ``RunLock`` (so the pid file cannot belong to a live arx).
    A group whose leader is alive but started at another time than recorded is a reused pid
    and is left alone. Removes the pid file; returns whether something was killed.
    """
    path = Path(pid_path)
    if not path.exists():
        return False
    found = _read_pid_file(path)
    if found is None:
        path.unlink(missing_ok=True)
        return False
    pgid, recorded = found
    killed = False
    now = start_ticks(pgid)
    reused = recorded is not None and now is not None and now != recorded
    if pgid > 1 and pgid != os.getpgrp() and not reused and group_alive(pgid):
        killed = kill_group(pgid)
    path.unlink(missing_ok=True)
    return killed


# ---------------------------------------------------------------------- arx's own signals


class Interrupted(BaseException):
    """Raised by an armed ``SignalGuard``: arx got ``signum`` while its children ran."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """Holds SIGINT, SIGTERM and SIGHUP from its creation until ``restore`` (main thread only;
    elsewhere it installs nothing and the caller must stop its children itself).

    Every signal calls ``on_signal`` (e.g. to set a stop event); the first is kept in
    ``caught``. While the guard is armed (``arm``/``disarm``), the first signal also raises
    ``Interrupted``, so the children can be killed at once. Once they are gone, ``restore``
    the previous handlers and ``redeliver`` the signal to them. As a context manager the guard
    restores on exit.
    """

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.caught: int | None = None
        self.previous: dict[int, object] = {}
        self._on_signal = on_signal
        self._armed = False
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        first = self.caught is None
        if first:
            self.caught = signum
        if self._on_signal is not None:
            self._on_signal(signum)
        if first and self._armed:
            self._armed = False
            raise Interrupted(signum)

    def arm(self) -> None:
        """From now on the first signal raises ``Interrupted``; at once if one came already."""
        if self.caught is not None:
            raise Interrupted(self.caught)
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def restore(self) -> None:
        """Put back the handlers arx had; idempotent."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def redeliver(self) -> None:
        """Hand the caught signal, if any, to the handler installed before: exit, raise, or
        ignore. Call it after ``restore``, once the children are gone."""
        if self.caught is None:
            return
        handler = self.previous.get(self.caught, signal.SIG_DFL)
        if handler is signal.SIG_IGN:
            return
        if callable(handler):
            handler(self.caught, None)
            return
        signal.raise_signal(self.caught)  # default action: arx ends as if never caught

    def __enter__(self) -> SignalGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
