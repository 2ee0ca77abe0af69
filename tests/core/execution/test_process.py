"""Process groups, pid files and the signal guard, with real processes and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arx.core.execution import process
from arx.core.execution.process import (
    Interrupted,
    SignalGuard,
    group_alive,
    kill_group,
    kill_stale,
    pid_alive,
    signal_recorded,
    start_group,
    start_ticks,
    write_pid_file,
)

from support.procs import gone, wait_for

# serial: (pytest -m serial) signals and process groups timed against live children; not beside another test's load (README)
pytestmark = pytest.mark.serial


def sh(command: str, tmp_path: Path) -> subprocess.Popen:
    return start_group(["/bin/sh", "-c", command], tmp_path, os.environ)


def test_start_group_leads_its_own_group_with_merged_output(tmp_path):
    proc = start_group(["/bin/sh", "-c", "echo out; echo err >&2; cat"], tmp_path,
                       {"PATH": os.environ["PATH"]}, text=True)
    out, _ = proc.communicate(timeout=10)  # cat reads /dev/null: it ends at once
    assert out == "out\nerr\n" and proc.returncode == 0
    assert proc.pid != os.getpgrp()
    with pytest.raises(OSError):
        start_group(["true"], tmp_path / "missing", os.environ)


def test_kill_group_reaches_a_grandchild(tmp_path):
    gc = tmp_path / "grandchild.pid"
    proc = sh(f"sleep 60 & echo $! > {gc}; sleep 60", tmp_path)
    grandchild = int(wait_for(gc))
    assert os.getpgid(grandchild) == proc.pid  # in the leader's group, not in ours
    t0 = time.monotonic()
    assert kill_group(proc.pid, proc) is True
    assert time.monotonic() - t0 < 2.0  # sleep dies on SIGTERM: no grace period waited out
    assert gone(grandchild) and proc.poll() == -signal.SIGTERM
    assert not group_alive(proc.pid)
    assert kill_group(proc.pid, proc) is False  # nothing left to kill


def test_kill_group_sigkills_what_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "KILL_GRACE_S", 0.3)  # the default grace, read at call time
    gc = tmp_path / "grandchild.pid"
    proc = sh(f"trap '' TERM; sleep 60 & echo $! > {gc}; sleep 60", tmp_path)
    grandchild = int(wait_for(gc))
    t0 = time.monotonic()
    assert kill_group(proc.pid, proc) is True
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert gone(grandchild) and proc.returncode == -signal.SIGKILL


def test_group_alive_ignores_zombies_and_pid_alive(tmp_path):
    proc = sh("exit 0", tmp_path)
    deadline = time.monotonic() + 5
    while group_alive(proc.pid) and time.monotonic() < deadline:  # a zombie until reaped
        time.sleep(0.02)
    assert not group_alive(proc.pid) and proc.poll() == 0
    assert pid_alive(os.getpid()) and not pid_alive(proc.pid)


# ---------------------------------------------------------------------- pid files

_ORPHAN_MAKER = """
import os, sys, time
from pathlib import Path
from arx.core.execution.process import start_group, write_pid_file
tmp = Path(sys.argv[1])
proc = start_group(["/bin/sh", "-c", f"sleep 60 & echo $! > {tmp / 'gc.pid'}; sleep 60"], tmp,
                   os.environ)
write_pid_file(tmp / "trial.pid", proc.pid, "sleep 60")
time.sleep(60)
"""


def test_kill_stale_kills_the_group_of_an_arx_killed_with_sigkill(tmp_path):
    arx = subprocess.Popen([sys.executable, "-c", _ORPHAN_MAKER, str(tmp_path)])
    grandchild = int(wait_for(tmp_path / "gc.pid", within=10))
    pid_path = tmp_path / "trial.pid"
    record = json.loads(wait_for(pid_path))
    assert record["arx_pid"] == arx.pid and record["start"] == start_ticks(record["pgid"])
    arx.kill()  # kill -9 arx: nothing cleans up, the group keeps running
    arx.wait()
    pgid = record["pgid"]
    assert group_alive(pgid) and not gone(grandchild, within=0.2)
    assert kill_stale(pid_path) is True
    assert gone(grandchild) and gone(pgid)
    assert not pid_path.exists()
    assert kill_stale(pid_path) is False  # nothing recorded any more


def test_kill_stale_leaves_dead_and_unrelated_groups(tmp_path):
    pid_path = tmp_path / "trial.pid"
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    pid_path.write_text(json.dumps({"pgid": done.pid, "start": None}))
    assert kill_stale(pid_path) is False and not pid_path.exists()
    # a live group whose leader started at another time than recorded is a reused pid
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pid_path.write_text(json.dumps({"pgid": other.pid, "start": 1}))
        assert kill_stale(pid_path) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    pid_path.write_text("not json")
    assert kill_stale(pid_path) is False and not pid_path.exists()


def test_signal_recorded_signals_only_the_recorded_group(tmp_path):
    pid_path = tmp_path / "slot.pid"
    proc = sh("sleep 60", tmp_path)
    try:
        pid_path.write_text(json.dumps({"pgid": proc.pid, "start": 1}))  # a reused pid
        signal_recorded(pid_path, signal.SIGTERM)
        assert proc.poll() is None
        write_pid_file(pid_path, proc.pid, "sleep 60")
        signal_recorded(pid_path, signal.SIGTERM)
        assert proc.wait(timeout=5) == -signal.SIGTERM
        signal_recorded(tmp_path / "missing.pid", signal.SIGTERM)  # nothing to do
    finally:
        kill_group(proc.pid, proc)


# ---------------------------------------------------------------------- the signal guard


def test_signal_guard_holds_a_signal_then_redelivers_it():
    received, seen = [], []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        guard = SignalGuard(on_signal=seen.append)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        assert guard.caught == signal.SIGTERM  # the first one is kept
        assert seen == [signal.SIGTERM, signal.SIGHUP] and received == []
        with pytest.raises(Interrupted) as exc:
            guard.arm()  # one came already: the children are to be stopped at once
        assert exc.value.signum == signal.SIGTERM
        guard.restore()
        guard.redeliver()
        assert received == [signal.SIGTERM]  # arx's own handler, once the children are gone
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_armed_signal_guard_raises_on_the_first_signal():
    with SignalGuard() as guard:
        guard.arm()
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, in the main thread
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        guard.redeliver()  # Ctrl-C stays Ctrl-C
