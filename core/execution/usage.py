"""What machine a trial actually got: the CPU its process tree used, and what others used.

On a shared machine a trial in time mode that ran while something else was busy trains less in
its budget and scores worse for a reason that has nothing to do with its change. ``UsageSampler``
watches a trial's process tree from a thread (psutil; no /proc parsing by hand) and the
machine's CPU counters, and reports:

- ``cpu_s``: CPU seconds of the trial's process tree (user + system, reaped children included);
- ``cpu_share``: ``cpu_s`` per wall second (cores the trial kept busy);
- ``others_cpu``: cores the rest of the machine kept busy meanwhile;
- ``load1``: the one-minute load average at the end; ``ncpu``: logical CPUs;
- with NVML and a GPU, what the trial's GPUs did (``gpu.GpuProbe``: ``gpu_util``,
  ``gpu_others``, ``gpu_others_frac``).

The judgement (was this trial contended?) is the engine's, against what its baseline got.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import psutil

from arx.core.execution.gpu import GpuProbe

#: seconds between two samples of the process tree
INTERVAL_S = 0.25


def _busy(times: psutil._common.scputimes) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class UsageSampler:
    """Samples the process tree rooted at ``pid`` until stopped; ``usage()`` then says what the
    trial got. Use as a context manager around the trial's supervision."""

    def __init__(self, pid: int, interval_s: float = INTERVAL_S,
                 env: Mapping[str, str] | None = None):
        self.pid = pid
        #: the trial's GPUs (those its environment makes visible), when NVML sees any
        self.gpu = GpuProbe.open(env) if env is not None else None
        self.interval_s = interval_s
        self.tree_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"usage-{pid}", daemon=True)
        self._start_wall = 0.0
        self._start_busy = 0.0
        self._wall = 0.0
        self._busy_delta = 0.0

    def __enter__(self) -> UsageSampler:
        self._start_wall = time.monotonic()
        self._start_busy = _busy(psutil.cpu_times())
        try:
            self._root: psutil.Process | None = psutil.Process(self.pid)
        except psutil.Error:
            self._root = None
        self._thread.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval_s + 1.0)
        self._wall = time.monotonic() - self._start_wall
        self._busy_delta = _busy(psutil.cpu_times()) - self._start_busy
        if self.gpu is not None:
            self.gpu.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """Add up the tree as it is now; the total only grows (a reaped child's time moves into
        its parent's ``children_*``)."""
        if self._root is None:
            return
        total = 0.0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        self.tree_cpu = max(self.tree_cpu, total)
        if self.gpu is not None:
            self.gpu.sample({p.pid for p in procs})

    def usage(self) -> dict[str, float]:
        wall = max(self._wall, 1e-6)
        others = max(0.0, self._busy_delta - self.tree_cpu) / wall
        return {"cpu_s": round(self.tree_cpu, 3), "cpu_share": round(self.tree_cpu / wall, 3),
                "others_cpu": round(others, 3), "load1": round(os.getloadavg()[0], 2),
                "ncpu": float(psutil.cpu_count() or 1),
                **(self.gpu.usage() if self.gpu is not None else {})}


def machine_busy(seconds: float = 1.0) -> float:
    """Cores the whole machine kept busy over the next ``seconds`` (for waiting until quiet)."""
    before = _busy(psutil.cpu_times())
    start = time.monotonic()
    time.sleep(seconds)
    return max(0.0, _busy(psutil.cpu_times()) - before) / max(time.monotonic() - start, 1e-6)
