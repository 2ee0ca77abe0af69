"""Run several trials at once: the executor contract, local slots, and the factory.

An engine that evaluates several candidates per iteration hands them to an ``Executor`` as
``TrialJob``s: every file the command needs (the candidate's patched target among them), the
command, its timeout and environment. The executor writes the files into a directory of its own,
runs ``run_trial`` there and hands back one ``JobResult`` per job, in job order. Executors never
touch the run's worktree or its git repository: git writes stay on the driver (DESIGN.md §8).

``LocalExecutor`` is the reference implementation: N slots on this machine, each a directory and
a thread running one trial subprocess at a time. ``RayExecutor`` (``executor_ray.py``, needs the
``ray`` extra) runs each job as a Ray task on a cluster.

    with make_executor("local", run_dir / "slots", slots=2) as ex:
        results = ex.run([TrialJob("0001-trial-c0", files, "python train.py", 600, "val_bpb"), ...])
"""

from __future__ import annotations

import abc
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from arx.core.errors import ConfigError
from arx.core.execution.process import KILL_GRACE_S, SignalGuard, kill_stale, signal_recorded
from arx.core.execution.trial import ExecStatus, TrialResult, TrialSpec, run_trial

#: hard timeout of a job's setup command (it may download and tokenize a data set)
SETUP_TIMEOUT_S = 3600.0
#: file in a job directory listing the files the last job wrote there
MANIFEST = ".arx-files.json"


@dataclass(frozen=True)
class TrialJob:
    """One trial to run somewhere: self-contained, so it can travel to another machine."""

    key: str  # unique per job, e.g. "0007-trial-c1": names its log
    files: Mapping[str, str]  # relative posix path -> text; written into the job's directory
    command: str  # run with /bin/sh -c in that directory
    timeout_s: float
    metric: str
    metric_regex: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()  # withheld from the trial's environment (see TrialSpec)
    setup: str | None = None  # run once per job directory before its first job (idempotent)

    def __post_init__(self) -> None:
        for rel in self.files:
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or not path.parts or rel == MANIFEST:
                raise ValueError(f"job {self.key}: file path {rel!r} must stay inside its directory")

    def spec(self, cwd: Path, log_path: Path | None = None, pid_path: Path | None = None,
             env: Mapping[str, str] | None = None) -> TrialSpec:
        """The ``TrialSpec`` of this job run in ``cwd``; ``env`` is merged over the job's."""
        return TrialSpec(command=self.command, cwd=cwd, timeout_s=self.timeout_s,
                         metric=self.metric, metric_regex=self.metric_regex,
                         env={**self.env, **(env or {})}, drop_env=self.drop_env,
                         log_path=log_path, pid_path=pid_path)


@dataclass(frozen=True)
class JobResult:
    key: str
    result: TrialResult
    started_at: float  # time.time() when the job started (or was submitted, if it never ran)
    finished_at: float  # time.time() when its result was known
    worker: str  # where it ran: "local-slot-0", "ray:10.0.0.5/4242"


class Executor(abc.ABC):
    """Runs trial jobs, at most ``slots`` at a time. The contract every executor keeps:

    - ``run(jobs)`` returns one ``JobResult`` per job, in the order of ``jobs``, once all are
      done. A trial's failure of any kind (crash, timeout, a worker process or a node that died,
      an error of the executor's own machinery) is a result whose ``status`` is not OK and whose
      ``reason`` says what happened; ``run`` never raises for it. It raises only for misuse
      (duplicate keys, a closed executor) and for arx's own interruption: Ctrl-C stops the
      running trials first and then propagates as ``KeyboardInterrupt``.
    - Each job runs in a directory holding exactly the job's ``files`` (files a previous job
      wrote are removed; what commands created, such as a setup's data, stays), never in the
      driver's worktree; ``setup`` has run there successfully before the command. A failed
      setup is the job's CRASH.
    - Nothing is written to the run's git repository, only to the executor's own directories.
    - ``run`` is called from one thread at a time (it is not reentrant); ``close`` stops nothing
      that is running, releases what the executor holds, and is idempotent. Executors are
      context managers that close on exit.
    """

    slots: int

    @abc.abstractmethod
    def run(self, jobs: Sequence[TrialJob]) -> list[JobResult]:
        """Run ``jobs``, at most ``slots`` at once; their results in job order."""

    def run_one(self, job: TrialJob) -> JobResult:
        return self.run([job])[0]

    def kill_stale(self) -> bool:
        """Kill trials that a previous arx, dead without cleaning up, left running.

        Call it while holding the run's lock, before the first ``run``. Returns whether
        something was killed. The default has nothing to kill.
        """
        return False

    def close(self) -> None:  # noqa: B027 - a no-op default is part of the contract
        """Release what the executor holds; idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def check_keys(jobs: Sequence[TrialJob]) -> None:
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job keys must be unique, got {keys}")


def error_result(reason: str, wall_s: float = 0.0, status: ExecStatus = ExecStatus.CRASH,
                 log_tail: str = "") -> TrialResult:
    """The result of a job that failed outside its command (lost worker, setup, executor)."""
    return TrialResult(status, None, None, wall_s, {}, log_tail or reason, reason)


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Make ``directory`` hold ``files``: write them, and remove the files the last call wrote
    that are not among them (other files, made by commands, stay). Files starting with ``#!``
    are made executable."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / MANIFEST
    try:
        previous = set(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError):
        previous = set()
    for rel in previous - set(files):
        path = directory / rel
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            continue  # a tampered manifest: never delete outside the directory
        path.unlink(missing_ok=True)
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if text.startswith("#!"):
            path.chmod(0o755)
    manifest.write_text(json.dumps(sorted(files)))


def run_setup(job: TrialJob, cwd: Path, log_path: Path | None,
              env: Mapping[str, str] | None = None,
              pid_path: Path | None = None) -> TrialResult | None:
    """Run the job's setup in ``cwd``: None on success, else the job's CRASH result."""
    spec = TrialSpec(command=job.setup or "", cwd=cwd, timeout_s=SETUP_TIMEOUT_S,
                     metric=job.metric, env={**job.env, **(env or {})}, drop_env=job.drop_env,
                     log_path=log_path, pid_path=pid_path)
    result = run_trial(spec)
    if result.returncode == 0 and result.status is not ExecStatus.TIMEOUT:
        return None
    return error_result(f"setup command `{job.setup}` failed: {result.reason}", result.wall_s,
                        log_tail=result.log_tail)


# ---------------------------------------------------------------------- local slots


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
        check_keys(jobs)
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
        try:
            write_files(cwd, job.files)
            result = None
            if job.setup and job.setup not in self._setup_done[slot]:
                log = self.log_dir / f"setup-slot-{slot}.log" if self.log_dir else None
                result = run_setup(job, cwd, log, env, self.pid_path(slot))
                if result is None:
                    self._setup_done[slot].add(job.setup)
            if result is None:
                log = self.log_dir / f"{job.key}.log" if self.log_dir else None
                result = run_trial(job.spec(cwd, log, self.pid_path(slot), env))
        except Exception as exc:  # the executor's own failure (disk full, ...) is the job's
            result = error_result(f"{worker} could not run the job: {exc}",
                                  time.time() - started)
        if stop.is_set() and not result.ok:
            result = error_result("stopped: arx was interrupted", result.wall_s,
                                  ExecStatus.INTERRUPTED, result.log_tail)
        return JobResult(job.key, result, started, time.time(), worker)


# ---------------------------------------------------------------------- factory


def make_executor(kind: str, workdir: Path, slots: int | None = 1, address: str | None = None,
                  *, log_dir: Path | None = None, pid_dir: Path | None = None,
                  gpus: Sequence[str] | None | str = "auto", num_cpus: float = 1,
                  num_gpus: float = 0, runtime_env: Mapping | None = None) -> Executor:
    """``--executor local|ray``: the executor to run a run's trials with.

    local: ``slots`` (default 1) subprocesses; ``gpus="auto"`` shares ``detect_gpus()`` among
    them. ray: ``slots`` None or 0 sizes itself to the cluster; ``address`` None starts a local
    Ray instance, "auto" joins the running one; ``num_cpus``/``num_gpus`` per trial.
    """
    if kind == "local":
        if address is not None:
            raise ConfigError("--address is only used with --executor ray",
                              hint="add --executor ray, or drop --address")
        return LocalExecutor(workdir, slots or 1, detect_gpus() if gpus == "auto" else gpus,
                             log_dir=log_dir, pid_dir=pid_dir)
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray, which is not installed",
                              hint='pip install "arx-autoresearch[ray]"') from None
        from arx.core.execution.ray import RayExecutor

        return RayExecutor(address=address, slots=slots or None, num_cpus=num_cpus,
                           num_gpus=num_gpus, runtime_env=runtime_env, log_dir=log_dir)
    raise ConfigError(f"unknown executor {kind!r}", hint="use --executor local or --executor ray")

