"""How the engine gets a trial measured: the seam between deciding and training.

The engine never starts a process itself. It hands a ``TrialRequest`` (which trial, what it
changes, the file it trains, its timeout) to a ``TrialRunner`` and gets a ``TrialResult`` back;
it stamps the finished record with a ``Clock``. ``LiveTrials`` and ``Clock`` are the real ones;
replay hands the engine a runner that serves recorded results and a clock that serves recorded
times (``arx.core.replay.engine``), so the same engine code decides in both.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.config import TargetConfig
from arx.core.errors import RunError
from arx.core.execution.process import kill_stale
from arx.core.execution.trial import TrialResult, TrialSpec, run_trial
from arx.core.states import TrialKind

#: seconds the target's setup command may take (it may download and tokenize a data set)
SETUP_TIMEOUT_S = 3600.0
_LABEL = re.compile(r"^(\d+)-([a-z]+)(?:-c(\d+))?$")


@dataclass(frozen=True)
class TrialKey:
    """Which trial of a run: the trace's (iteration, kind, seq)."""

    iteration: int
    kind: str
    seq: int = 0

    def job_label(self) -> str:
        """The executor job key of a ``--parallel`` candidate (``0007-trial-c1``)."""
        return f"{self.iteration:04d}-{self.kind}-c{self.seq}"

    @classmethod
    def from_job_label(cls, label: str) -> TrialKey:
        m = _LABEL.match(label)
        if m is None:
            raise ValueError(f"not a trial job key: {label!r}")
        return cls(int(m.group(1)), m.group(2), int(m.group(3) or 0))

    def describe(self) -> str:
        """As a person reads it: ``iteration 4 (trial, candidate 1)``."""
        extra = (f", candidate {self.seq}" if self.kind == TrialKind.TRIAL and self.seq
                 else f", seq {self.seq}" if self.seq else "")
        return f"iteration {self.iteration} ({self.kind}{extra})"


@dataclass(frozen=True)
class TrialRequest:
    """One trial to measure: the target as it is now in the worktree (``source``)."""

    key: TrialKey
    changes: Mapping[str, Any]
    source: str
    timeout_s: float
    log_name: str  # the log file's stem, e.g. ``0003-trial`` or ``0003-confirm-1-s2``
    extra: Mapping[str, Any] = field(default_factory=dict)


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
        return run_trial(self._spec(self.target.command, request.timeout_s, request.log_name))

    def kill_stale(self) -> None:
        kill_stale(self.pid_path)


class Clock:
    """Stamps a finished trial record (``finished_at``)."""

    def stamp(self, key: TrialKey) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")
