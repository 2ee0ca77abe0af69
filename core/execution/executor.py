"""Run several trials at once: the executor contract and what every executor shares.

An engine that evaluates several candidates per iteration hands them to an ``Executor`` as
``TrialJob``s: every file the command needs (the candidate's patched target among them), the
command, its timeout and environment. The executor writes the files into a directory of its own,
runs ``run_trial`` there and hands back one ``JobResult`` per job, in job order. Executors never
touch the run's worktree or its git repository: git writes stay on the driver.

``LocalExecutor`` (``local.py``) is the reference implementation: N slots on this machine, each a
directory and a thread running one trial subprocess at a time. ``RayExecutor`` (``ray.py``, needs
the ``ray`` extra) runs each job as a Ray task on a cluster; ``make_executor`` (``factory.py``)
picks one.

    with make_executor("local", run_dir / "slots", slots=2) as ex:
        results = ex.run([TrialJob("0001-trial-c0", files, "python train.py", 600, "val_bpb"), ...])
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

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
    #: relative posix path -> absolute path on the driver: symlinked into the job's directory
    #: (``[target] include``: data git does not track; on Ray it must exist on every node)
    links: Mapping[str, str] = field(default_factory=dict)
    progress_regex: str | None = None  # the step a line names (learning curves)

    def __post_init__(self) -> None:
        for rel in [*self.files, *self.links]:
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or not path.parts or rel == MANIFEST:
                raise ValueError(f"job {self.key}: file path {rel!r} must stay inside its directory")

    def spec(self, cwd: Path, log_path: Path | None = None, pid_path: Path | None = None,
             env: Mapping[str, str] | None = None) -> TrialSpec:
        """The ``TrialSpec`` of this job run in ``cwd``; ``env`` is merged over the job's."""
        return TrialSpec(command=self.command, cwd=cwd, timeout_s=self.timeout_s,
                         metric=self.metric, metric_regex=self.metric_regex,
                         env={**self.env, **(env or {})}, drop_env=self.drop_env,
                         log_path=log_path, pid_path=pid_path,
                         progress_regex=self.progress_regex)


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

    @staticmethod
    def check_keys(jobs: Sequence[TrialJob]) -> None:
        """Misuse, raised: two jobs of one ``run`` with the same key."""
        keys = [job.key for job in jobs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"job keys must be unique, got {keys}")

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


def link_files(directory: Path, links: Mapping[str, str]) -> None:
    """Symlink each ``links`` target into ``directory`` (kept when it already points there)."""
    for rel, target in links.items():
        path = directory / rel
        if path.is_symlink():
            if os.readlink(path) == target:
                continue
            path.unlink()
        elif path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


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


def run_in_dir(job: TrialJob, cwd: Path, setup_done: set[str], log_path: Path | None,
               setup_log: Path | None = None, pid_path: Path | None = None,
               env: Mapping[str, str] | None = None) -> TrialResult:
    """Run ``job`` in its directory ``cwd``: lay in its files, run its setup unless
    ``setup_done`` (this directory's record, updated here) already holds it, then the command.
    A failed setup is the job's result."""
    write_files(cwd, job.files)
    link_files(cwd, job.links)
    if job.setup and job.setup not in setup_done:
        failed = run_setup(job, cwd, setup_log, env, pid_path)
        if failed is not None:
            return failed
        setup_done.add(job.setup)
    return run_trial(job.spec(cwd, log_path, pid_path, env))
