"""How the engine gets a trial measured: the seam between deciding and training.

The engine never starts a process itself. It hands a ``TrialRequest`` (which trial, what it
changes, the file it trains, its timeout) to a ``TrialRunner`` and gets a ``TrialResult`` back;
it stamps the finished record with a ``Clock``; the ``TrialJournal`` writes both to the trace.
``LiveTrials`` and ``Clock`` are the real ones;
replay hands the engine a runner that serves recorded results and a clock that serves recorded
times (``arx.core.replay.engine``), so the same engine code decides in both.
"""

from __future__ import annotations

import abc
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arx.core.config import TargetConfig, load_toml, plain
from arx.core.errors import RunError
from arx.core.execution.curve import CurveReader
from arx.core.execution.executor import SETUP_TIMEOUT_S, Executor
from arx.core.execution.factory import make_executor
from arx.core.execution.process import kill_stale
from arx.core.execution.trial import ExecStatus, TrialResult, TrialSpec, run_trial
from arx.core.execution.usage import machine_busy
from arx.core.loop.noise import QUIET_WAIT_S, quiet_enough, throughput
from arx.core.loop.progress import Training
from arx.core.loop.trace import Trace, TraceRecord
from arx.core.repo.workspace import Workspace
from arx.core.states import TrialKind, TrialState

_EXEC_TO_STATE = {
    ExecStatus.CRASH: TrialState.CRASH,
    ExecStatus.FAIL: TrialState.FAIL,
    ExecStatus.NAN: TrialState.NAN,
    ExecStatus.NO_METRIC: TrialState.NO_METRIC,
    ExecStatus.TIMEOUT: TrialState.TIMEOUT,
    ExecStatus.INTERRUPTED: TrialState.INTERRUPTED,
    ExecStatus.PRUNED: TrialState.PRUNED,
}
#: summary keys copied from the target's output into each trace record
SUMMARY_KEYS = ("training_seconds", "total_seconds", "num_steps", "data_fingerprint",
                "peak_mem_mb", "peak_vram_mb", "num_params_M")
_LABEL = re.compile(r"^(\d+)-([a-z]+)(?:-c(\d+))?(?:-a(\d+))?$")


@dataclass(frozen=True)
class TrialKey:
    """Which trial of a run: the trace's (iteration, kind, seq), and which attempt at it (a
    trial that ran on a contended machine is run again as the next attempt)."""

    iteration: int
    kind: str
    seq: int = 0
    attempt: int = 0

    def job_label(self) -> str:
        """The executor job key of a ``--parallel`` candidate (``0007-trial-c1``)."""
        again = f"-a{self.attempt}" if self.attempt else ""
        return f"{self.iteration:04d}-{self.kind}-c{self.seq}{again}"

    @classmethod
    def from_job_label(cls, label: str) -> TrialKey:
        m = _LABEL.match(label)
        if m is None:
            raise ValueError(f"not a trial job key: {label!r}")
        return cls(int(m.group(1)), m.group(2), int(m.group(3) or 0), int(m.group(4) or 0))

    def again(self) -> TrialKey:
        return TrialKey(self.iteration, self.kind, self.seq, self.attempt + 1)

    def fields(self) -> dict[str, int]:
        """What a trace line says of the key beyond iteration and kind (nothing by default)."""
        return {**({"seq": self.seq} if self.seq else {}),
                **({"attempt": self.attempt} if self.attempt else {})}

    def describe(self) -> str:
        """As a person reads it: ``iteration 4 (trial, candidate 1)``."""
        extra = (f", candidate {self.seq}" if self.kind == TrialKind.TRIAL and self.seq
                 else f", seq {self.seq}" if self.seq else "")
        again = f", attempt {self.attempt + 1}" if self.attempt else ""
        return f"iteration {self.iteration} ({self.kind}{extra}{again})"


@dataclass(frozen=True)
class TrialRequest:
    """One trial to measure: the target as it is now in the worktree (``source``)."""

    key: TrialKey
    changes: Mapping[str, Any]
    source: str
    timeout_s: float
    log_name: str  # the log file's stem, e.g. ``0003-trial`` or ``0003-confirm-1-s2``
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: sees the curve after each new point; True stops the trial (``run_trial``; pruning)
    watch: Callable[[CurveReader], bool] | None = field(default=None, compare=False)


class TrialRunner(abc.ABC):
    """Measures trials for the engine. The contract:

    - ``run`` returns a ``TrialResult`` for every request; a failure of the target (crash,
      timeout, no metric) is a result, never an exception. It raises only for arx's own
      interruption and for what makes the whole run impossible (a failed setup: ``RunError``).
    - ``prepare`` readies the target (its setup) and is idempotent; ``run`` calls it too.
    - ``kill_stale`` stops trials that an arx killed earlier left running (called on resume,
      holding the run's lock).
    """

    @abc.abstractmethod
    def run(self, request: TrialRequest) -> TrialResult: ...

    def prepare(self) -> None:  # noqa: B027 - nothing to prepare is a valid default
        """Ready the target before its first trial."""

    def wait_quiet(self, reference: Mapping[str, float] | None) -> None:  # noqa: B027
        """Wait (boundedly) until the machine is as quiet as it was for the baseline; called
        before a contended trial runs again. Nothing to wait for is a valid default."""

    def kill_stale(self) -> None:  # noqa: B027 - nothing to kill is a valid default
        """Stop what a previous, killed arx left running."""


class LiveTrials(TrialRunner):
    """Trains for real: the target's command in the worktree, after its setup (once)."""

    def __init__(self, cwd: Path, target: TargetConfig, log_dir: Path, pid_path: Path,
                 drop_env: tuple[str, ...]):
        self.cwd = Path(cwd)
        self.target = target
        self.log_dir = Path(log_dir)
        self.pid_path = Path(pid_path)
        self.drop_env = drop_env
        self._setup_done = False

    def _spec(self, command: str, timeout_s: float, log_name: str) -> TrialSpec:
        return TrialSpec(
            command=command, cwd=self.cwd, timeout_s=timeout_s, metric=self.target.metric,
            metric_regex=self.target.metric_regex, log_path=self.log_dir / f"{log_name}.log",
            pid_path=self.pid_path, drop_env=self.drop_env,
            progress_regex=self.target.progress_regex,
        )

    def prepare(self) -> None:
        """Run ``[target] setup`` once per arx process; a failure stops the run."""
        if self._setup_done or not self.target.setup:
            return
        result = run_trial(self._spec(self.target.setup, SETUP_TIMEOUT_S, "setup"))
        if result.returncode != 0:
            raise RunError(
                f"setup command `{self.target.setup}` failed ({result.reason}):\n{result.log_tail}",
                hint="fix the setup step ([target] setup in arx.toml) and resume the run",
            )
        self._setup_done = True

    def run(self, request: TrialRequest) -> TrialResult:
        self.prepare()
        return run_trial(self._spec(self.target.command, request.timeout_s, request.log_name),
                         watch=request.watch)

    def kill_stale(self) -> None:
        kill_stale(self.pid_path)

    def wait_quiet(self, reference: Mapping[str, float] | None) -> None:
        deadline = time.monotonic() + QUIET_WAIT_S
        while time.monotonic() < deadline and not quiet_enough(machine_busy(1.0), reference):
            pass


class Clock:
    """Stamps a finished trial record (``finished_at``)."""

    def stamp(self, key: TrialKey) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class TrialJournal:
    """The one writer of trial events: a ``start`` before a trial is measured (so a kill leaves
    it pending, to be marked interrupted on resume), a trial record after. Counts the trials
    this process ran and their seconds. ``watch`` hears every training other than an
    iteration's own trial and the baseline (those have their record's line) as it starts and
    as it ends, so a long stretch of confirmations or verifications is never silent."""

    def __init__(self, trace: Trace, trials: TrialRunner, clock: Clock, run: str,
                 seed_constant: str | None, watch: Callable[[Training], None] | None = None):
        self.trace = trace
        self.trials = trials
        self.clock = clock
        self.run = run
        self.seed_constant = seed_constant
        self.watch = watch
        self.trials_run = 0
        self.trial_seconds = 0.0
        #: when this session's first training started (``time.monotonic``), and its trainings
        #: by kind: what the eta (``eta.seconds_left``) measures arx's own time per training by
        self.first_start: float | None = None
        self.kinds: Counter[str] = Counter()

    def count(self, trials: int, seconds: float, kind: str = TrialKind.TRIAL) -> None:
        if self.first_start is None:
            self.first_start = time.monotonic() - seconds
        self.trials_run += trials
        self.trial_seconds += seconds
        self.kinds[str(kind)] += trials

    def measure(self, key: TrialKey, changes: Mapping[str, Any], source: str, timeout: float,
                log: str | None = None, what: str = "", *,
                watch: Callable[[CurveReader], bool] | None = None, **start: Any) -> TrialResult:
        """Journal the start of trial ``key``, then have the trial runner measure it
        (``what``: the side it trains, for the watcher's line; ``watch`` may stop it from its
        curve: ``loop.pruning``)."""
        self.trace.start(key.iteration, key.kind, changes, **start, **key.fields())
        again = f"-a{key.attempt}" if key.attempt else ""
        request = TrialRequest(key, dict(changes), source, timeout,
                               f"{key.iteration:04d}-{log or key.kind}{again}", watch=watch)
        watched = self.watch is not None and key.kind not in (TrialKind.TRIAL, TrialKind.BASELINE)
        note = Training(key.iteration, str(key.kind), key.seq, key.attempt, what,
                        changes.get(self.seed_constant) if self.seed_constant else None)
        if watched:
            self.watch(note)
        if self.first_start is None:
            self.first_start = time.monotonic()
        result = self.trials.run(request)
        self.count(1, result.wall_s, key.kind)
        if watched:
            self.watch(replace(note, status=result.status.value, metric=result.metric,
                               wall_s=result.wall_s, reason=result.reason))
        return result

    def record(self, key: TrialKey, result: TrialResult, changes: Mapping[str, Any],
               hypothesis: str, config: Mapping[str, Any], state: TrialState | None, *,
               best_before: float | None, **extra: Any) -> TraceRecord:
        """The trace record of a measured trial; ``state`` None: from the result's status."""
        if state is None:
            state = (TrialState(key.kind) if key.kind in (TrialKind.CONFIRM, TrialKind.REBASELINE,
                                                          TrialKind.NOISE, TrialKind.VERIFY)
                     and result.status is ExecStatus.OK
                     else _EXEC_TO_STATE.get(result.status, TrialState.CRASH))
        metric = result.metric if result.metric is not None and math.isfinite(result.metric) else None
        data = {
            "run": self.run, "iteration": key.iteration, "kind": key.kind, "status": state,
            "changes": dict(changes), "hypothesis": hypothesis, "config": dict(config),
            "metric": metric, "best_before": best_before,
            "delta": (metric - best_before) if metric is not None and best_before is not None else None,
            "wall_s": round(result.wall_s, 3), "returncode": result.returncode,
            "reason": result.reason,
            "seed": config.get(self.seed_constant) if self.seed_constant else None,
            "finished_at": self.clock.stamp(key),
            **{k: result.summary[k] for k in SUMMARY_KEYS if k in result.summary},
            **({"attempt": key.attempt} if key.attempt else {}),
        }
        if result.usage:  # what it got of the machine ("usage" is the LLM's tokens)
            data["machine"] = dict(result.usage)
        if result.digest and state.is_measured:
            data["output_digest"] = result.digest
        if result.metric_text and state.is_measured:
            data["metric_text"] = result.metric_text
        rate = throughput(result.summary)
        if rate is not None:
            data["throughput"] = rate
        if state.is_failure:
            data["log_tail"] = result.log_tail
        data.update(curve_fields(result))
        data.update(extra)
        return self.trace.record(data)


def curve_fields(result: TrialResult) -> dict[str, Any]:
    """A trial's curve as its trace record holds it (nothing when it printed none): ``curve``
    [[progress, value], ...] in ``curve_unit``, where its progress ended (``curve_end``: the whole
    that later trials' shares are of); a pruned trial's last point is ``pruned_at``."""
    if not result.curve:
        return {}
    out: dict[str, Any] = {"curve": [list(p) for p in result.curve], "curve_unit": result.curve_unit}
    if result.curve_stride > 1:
        out["curve_stride"] = result.curve_stride
    if result.curve_end is not None and result.status is ExecStatus.OK:
        out["curve_end"] = result.curve_end
    if result.status is ExecStatus.PRUNED:
        out["pruned_at"] = list(result.curve[-1])
    return out


def default_executor(ws: Workspace) -> Executor | None:
    """The executor a run's settings ask for (``--parallel``, ``--executor``, ``[executor]``);
    None for one candidate at a time on this machine (trials run in the worktree)."""
    config = ws.config
    if config.parallel <= 1 and config.executor == "local":
        return None
    table = plain(load_toml(ws.path).get("executor", {}))
    return make_executor(
        config.executor, ws.local.slots_dir, config.parallel, config.address,
        log_dir=ws.log_dir, pid_dir=ws.local.slot_pid_dir,
        num_cpus=float(table.get("num_cpus", 1)), num_gpus=float(table.get("num_gpus", 0)),
        runtime_env=table.get("runtime_env"))
