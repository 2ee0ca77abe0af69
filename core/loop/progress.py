"""What a run shows while it runs: a ``RunProgress`` snapshot handed to a ``Reporter``.

Reporters (the CLI's rich, JSON and quiet ones) get an immutable snapshot, never the engine, so
no reporter can read or change the engine's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arx.core.states import TrialKind


@dataclass(frozen=True)
class RunProgress:
    """A run at one moment."""

    run: str
    resumed: bool
    iterations: int  # planned
    group: str
    proposer: str
    baseline_metric: float | None
    best_metric: float | None
    best_iteration: int | None
    counts: Mapping[str, int]  # trial status -> number of trial records so far
    elapsed_s: float
    trials_run: int  # trials this process ran (confirmations included)
    trial_seconds: float  # of which in training
    #: the held-out delta (``verify.Verified.short``), once the run has one
    verified: str | None = None
    #: seconds the run still needs, every training counted (``eta.forecast``); None: unknown
    eta_s: float | None = None

    @property
    def delta(self) -> float | None:
        if self.best_metric is None or self.baseline_metric is None:
            return None
        return self.best_metric - self.baseline_metric


@dataclass(frozen=True)
class Training:
    """One training that is not an iteration's own trial (a noise measurement, a confirmation,
    a held-out verification, a re-measurement), as it starts (``status`` None) and as it ends."""

    iteration: int
    kind: str  # a ``TrialKind`` value
    seq: int
    attempt: int
    what: str  # which side, as a person reads it: "candidate", "best (#3)", "baseline"
    seed: Any = None  # the seed constant's value it trains with, if it sets one
    status: str | None = None  # ``ExecStatus`` value once it ended
    metric: float | None = None
    wall_s: float | None = None
    reason: str = ""


def trial_counts(records: Iterable[Any]) -> dict[str, int]:
    """Trial status -> number of trial records (confirmations and re-measurements excluded)."""
    counts: dict[str, int] = {}
    for r in records:
        if r.kind == TrialKind.TRIAL:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
    return counts


class Reporter:
    """Progress sink; every method is optional. The CLI provides rich, JSON and quiet ones."""

    def start(self, progress: RunProgress) -> None: ...
    def line(self, text: str) -> None: ...
    def trial(self, progress: RunProgress, record: object) -> None: ...
    def training(self, progress: RunProgress, training: Training) -> None: ...
    def finish(self, progress: RunProgress) -> None: ...
