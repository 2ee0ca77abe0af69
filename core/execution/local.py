"""The reference executor: ``slots`` trial subprocesses at a time on this machine.

Each slot is a directory and a thread running one trial at a time; GPUs, when there are any, are
shared among the slots through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from arx.core.errors import ConfigError
from arx.core.execution.executor import (
    Executor,
    JobResult,
    TrialJob,
    error_result,
    run_in_dir,
)
from arx.core.execution.process import KILL_GRACE_S, SignalGuard, kill_stale, signal_recorded
from arx.core.execution.trial import ExecStatus


def detect_gpus() -> list[str] | None:
    """The GPUs trials may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``'s list;
    None without GPUs (or without nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
        return ids or None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    ids = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ids if out.returncode == 0 and ids else None


def split_gpus(gpus: Sequence[str], slots: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` per slot: contiguous shares when there are at least as many
    GPUs as slots (4 GPUs, 2 slots: "0,1" and "2,3"), else slots share GPUs round-robin."""
    n = len(gpus)
    if n >= slots:
        sizes = [n // slots + (i < n % slots) for i in range(slots)]
        starts = [sum(sizes[:i]) for i in range(slots)]
        return [",".join(gpus[s:s + k]) for s, k in zip(starts, sizes)]
    return [gpus[i % n] for i in range(slots)]


class LocalExecutor(Executor):
    """``slots`` trial subprocesses at a time on this machine (the reference executor).

    Slot ``i`` runs its jobs in ``workdir/slot-<i>``, records the running trial's process group
    in ``pid_dir/slot-<i>.pid`` (default: ``workdir``) for ``kill_stale``, writes each job's log
    to ``log_dir/<key>.log`` (none without ``log_dir``), and, when ``gpus`` are given, sets
    ``CUDA_VISIBLE_DEVICES`` to its share of them (see ``split_gpus``). Every trial also gets
    ``ARX_SLOT=<i>`` (e.g. to pick a free port). In the main thread, SIGINT, SIGTERM and SIGHUP
    stop every running trial before they reach arx's own handlers, as with ``run_trial``.
    """

    def __init__(self, workdir: Path, slots: int = 1, gpus: Sequence[str] | None = None,
                 log_dir: Path | None = None, pid_dir: Path | None = None):
        if slots < 1:
            raise ConfigError(f"the number of parallel trials must be at least 1, got {slots}",
                              hint="pass --parallel N with N >= 1")
        self.workdir = Path(workdir)
        self.slots = slots
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.pid_dir = Path(pid_dir) if pid_dir is not None else self.workdir
        self.slot_gpus = split_gpus(list(gpus), slots) if gpus else None
        self._setup_done: list[set[str]] = [set() for _ in range(slots)]
        self._closed = False

    def slot_dir(self, slot: int) -> Path:
        return self.workdir / f"slot-{slot}"

    def pid_path(self, slot: int) -> Path:
        return self.pid_dir / f"slot-{slot}.pid"

    def kill_stale(self) -> bool:
        return any([kill_stale(self.pid_path(i)) for i in range(self.slots)])

    def run(self, jobs: Sequence[TrialJob]) -> list[JobResult]:
        if self._closed:
            raise RuntimeError("the executor is closed")
        self.check_keys(jobs)
        results: list[JobResult | None] = [None] * len(jobs)
        pending = list(enumerate(jobs))
        lock = threading.Lock()
        stop = threading.Event()

        def work(slot: int) -> None:
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    index, job = pending.pop(0)
                results[index] = self._run_in_slot(slot, job, stop)

        threads = [threading.Thread(target=work, args=(i,), name=f"arx-slot-{i}", daemon=True)
                   for i in range(min(self.slots, len(jobs)))]
        with SignalGuard(on_signal=lambda _signum: stop.set()) as guard:
            try:
                for t in threads:
                    t.start()
                self._wait(threads, stop)
            except BaseException:
                stop.set()
                self._wait(threads, stop)
                raise
        guard.redeliver()  # trials are stopped: now let arx's handler act
        now = time.time()
        return [r or JobResult(job.key, error_result("not started: arx was interrupted", 0.0,
                                                     ExecStatus.INTERRUPTED), now, now, "local")
                for r, job in zip(results, jobs)]

    def close(self) -> None:
        self._closed = True

    def _wait(self, threads: list[threading.Thread], stop: threading.Event) -> None:
        """Join the slot threads; once ``stop`` is set, stop their trials (TERM, then KILL)."""
        stopping_since: float | None = None
        while any(t.is_alive() for t in threads):
            if stop.is_set():
                now = time.monotonic()
                stopping_since = stopping_since or now
                sig = signal.SIGTERM if now - stopping_since < KILL_GRACE_S else signal.SIGKILL
                for i in range(self.slots):
                    signal_recorded(self.pid_path(i), sig)
            for t in threads:
                t.join(timeout=0.1)

    def _run_in_slot(self, slot: int, job: TrialJob, stop: threading.Event) -> JobResult:
        worker = f"local-slot-{slot}"
        started = time.time()
        env = {"ARX_SLOT": str(slot)}
        if self.slot_gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.slot_gpus[slot]
        cwd = self.slot_dir(slot)
        logs = self.log_dir
        try:
            result = run_in_dir(job, cwd, self._setup_done[slot],
                                logs / f"{job.key}.log" if logs else None,
                                logs / f"setup-slot-{slot}.log" if logs else None,
                                self.pid_path(slot), env)
        except Exception as exc:  # the executor's own failure (disk full, ...) is the job's
            result = error_result(f"{worker} could not run the job: {exc}",
                                  time.time() - started)
        if stop.is_set() and not result.ok:
            result = error_result("stopped: arx was interrupted", result.wall_s,
                                  ExecStatus.INTERRUPTED, result.log_tail)
        return JobResult(job.key, result, started, time.time(), worker)
