"""The acts that made a run branch, in order: its start, each resume, each mechanism added by
hand, read from the record so that a replay can do them again at the same points.

A run that ran once is one act (``start``). A run killed and resumed, or extended after it
finished (`arx run --resume NAME --iterations N`), has a ``resume`` event for every resume; a
mechanism added with `arx mechanism add` has a ``level2`` note with ``source: manual``, the
path of its stored patch (``patch``) and where the run stood (``at``); an `arx verify` after
the run ended has a ``verify`` event with ``on_demand`` and ``at``. Each later act's ``at``
is the ``Cut`` at which the session before it stopped (``stops.py``).

Branches made before these were recorded are read where their history still says it: an
extended run (several ``end of run`` commits) resumed at each end commit, to the iterations its
trace reached by the next one. A resumed trial without a ``resume`` event, or a hand-added
mechanism without a stored patch, cannot be re-derived: ``ReplayError`` says so (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from arx.core.errors import PatchError
from arx.core.levels.mechanism import Mechanism
from arx.core.replay.source import Recording, ReplayError, ReplayGit
from arx.core.replay.stops import Cut, cut_of
from arx.core.repo.commits import Trailer, level_of
from arx.core.states import Event, Level, Source, TrialKind, TrialState


class ActKind(Enum):
    START = "start"
    RESUME = "resume"
    MECHANISM = "mechanism"
    VERIFY = "verify"


@dataclass(frozen=True)
class Act:
    """One act of the run: the session before it stopped at ``at`` (None for the start)."""

    kind: ActKind
    at: Cut | None
    iterations: int | None = None  # START / RESUME: the iterations the session runs to
    mechanism: Mechanism | None = None  # MECHANISM: the patch as stored
    seeds: int | None = None  # VERIFY: the held-out seeds `arx verify` trained on
    derived: bool = False  # read from an older branch's commits, not from a recorded event

    def describe(self) -> str:
        if self.kind is ActKind.START:
            return f"start ({self.iterations} iterations)"
        if self.kind is ActKind.RESUME:
            how = " (derived from an end commit)" if self.derived else ""
            return f"resume to iteration {self.iterations} after {self.at.describe()}{how}"
        if self.kind is ActKind.VERIFY:
            return f"verify on {self.seeds} held-out seeds after {self.at.describe()}"
        return f"mechanism {self.mechanism.name} added by hand after {self.at.describe()}"


def plan(repo: ReplayGit, rec: Recording) -> list[Act]:
    """Every act of the recorded run, oldest first (ReplayError: not re-derivable)."""
    events = rec.events
    positions = {c.sha: k for k, c in enumerate(rec.commits)}
    acts = [Act(ActKind.START, None, rec.config.iterations)]
    later: list[tuple[int, Act]] = []
    for idx, e in enumerate(events):
        if e.get("event") == Event.RESUME:
            later.append((idx, Act(ActKind.RESUME, _cut(rec, e, positions, idx),
                                   int(e.get("iterations") or rec.config.iterations))))
        elif e.get("event") == Event.LEVEL2 and e.get("source") == Source.MANUAL:
            mech = _stored_mechanism(repo, rec, e)
            later.append((idx, Act(ActKind.MECHANISM, _cut(rec, e, positions, idx),
                                   mechanism=mech)))
        elif e.get("event") == Event.VERIFY and e.get("on_demand"):
            later.append((idx, Act(ActKind.VERIFY, _cut(rec, e, positions, idx),
                                   int(e.get("iteration") or rec.config.iterations),
                                   seeds=len(e.get("seeds") or ()))))
    _check_interrupted(rec, [(idx, a) for idx, a in later if a.kind is ActKind.RESUME])
    ends = [k for k, c in enumerate(rec.commits)
            if c.trailers.get(Trailer.RUN) == rec.name and level_of(c) is Level.END]
    if not later and len(ends) > 1:
        return acts[:1] + _derived_extensions(repo, rec, ends)
    sessions = 1 + sum(a.kind is ActKind.RESUME for _, a in later)
    if len(ends) > sessions:
        raise ReplayError(
            f"run {rec.name!r} has {len(ends)} `end of run` commits but records "
            f"{sessions - 1} resume(s): it was extended by an arx that did not record its "
            "resumes", hint="replay the branch as it was at its first end commit: "
            f"`git branch arx/{rec.name}-first {rec.commits[ends[0]].sha[:12]}`")
    if not later:  # one session: to the last iteration it recorded
        reached = max((int(e["iteration"]) for e in events if e.get("event") == Event.TRIAL
                       and e.get("kind", "trial") == TrialKind.TRIAL), default=0)
        return [Act(ActKind.START, None, max(rec.config.iterations, reached))]
    return acts + [a for _, a in later]


def _cut(rec: Recording, e: dict[str, Any], positions: dict[str, int], idx: int) -> Cut:
    at = e.get("at")
    cut = cut_of(at, rec.base, positions) if isinstance(at, dict) else None
    if cut is None:
        raise ReplayError(
            f"trace line {idx + 1} of run {rec.name!r} records a {e.get('event')} at a commit "
            f"that is not on {rec.branch} ({(at or {}).get('head')})",
            hint="the branch's history was rewritten after the run; replay the branch it was "
                 "made on")
    return cut


def _stored_mechanism(repo: ReplayGit, rec: Recording, e: dict[str, Any]) -> Mechanism:
    name = e.get("mechanism")
    path = e.get("patch")
    if not path:
        first = next((k for k, c in enumerate(rec.commits)
                      if c.trailers.get(Trailer.SOURCE) == Source.MANUAL), 0)
        before = rec.commits[first - 1].sha if first else rec.base
        raise ReplayError(
            f"run {rec.name!r} holds a mechanism added by hand ({name}, `arx mechanism add`) by "
            "an arx that did not store its patch on the branch; replay cannot apply it again",
            hint=f"replay the branch as it was before it: `git branch arx/{rec.name}-before "
                 f"{before[:12]}` and `arx replay arx/{rec.name}-before`")
    text = repo.blob(rec.tip, path)
    try:
        return Mechanism.from_json((text or b"").decode())
    except PatchError as exc:
        raise ReplayError(f"{rec.branch}:{path}, the patch of mechanism {name} added by hand, "
                          f"is missing or unreadable: {exc.message}",
                          hint="restore it from the commit that added it") from None


def _check_interrupted(rec: Recording, resumes: list[tuple[int, Act]]) -> None:
    """Every interrupted record must be one a recorded resume wrote."""
    for idx, e in enumerate(rec.events):
        if e.get("event") != Event.TRIAL or e.get("status") != TrialState.INTERRUPTED:
            continue
        if not any(a.at.trace_lines <= idx < ridx for ridx, a in resumes):
            raise ReplayError(
                f"run {rec.name!r} was stopped during iteration {e.get('iteration')} and resumed "
                "by an arx that did not record where it was stopped (no `resume` event), so "
                "the point to stop the replay at is not known",
                hint="its decisions can still be audited with `arx log` and the trace; runs "
                     "resumed by this arx replay")


def _derived_extensions(repo: ReplayGit, rec: Recording, ends: list[int]) -> list[Act]:
    """An older extended run: a resume at every end commit but the last."""
    lines = [len((repo.blob(rec.commits[k].sha, rec.trace_rel) or b"").splitlines())
             for k in ends]
    acts = []
    for n, k in enumerate(ends[:-1]):
        upto = lines[n + 1] if n + 2 < len(ends) else len(rec.events)
        reached = max((int(e["iteration"]) for e in rec.events[:upto]
                       if e.get("event") == Event.TRIAL
                       and e.get("kind", "trial") == TrialKind.TRIAL), default=0)
        acts.append(Act(ActKind.RESUME, Cut(lines[n], k + 1, None), reached, derived=True))
    return acts
