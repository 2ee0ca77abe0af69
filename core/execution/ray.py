"""``RayExecutor``: each trial a Ray task, so a cluster evaluates several candidates at once.

Imported only when ``--executor ray`` is chosen (``pip install "arx-autoresearch[ray]"``); arx
must be importable on every node (installed there, or shipped with
``runtime_env={"py_modules": [...]}``).

A task writes the job's files into a directory of its worker process (under the node's temp dir,
reused by the worker's later jobs as a local slot is), runs the setup once there, then ``run_trial``, and
returns the ``TrialResult`` with the node and pid that ran it and the whole log. Ray never
retries a trial (``max_retries=0``): a worker or node that dies is the trial's CRASH, with the
reason Ray gave. Each task starts a tiny reaper process, detached from the worker, that kills the
trial's process group when the worker dies or is cancelled, so no training run is left behind
(except for a worker killed in the microseconds between starting the trial and recording it). The driver also gives every
job a deadline (its timeout, its setup's if it has one, and a margin) and cancels a task that
has not answered by then (a hung worker, a partitioned node): that job is a TIMEOUT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.exceptions as rex

from arx.core.errors import ConfigError
from arx.core.execution.executor import (
    SETUP_TIMEOUT_S,
    Executor,
    JobResult,
    TrialJob,
    error_result,
    run_in_dir,
)
from arx.core.execution.process import pid_alive
from arx.core.execution.trial import ExecStatus

#: most bytes of a trial's log sent back to the driver (its end is kept)
LOG_LIMIT = 4 << 20
#: seconds the driver waits beyond a job's own deadlines before it gives up on the task
MARGIN_S = 30.0

# Forks away from the worker first: Ray kills a worker's children when it cancels a task.
_REAPER = """\
import os, sys
if os.fork():
    os._exit(0)
from arx.core.execution.process import kill_stale
sys.stdin.buffer.read()  # EOF: the worker finished the trial, or died
kill_stale(sys.argv[1])
"""

_worker_dir: Path | None = None
_setup_done: set[str] = set()
_jobs_run = 0


def _job_dir() -> Path:
    """This worker process's job directory, ``$TMPDIR/arx-ray-<uid>/worker-<pid>``; made on
    its first job, after removing what workers that no longer exist left there."""
    global _worker_dir
    if _worker_dir is None:
        base = Path(tempfile.gettempdir()) / f"arx-ray-{os.getuid()}"
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob("worker-*"):
            pid = old.name.split("-", 1)[1].split(".", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            elif old.suffix == ".log":  # a pid file is the reaper's: it removes it
                old.unlink(missing_ok=True)
        _worker_dir = base / f"worker-{os.getpid()}"
        _worker_dir.mkdir(exist_ok=True)
    return _worker_dir


def _run_on_worker(job: TrialJob) -> dict[str, Any]:
    """The Ray task: run ``job`` in this worker's directory; never raises for the trial."""
    started = time.time()
    cwd = _job_dir()
    global _jobs_run
    _jobs_run += 1  # a pid file per job: a late reaper must not find the next job's trial
    pid_path = cwd.parent / f"{cwd.name}.{_jobs_run}.pid"
    log_path = cwd.parent / f"{cwd.name}.log"
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(pid_path)],
                              stdin=subprocess.PIPE, start_new_session=True)
    reaper.wait()  # its fork lives on, holding the pipe's read end
    try:
        result = run_in_dir(job, cwd, _setup_done, log_path, pid_path=pid_path)
    finally:
        assert reaper.stdin is not None
        reaper.stdin.close()
    log = ""
    if log_path.exists():
        with open(log_path, "rb") as f:
            f.seek(max(0, log_path.stat().st_size - LOG_LIMIT))
            log = f.read().decode("utf-8", errors="replace")
        log_path.unlink()
    node = ray.util.get_node_ip_address()
    return {"result": result, "worker": f"ray:{node}/{os.getpid()}", "started_at": started,
            "finished_at": time.time(), "log": log}


def ray_error_reason(exc: BaseException) -> tuple[ExecStatus, str]:
    """What a Ray error on a trial's task means, as a status and one readable sentence."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, rex.TaskCancelledError):
        return ExecStatus.INTERRUPTED, "the Ray task was cancelled"
    if isinstance(exc, rex.OutOfMemoryError):
        return ExecStatus.CRASH, "Ray's memory monitor killed the task (its node ran out of memory)"
    if isinstance(exc, rex.WorkerCrashedError):
        return ExecStatus.CRASH, ("the Ray worker running the trial died (killed, or out of "
                                  "memory?)")
    if isinstance(exc, (rex.NodeDiedError, rex.LocalRayletDiedError)):
        return ExecStatus.CRASH, f"the Ray node running the trial was lost: {first}"
    if isinstance(exc, (rex.ObjectLostError, rex.OwnerDiedError)):
        return ExecStatus.CRASH, f"the trial's result was lost with its Ray node: {first}"
    if isinstance(exc, rex.RuntimeEnvSetupError):
        return ExecStatus.CRASH, f"Ray could not set up the task's runtime_env: {first}"
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        what = f"{type(cause).__name__}: {cause}" if cause else first
        return ExecStatus.CRASH, f"the Ray task failed before finishing the trial ({what})"
    return ExecStatus.CRASH, f"Ray error {type(exc).__name__}: {first}"


class RayExecutor(Executor):
    """Runs each job as a Ray task with ``num_cpus``/``num_gpus``, ``slots`` tasks at a time.

    ``address`` None starts a local Ray instance, unless this process is already connected
    (then that connection is used and left open on ``close``); "auto" or "ray://host:10001"
    joins a cluster. ``slots`` None: as many as the cluster's CPUs (or GPUs, when
    ``num_gpus`` > 0) allow. ``runtime_env`` goes with every task. Logs are written to
    ``log_dir/<key>.log`` on the driver when ``log_dir`` is given.
    """

    def __init__(self, address: str | None = None, slots: int | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, runtime_env: Mapping | None = None,
                 log_dir: Path | None = None):
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"could not connect to Ray at {address or 'a local instance'}: "
                                  f"{exc}", hint="check --address (e.g. `auto` on a cluster "
                                  "node, started with `ray start --head`)") from None
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.slots = slots or self._cluster_slots()
        if self.slots < 1:
            raise ConfigError(f"the number of parallel trials must be at least 1, got {slots}",
                              hint="pass --parallel N with N >= 1")
        self._task = ray.remote(_run_on_worker)
        self._closed = False

    def _cluster_slots(self) -> int:
        res = ray.cluster_resources()
        if self.num_gpus > 0:
            n = int(res.get("GPU", 0) // self.num_gpus)
            if n < 1:
                raise ConfigError(f"the Ray cluster has no GPU for num_gpus={self.num_gpus}",
                                  hint="set [executor] num_gpus = 0 in arx.toml, or add GPU nodes")
            return n
        return max(1, int(res.get("CPU", 1) // max(self.num_cpus, 1e-9)))

    def _submit(self, job: TrialJob) -> ray.ObjectRef:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                   "max_retries": 0, "name": f"arx:{job.key}"}
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        return self._task.options(**options).remote(job)

    def run(self, jobs: Sequence[TrialJob]) -> list[JobResult]:
        if self._closed:
            raise RuntimeError("the executor is closed")
        self.check_keys(jobs)
        results: list[JobResult | None] = [None] * len(jobs)
        waiting = list(enumerate(jobs))
        running: dict[ray.ObjectRef, tuple[int, float, float]] = {}  # -> index, start, deadline
        try:
            while waiting or running:
                while waiting and len(running) < self.slots:
                    index, job = waiting.pop(0)
                    allowance = job.timeout_s + MARGIN_S + (SETUP_TIMEOUT_S if job.setup else 0)
                    now = time.time()
                    running[self._submit(job)] = (index, now, time.monotonic() + allowance)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    index, submitted, _ = running.pop(ref)
                    results[index] = self._collect(ref, jobs[index], submitted)
                for ref, (index, submitted, deadline) in list(running.items()):
                    if time.monotonic() >= deadline:
                        ray.cancel(ref, force=True)
                        del running[ref]
                        wall = time.time() - submitted
                        reason = (f"no answer from the Ray task after {wall:.0f} s (hung worker "
                                  "or unreachable node); it was cancelled")
                        results[index] = JobResult(jobs[index].key, error_result(
                            reason, wall, ExecStatus.TIMEOUT), submitted, time.time(), "ray")
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)  # the worker dies; its reaper kills the trial
            raise
        return [r for r in results if r is not None]

    def _collect(self, ref: ray.ObjectRef, job: TrialJob, submitted: float) -> JobResult:
        try:
            out = ray.get(ref)
        except Exception as exc:
            status, reason = ray_error_reason(exc)
            now = time.time()
            return JobResult(job.key, error_result(reason, now - submitted, status),
                             submitted, now, "ray")
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{job.key}.log").write_text(out["log"])
        return JobResult(job.key, out["result"], out["started_at"], out["finished_at"],
                         out["worker"])

    def close(self) -> None:
        if not self._closed and self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._closed = True


__all__ = ["RayExecutor", "ray_error_reason"]
