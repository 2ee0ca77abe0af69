"""Resuming a run from its journal: what a kill left pending, and the best config so far.

Optuna's stale-trial rule: a trial whose ``start`` has no finished record was running when arx
was stopped; it is recorded ``interrupted`` (never silently dropped) and run again with the same
proposal. The best configuration is derived from the records, never stored beside them.

Every resume ends with a ``resume`` event on the trace (``resume_event``): where the run stood
when it was resumed (``resume_point``: its trace lines, its branch head, its transcripts), the
iterations it now runs to, and what recovery did. `arx replay` stops its replayed session at
that point and resumes it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arx.core.codemods.bundle import TargetFiles
from arx.core.codemods.constants import apply_changes
from arx.core.config import RunConfig
from arx.core.loop.trace import Trace, TraceRecord, best_of
from arx.core.repo import commits
from arx.core.repo.workspace import Workspace
from arx.core.states import Event, TrialKind, TrialState

#: the ``note`` of a Level-2 event written when resume made a revert a killed arx had not made
REVERTED_ON_RESUME = "reverted on resume"


@dataclass(frozen=True)
class Best:
    """The current best configuration: where it came from, its metric, its source text."""

    iteration: int
    metric: float
    config: Mapping[str, Any]
    source: str
    confirm: Mapping[int, float] = field(default_factory=dict)  # seed -> metric of extra seeds
    #: its first measurement, at its own seed, when ``metric`` is a mean (with measured noise)
    first: float | None = None
    #: the output digest of that first measurement (``TrialResult.digest``), when recorded
    digest: str | None = None

    @property
    def first_metric(self) -> float:
        return self.metric if self.first is None else self.first


def kept(iteration: int, record: TraceRecord, config: Mapping[str, Any], source: str,
         reference: float | None, extra: Mapping[int, float]) -> Best:
    """The best after a keep: the mean of its measurements (``reference``, with its extra
    seeds) when the run measured its noise, else its one measurement."""
    digest = record.get("output_digest")
    if reference is None:
        return Best(iteration, record.metric, config, source, digest=digest)
    return Best(iteration, reference, config, source, extra, record.metric, digest)


def improves(metric: float | None, best: float | None, direction: str) -> bool:
    """The engine's own comparison: ``metric`` strictly better than ``best`` in ``direction``
    (a runner's ``accept`` may be stricter, never looser)."""
    if metric is None or best is None:
        return metric is not None
    return metric < best if direction == "min" else metric > best


def recover(trace: Trace, ws: Workspace, target_file: str | Sequence[str],
            outer_recover: Callable[[], Any], commit_keep: Callable[[TraceRecord], None],
            ) -> tuple[Any, list[TraceRecord], dict[int, list[Mapping[str, Any]]]]:
    """Put a killed run's worktree and trace back in order: the target restored to the branch,
    the outer levels' half-done work undone (``outer_recover`` returns their search state), a
    keep recorded but not committed committed now, the trials that were running recorded
    ``interrupted``, and a ``resume`` event written. Returns (search state, the records, the
    proposals to run again by iteration)."""
    trace.repair_tail()
    point = resume_point(trace, ws)  # where the stopped run stood (for replay)
    committed = commits.last_committed_iteration(ws.tree.log("HEAD", max_count=200))
    pending_keep = [r for r in trace.records()
                    if r.state is TrialState.KEEP and r.iteration > committed]
    paths = (target_file,) if isinstance(target_file, str) else tuple(target_file)
    ws.tree.restore(paths)
    search = outer_recover()
    target = TargetFiles(ws.path, paths)
    for rec in pending_keep:  # killed between the trace line and its commit
        target.write(apply_changes(target.read(), rec.changes, paths[0]))
        commit_keep(rec)
    pending = mark_interrupted(trace, ws.name)
    trace.note(Event.RESUME, resume_event(ws, trace, point, pending_keep))
    records = trace.records()
    return search, records, retries(pending, records)


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the measured values (None when there is none)."""
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else None


def mark_interrupted(trace: Trace, run: str) -> list[Mapping[str, Any]]:
    """Record every pending trial as interrupted; returns their ``start`` events."""
    pending = trace.pending()
    for start in pending:
        trace.record({
            "run": run, "iteration": start["iteration"], "kind": start.get("kind"),
            "seq": start.get("seq", 0), "status": TrialState.INTERRUPTED,
            "changes": start.get("changes", {}),
            "reason": "arx was stopped while this trial ran; it is run again",
        })
    return pending


def next_iteration(records: Sequence[TraceRecord]) -> int:
    """The first iteration with no decided trial (interrupted and contended ones decide none)."""
    return 1 + max((r.iteration for r in records if r.kind == TrialKind.TRIAL
                    and r.state not in (TrialState.INTERRUPTED, TrialState.CONTENDED)), default=0)


def retries(pending: Sequence[Mapping[str, Any]],
            records: Sequence[TraceRecord]) -> dict[int, list[Mapping[str, Any]]]:
    """Iterations a killed run left undecided, with the proposal(s) to run again (not to ask
    again): the trials that were running (their ``start`` events, ``pending``), and those whose
    only records are ``contended`` (the run paused, or was killed, before their next attempt)."""
    waiting: dict[int, list[Mapping[str, Any]]] = {}
    for start in pending:
        if start.get("kind") == TrialKind.TRIAL:
            waiting.setdefault(int(start["iteration"]), []).append(start)
    decided = {r.iteration for r in records if r.kind == TrialKind.TRIAL
               and r.state is not TrialState.CONTENDED}
    for rec in records:
        if rec.kind == TrialKind.TRIAL and rec.iteration not in decided | set(waiting):
            waiting[rec.iteration] = [dict(rec.data)]
    return waiting


def resume_point(trace: Trace, ws: Workspace) -> dict[str, Any]:
    """Where a stopped run stands before recovery writes anything: the trace's lines, the
    branch head and the number of LLM transcripts in its worktree."""
    llm = ws.path / ws.llm_rel
    return {"trace_lines": trace.line_count(), "head": ws.tree.head_sha(),
            "transcripts": len(list(llm.glob("*.json"))) if llm.is_dir() else 0}


def resume_event(ws: Workspace, trace: Trace, point: Mapping[str, Any],
                 committed: Sequence[TraceRecord]) -> dict[str, Any]:
    """The ``resume`` event: ``at`` (``resume_point``), the settings resumed with (``iterations``
    and ``changed``, the settings that differ from the stored ``config.json``), ``iteration``
    (the last finished one), and what recovery did: ``interrupted`` trials (run again),
    keeps ``committed`` on resume, mechanisms ``reverted`` on resume."""
    later = list(trace.events())[int(point["trace_lines"]):]
    stored = ws.path / ws.config_rel
    changed = {}
    if stored.exists():
        before = RunConfig.from_json(stored.read_text())
        changed = {k: getattr(ws.config, k) for k in ("iterations",)
                   if getattr(before, k) != getattr(ws.config, k)}
    finished = [int(e["iteration"]) for e in trace.events() if e.get("event") == Event.TRIAL
                and e.get("kind", "trial") == TrialKind.TRIAL
                and e.get("status") != TrialState.INTERRUPTED]
    return {
        "run": ws.name, "iteration": max(finished, default=0), "iterations": ws.config.iterations,
        "changed": changed, "at": dict(point),
        "interrupted": [{"iteration": e["iteration"], "kind": e.get("kind", "trial"),
                         "seq": e.get("seq", 0) or 0} for e in later
                        if e.get("event") == Event.TRIAL
                        and e.get("status") == TrialState.INTERRUPTED],
        "committed": [rec.iteration for rec in committed],
        "reverted": [e.get("mechanism") for e in later if e.get("event") == Event.LEVEL2
                     and e.get("note") == REVERTED_ON_RESUME],
    }


def rebuild_best(records: Sequence[TraceRecord], source: str,
                 noise: Mapping[str, Any] | None = None) -> tuple[Best | None, float | None]:
    """(the best config, the baseline's metric) as the records say; ``source`` is the target's
    text at the best (the branch head). The best's metric is the mean of its measurements when
    the run measured its noise (the noise event's mean for the baseline, the keep's
    ``reference``), then its latest re-measurement; its extra seeds are the confirmations (and,
    for the baseline, the noise trials) run against it."""
    best = best_of(records)
    if best is None:
        return None, None
    base = next(r for r in records if r.state is TrialState.BASELINE)
    metric, first, confirm, digest = best.metric, None, {}, best.get("output_digest")
    if best.state is TrialState.BASELINE and noise and noise.get("mean") is not None \
            and noise.get("sd"):  # a target without noise (sd 0) keeps its exact baseline
        metric, first = float(noise["mean"]), best.metric
    elif best.get("reference") is not None:
        metric, first = float(best.get("reference")), best.metric
    for rec in records:
        seed = rec.get("seed")
        if seed is not None and rec.metric is not None and (
                rec.kind == TrialKind.CONFIRM and rec.get("of") == best.iteration
                or rec.kind == TrialKind.NOISE and best.state is TrialState.BASELINE):
            confirm[int(seed)] = rec.metric
        if rec.kind == TrialKind.REBASELINE and rec.metric is not None:
            metric, first, digest = rec.metric, None, rec.get("output_digest")
    return Best(best.iteration, metric, dict(best.get("config")), source, confirm,
                first, digest), base.metric
