"""How long a run has left: every training it will still do, times what one has taken.

An iteration is not one training. A run with ``--noise auto`` trains the baseline again
(``noise.EXTRA``), a would-be keep is confirmed on more seeds, a contended trial runs again, a
run may re-measure its best (``--rebaseline``) and ends with a held-out verification of
``2 x --verify`` trainings. Counting iterations alone predicted 71 s for a run that took 461 s.

``forecast`` counts what is left of each from the run's settings and its records so far: the
number of confirmation trainings per iteration and the share of contended re-runs are measured
(a prior stands in until iterations have run), and a training's cost is the mean measured
``wall_s`` plus arx's own time per training in this session (proposals, commits, the runner). A
pure function of recorded data and settings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arx.core.loop.noise import EXTRA
from arx.core.states import TrialKind, TrialState

#: record kinds that are a training of the target
TRAINING_KINDS = frozenset({TrialKind.BASELINE, TrialKind.TRIAL, TrialKind.NOISE,
                            TrialKind.CONFIRM, TrialKind.REBASELINE, TrialKind.VERIFY})
#: the seeds a confirmation adds when the runner says nothing else (runner.py ``noise_seeds``)
CONFIRM_SEEDS = 2
#: before any iteration: the share of iterations expected to confirm a would-be keep (a
#: candidate no better than the best passes the runner's 1-sd gate about a quarter of the time,
#: their difference having a spread of sqrt(2) sd; better ones more often) ...
PRIOR_CONFIRM_SHARE = 0.3
#: ... weighed as this many iterations against the measured rate
PRIOR_WEIGHT = 2.0
#: a training's cost is the mean of the last this many measured durations
RECENT = 20


@dataclass(frozen=True)
class Forecast:
    """Trainings expected to be left, and what one costs (seconds)."""

    trainings: float
    per_training_s: float

    @property
    def seconds(self) -> float:
        return self.trainings * self.per_training_s


def _trained(records: Sequence[Any]) -> list[Any]:
    return [r for r in records if r.kind in TRAINING_KINDS and r.get("wall_s")
            and r.state not in (TrialState.INVALID, TrialState.INTERRUPTED)]


def forecast(records: Sequence[Any], config: Any, *, noise_left: int, verify_left: bool,
             elapsed_s: float, trials_run: int, trial_seconds: float,
             verifying: int = 0) -> Forecast | None:
    """What is left of the run (``config``: its ``RunConfig``) after ``records``; None before
    any training was measured. ``noise_left``: noise trainings still to do; ``verify_left``:
    whether the end-of-run verification is still to come. ``elapsed_s``, ``trials_run`` and
    ``trial_seconds`` are this session's (arx's own time per training comes from them);
    ``verifying``: held-out trainings this session ran that ``records`` do not hold yet."""
    trained = _trained(records)
    if not trained:
        return None
    walls = [float(r.get("wall_s")) for r in trained[-RECENT:]]
    overhead = max(elapsed_s - trial_seconds, 0.0) / trials_run if trials_run else 0.0
    per = statistics.fmean(walls) + overhead

    done = max((r.iteration for r in records if r.kind == TrialKind.TRIAL), default=0)
    left = max(config.iterations - done, 0)
    contended = sum(1 for r in records if r.state is TrialState.CONTENDED)
    again = contended / max(len(trained) - contended, 1)  # re-runs per training

    confirming = config.confirm > 0 or config.noise != "off"
    seeds = config.confirm or CONFIRM_SEEDS
    confirms = sum(1 for r in trained if r.kind == TrialKind.CONFIRM
                   and r.state is not TrialState.CONTENDED)
    prior = PRIOR_CONFIRM_SHARE * seeds if confirming else 0.0
    per_iteration = 1.0 + (confirms + prior * PRIOR_WEIGHT) / (done + PRIOR_WEIGHT)

    rebaselines = left // config.rebaseline if config.rebaseline else 0
    kept = any(r.state is TrialState.KEEP for r in records)
    verify = 0
    if verify_left and config.verify and config.rules >= 5 and (kept or left > 0):
        verified = sum(1 for r in trained if r.kind == TrialKind.VERIFY
                       and r.iteration == config.iterations and r.state is not TrialState.CONTENDED)
        verify = max(2 * config.verify - max(verified, verifying), 0)
    trainings = (noise_left + left * per_iteration + rebaselines + verify) * (1.0 + again)
    return Forecast(trainings, per)


def seconds_left(records: Sequence[Any], config: Any, noise_event: Any, verified: bool,
                 journal: Any) -> float | None:
    """The engine's eta: ``forecast`` with what is left of the noise measurement (none once
    the run has its ``noise_event``) and of the verification (none once ``verified``; the
    trainings of one under way count down). ``journal``: the session's ``TrialJournal``: arx's
    own time is what passed since its first training that was not training."""
    measuring = config.noise == "auto" and noise_event is None
    noise_done = max(sum(1 for r in records if r.kind == TrialKind.NOISE and r.metric is not None),
                     journal.kinds[TrialKind.NOISE.value])  # (its records come at its end)
    since = time.monotonic() - journal.first_start if journal.first_start is not None else 0.0
    f = forecast(records, config, noise_left=max(EXTRA - noise_done, 0) if measuring else 0,
                 verify_left=not verified, elapsed_s=since, trials_run=journal.trials_run,
                 trial_seconds=journal.trial_seconds,
                 verifying=journal.kinds[TrialKind.VERIFY.value])
    return f.seconds if f is not None else None
