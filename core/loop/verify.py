"""Held-out verification: what a run's result is worth on seeds no decision of it used.

Every number a run decides on (the keep, its confirmation, the reported best) was measured on
the seeds that picked the winner, so the in-search delta over-states the gain: the winner is the
candidate whose noise happened to help. When a run ends (rules >= 5, ``--verify K``, 3 by
default) and on demand (`arx verify NAME`), the baseline and the best are trained again, side
by side, on ``K`` seeds above every seed the run recorded (``heldout_seeds``; the same
configuration ``K`` more times where the target has no seed constant), and the difference of
the two means is the run's result, with its standard error.

The standard error pools the spread of these measurements with every group of repeated
measurements the run already has (the noise trainings, the confirmations), so three seeds per
side still give a usable error. A held-out delta that does not beat zero by ``CONFIRM_SE``
standard errors (and by one step of the metric's resolution) is "not confirmed on held-out
seeds", and says so wherever it is shown. Everything here is a function of recorded trials, so
replay verifies exactly as the run did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arx.core.codemods.bundle import read_files
from arx.core.codemods.constants import apply_changes
from arx.core.config import TargetConfig
from arx.core.errors import RunError
from arx.core.loop import noise, resume, stats
from arx.core.loop.resume import Best
from arx.core.loop.trace import Trace, TraceRecord
from arx.core.loop.trials import TrialJournal, TrialKey
from arx.core.repo import commits
from arx.core.repo.git import GitRepo
from arx.core.states import Event, Level, TrialKind, TrialState

#: how many standard errors the held-out delta must beat zero by to confirm the gain
CONFIRM_SE = 2.0
#: the words shown wherever a held-out delta that does not confirm the gain is shown
NOT_CONFIRMED = "not confirmed on held-out seeds"


@dataclass(frozen=True)
class Verified:
    """One held-out verification of a run's best against its baseline (trace event
    ``verify``; fields in docs/trace.md)."""

    seeds: tuple[int | None, ...]  # None: a repeat (no seed constant)
    baseline_metrics: tuple[float | None, ...]
    best_metrics: tuple[float | None, ...]
    delta: float | None  # mean(best) - mean(baseline), on the held-out seeds
    se: float | None
    in_search: float | None  # the delta the run decided on (reported best - baseline)
    direction: str
    best_iteration: int
    resolution: float = 0.0
    on_demand: bool = False
    #: on demand (`arx verify`): where the run stood before it (``resume.resume_point``),
    #: which replay stops the session before it at
    at: Mapping[str, Any] | None = None

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def confirmed(self) -> bool:
        """The best beats the baseline on the held-out seeds by ``CONFIRM_SE`` standard errors
        and by at least one step of the metric's resolution."""
        if self.delta is None or self.se is None:
            return False
        gain = -self.delta if self.direction == "min" else self.delta
        return gain > CONFIRM_SE * self.se and gain >= max(self.resolution, 0.0) and gain > 0

    def event(self, run: str, iteration: int) -> dict[str, Any]:
        return {"run": run, "iteration": iteration, "best_iteration": self.best_iteration,
                "seeds": list(self.seeds), "baseline_metrics": list(self.baseline_metrics),
                "best_metrics": list(self.best_metrics), "delta": self.delta, "se": self.se,
                "in_search_delta": self.in_search, "confirmed": self.confirmed,
                "direction": self.direction, "resolution": self.resolution,
                "on_demand": self.on_demand, **({"at": dict(self.at)} if self.at else {})}

    @classmethod
    def from_event(cls, e: Mapping[str, Any]) -> Verified:
        return cls(tuple(e.get("seeds") or ()), tuple(e.get("baseline_metrics") or ()),
                   tuple(e.get("best_metrics") or ()), e.get("delta"), e.get("se"),
                   e.get("in_search_delta"), str(e.get("direction") or "min"),
                   int(e.get("best_iteration") or 0), float(e.get("resolution") or 0.0),
                   bool(e.get("on_demand")), e.get("at"))

    def over(self) -> str:
        """``over 3 held-out seeds`` (or ``over 3 held-out repeats``), as the trailer says."""
        held = "seeds" if any(x is not None for x in self.seeds) else "repeats"
        return f"over {self.k} held-out {held}"

    def short(self) -> str:
        """The held-out delta with its error and what it is over, then the verdict (the run
        summary's ``held-out`` row: the in-search delta has its own)."""
        if self.delta is None:
            return f"the trainings failed ({self.over()}); {NOT_CONFIRMED}"
        return commits.verified_text(self.event("", 0), in_search=False)

    def describe(self) -> str:
        """One line: the held-out delta with its error, the in-search one, the verdict (the
        ``Arx-Verified`` trailer's words)."""
        if self.delta is None:
            return f"held-out: the trainings failed ({self.over()}); {NOT_CONFIRMED}"
        return "held-out delta " + commits.verified_text(self.event("", 0))


def latest(events: Iterable[Mapping[str, Any]]) -> Verified | None:
    """The run's latest verification (the end of its last session, or `arx verify`)."""
    found = None
    for e in events:
        if e.get("event") == Event.VERIFY:
            found = e
    return Verified.from_event(found) if found is not None else None


def heldout_seeds(records: Iterable[Any], k: int, seed_constant: str | None) -> list[int | None]:
    """``k`` seeds above every seed a record of the run names (trials, confirmations, noise,
    earlier verifications), so no decision used them; ``k`` repeats (None) without a seed
    constant."""
    if not seed_constant:
        return [None] * k
    used = [int(r.get("seed")) for r in records if isinstance(r.get("seed"), int)
            and not isinstance(r.get("seed"), bool)]
    for r in records:
        value = (r.get("config") or {}).get(seed_constant)
        if isinstance(value, int) and not isinstance(value, bool):
            used.append(value)
    start = max(used, default=0) + 1
    return [start + j for j in range(k)]


def standard_error(base: Sequence[float | None], best: Sequence[float | None],
                   groups: Iterable[Sequence[float | None]]) -> float | None:
    """The standard error of mean(best) - mean(base): the spread pooled over both sides and the
    run's other groups of repeated measurements, times sqrt(1/n_base + 1/n_best)."""
    a = [v for v in base if v is not None]
    b = [v for v in best if v is not None]
    if not a or not b:
        return None
    sd, df = stats.pooled([a, b, *groups])
    return sd * math.sqrt(1 / len(a) + 1 / len(b)) if df else None  # one value each: unknown


def summarize(seeds: Sequence[int | None], base: Sequence[float | None],
              best: Sequence[float | None], groups: Iterable[Sequence[float | None]],
              in_search: float | None, direction: str, best_iteration: int,
              resolution: float = 0.0, at: Mapping[str, Any] | None = None) -> Verified:
    a = [v for v in base if v is not None]
    b = [v for v in best if v is not None]
    delta = statistics.fmean(b) - statistics.fmean(a) if a and b else None
    return Verified(tuple(seeds), tuple(base), tuple(best), delta,
                    standard_error(base, best, groups), in_search, direction, best_iteration,
                    resolution, at is not None, at)


@dataclass(frozen=True)
class Side:
    """One side of a verification: the configuration (its source text and values) and the
    iteration it comes from (0: the baseline)."""

    iteration: int
    source: str
    config: Mapping[str, Any]


def train_sides(measure: Callable[..., Any], record: Callable[..., TraceRecord],
                done: Sequence[TraceRecord], iteration: int, seeds: Sequence[int | None],
                sides: Sequence[Side], seed_constant: str | None,
                write: Callable[[str], None], timeout: float,
                first_seq: int = 1, path: str | None = None,
                ) -> tuple[list[list[float | None]], list[TraceRecord]]:
    """Train every side on every seed, interleaved (baseline, best, baseline, ...), so a
    machine that slows down mid-way weighs on both alike; their records are numbered from
    ``first_seq``. ``done``: verify records a killed run already has (reused, not trained
    again). ``path``: the target's file (a config file is edited as its format). Returns each
    side's metrics and the new records."""
    finished = {int(r.get("seq", 0)): r for r in done
                if r.kind == TrialKind.VERIFY and r.iteration == iteration
                and r.state is not TrialState.INTERRUPTED
                and r.state is not TrialState.CONTENDED}
    metrics: list[list[float | None]] = [[] for _ in sides]
    added: list[TraceRecord] = []
    for j, seed in enumerate(seeds):
        for s, side in enumerate(sides):
            seq = first_seq + j * len(sides) + s
            rec = finished.get(seq)
            if rec is None:
                changes = {seed_constant: seed} if seed_constant and seed is not None else {}
                text = apply_changes(side.source, changes, path) if changes else side.source
                write(text)
                what = "baseline" if side.iteration == 0 else f"best (#{side.iteration})"
                key = TrialKey(iteration, TrialKind.VERIFY, seq)
                measured = measure(key, changes, text, timeout,
                                   log=f"verify-{side.iteration}-{seq}", what=what)
                added += measured.contended
                rec = record(measured.key, measured.result, changes,
                             {**dict(side.config), **changes}, of=side.iteration, seq=seq)
                added.append(rec)
            metrics[s].append(rec.metric)
    return metrics, added


class Verifier:
    """Runs one verification for the engine, with the parts it is handed (the journal and
    measurer that record and measure trials, the trace, the run's worktree repository)."""

    def __init__(self, journal: TrialJournal, measurer: Any, trace: Trace, tree: GitRepo,
                 target: TargetConfig, say: Callable[[str], None],
                 write: Callable[[str], None]):
        self.journal = journal
        self.measurer = measurer
        self.trace = trace
        self.tree = tree
        self.target = target
        self.say = say
        self.write = write

    def verify(self, best: Best | None, records: Sequence[TraceRecord],
               noise_event: Mapping[str, Any] | None, at: int, k: int, timeout: float,
               point: Mapping[str, Any] | None = None
               ) -> tuple[Verified | None, list[TraceRecord]]:
        """(the verification, the records it added) of ``best`` at iteration ``at``; None when
        nothing was kept. The end of a session's: one per iteration, and one a killed arx
        recorded is returned as it is. On demand (``point``: where the run stood): a new one,
        numbered after every verify record at ``at``, on seeds above all of theirs."""
        if best is None or best.iteration == 0:
            self.say("verify: no change was kept; nothing to verify")
            return None, []
        recorded = [e for e in self.trace.notes(Event.VERIFY) if e.get("iteration") == at
                    and not e.get("on_demand") and len(e.get("seeds") or ()) == k]
        if recorded and point is None:
            return Verified.from_event(recorded[-1]), []
        earlier = [r for r in records if r.kind == TrialKind.VERIFY and r.iteration == at]
        first = 1 + max((int(r.get("seq", 0)) for r in earlier), default=0) if point else 1
        done = [] if point else earlier
        seed_constant = self.target.seed_constant
        redo = {id(r) for r in done}  # a killed verification's own seeds are not "used"
        seeds = heldout_seeds([r.data for r in records if id(r) not in redo], k, seed_constant)
        base = next(r for r in records if r.state is TrialState.BASELINE)
        sides = [Side(0, self.baseline_source(), dict(base.get("config") or {})),
                 Side(best.iteration, best.source, dict(best.config))]

        def measure(key, changes, source, timeout, log=None, what=""):
            return self.measurer.measure(self.measurer.attempts_of(key, records), changes,
                                         source, timeout, None, log, what=what)

        def record(key, result, changes, config, **extra):
            return self.journal.record(key, result, changes, "", config, None,
                                       best_before=None, **extra)

        try:
            metrics, added = train_sides(measure, record, done, at, seeds, sides, seed_constant,
                                         self.write, timeout, first, self.target.file)
        finally:
            self.write(best.source)
        every = [r.data for r in [*records, *added]]
        base_r, best_r = noise.reported(every, noise_event)
        in_search = best_r - base_r if best_r is not None and base_r is not None else None
        groups = noise.repeated_groups(noise_event, every)
        result = summarize(seeds, metrics[0], metrics[1], groups, in_search,
                           self.target.direction, best.iteration,
                           float((noise_event or {}).get("resolution") or 0.0), point)
        self.trace.note(Event.VERIFY, result.event(self.journal.run, at))
        self.say("verify: " + result.describe())
        return result, added

    def baseline_source(self) -> str:
        """The target as the baseline trained it: the file at the run's baseline commit."""
        run = self.journal.run
        for c in self.tree.log("HEAD", max_count=100_000):
            if c.trailers.get(commits.Trailer.RUN) == run and commits.level_of(c) is Level.BASELINE:
                text = read_files(lambda p, sha=c.sha: self.tree.show(sha, p),
                                  self.target.paths())
                if text is not None:
                    return text
        raise RunError(f"run {run}: no baseline commit on its branch",
                       hint="the branch was rewritten; verify needs the baseline's commit")


def verify_finished(engine: Any, k: int) -> Verified | None:
    """`arx verify NAME` (and its replay): the held-out verification of a finished run's best
    on ``k`` new seeds, recorded and committed on the run's branch. ``engine``: an ``Engine``
    opened on the run's workspace (not run)."""
    engine.records = engine.trace.records()
    engine.rebuild_state()
    point = resume.resume_point(engine.trace, engine.ws)
    result = engine.verify(k, at=point)
    if result is not None:
        ws = engine.ws
        ws.tree.commit(ws.run_files(), *commits.verify_message(
            ws.name, engine.target.metric, result.event(ws.name, engine.config.iterations)))
    return result
