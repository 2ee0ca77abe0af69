"""Resuming a run from its journal: what a kill left pending, and the best config so far.

Optuna's stale-trial rule: a trial whose ``start`` has no finished record was running when arx
was stopped; it is recorded ``interrupted`` (never silently dropped) and run again with the same
proposal. The best configuration is derived from the records, never stored beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arx.core.loop.trace import Trace, TraceRecord, best_of
from arx.core.states import TrialKind, TrialState


@dataclass(frozen=True)
class Best:
    """The current best configuration: where it came from, its metric, its source text."""

    iteration: int
    metric: float
    config: Mapping[str, Any]
    source: str
    confirm: Mapping[int, float] = field(default_factory=dict)  # seed -> metric of extra seeds


def improves(metric: float | None, best: float | None, direction: str) -> bool:
    """The engine's own comparison: ``metric`` strictly better than ``best`` in ``direction``
    (a runner's ``accept`` may be stricter, never looser)."""
    if metric is None or best is None:
        return metric is not None
    return metric < best if direction == "min" else metric > best


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


def rebuild_best(records: Sequence[TraceRecord], source: str) -> tuple[Best | None, float | None]:
    """(the best config, the baseline's metric) as the records say; ``source`` is the target's
    text at the best (the branch head). The best's metric is its latest re-measurement, and its
    extra seeds are the confirmations run against it."""
    best = best_of(records)
    if best is None:
        return None, None
    base = next(r for r in records if r.state is TrialState.BASELINE)
    metric, confirm = best.metric, {}
    for rec in records:
        if rec.kind == TrialKind.CONFIRM and rec.get("of") == best.iteration \
                and rec.metric is not None:
            confirm[int(rec.get("seed"))] = rec.metric
        if rec.kind == TrialKind.REBASELINE and rec.metric is not None:
            metric = rec.metric
    return Best(best.iteration, metric, dict(best.get("config")), source, confirm), base.metric
