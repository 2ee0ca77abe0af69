"""Commit messages and trailers: the audit log's vocabulary.

Subjects read well in ``git log --oneline``; trailers make the same facts machine-readable
(``git log --format=%(trailers)``, ``arx log``). Trailer keys are public surface:
``Arx-Run``, ``Arx-Level`` (baseline, 1, 1.5, 2, end, init), ``Arx-Iteration``, ``Arx-Metric``,
``Arx-Delta``, ``Arx-Baseline``, ``Arx-Hypothesis``, ``Arx-Changes`` (JSON), ``Arx-Status``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from arx.core.loop.trace import TraceRecord, TrialState
from arx.core.repo.git import GitRepo

Message = tuple[str, str, dict[str, str]]


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt_value(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def fmt_metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"


def describe_changes(changes: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> str:
    before = before or {}
    parts = []
    for name, value in changes.items():
        if name in before:
            parts.append(f"{name} {fmt_value(before[name])}->{fmt_value(value)}")
        else:
            parts.append(f"{name}={fmt_value(value)}")
    return ", ".join(parts) or "(no change)"


def baseline_message(run: str, metric: str, record: TraceRecord,
                     managed: Mapping[str, Any]) -> Message:
    subject = f"baseline: {metric} {fmt_metric(record.metric)}"
    body = f"Run {run} starts from the unmodified target."
    if managed:
        body += " Budget set by arx: " + describe_changes(managed) + "."
    trailers = {
        "Arx-Run": run, "Arx-Level": "baseline", "Arx-Iteration": "0",
        "Arx-Metric": fmt_metric(record.metric),
    }
    return subject, body, trailers


def keep_message(run: str, metric: str, record: TraceRecord, recovered: bool = False) -> Message:
    before = record.get("best_before")
    changes = describe_changes(record.changes, record.get("before") or {})
    subject = (f"L1 #{record.iteration} keep {changes}: "
               f"{metric} {fmt_metric(before)}->{fmt_metric(record.metric)}")
    body = record.get("hypothesis") or ""
    if record.get("confirm_metrics"):
        body += (f"\n\nConfirmed over {1 + len(record.get('confirm_metrics'))} seeds: "
                 f"{record.get('confirm_metrics')} vs best {record.get('best_confirm_metrics')}.")
    if recovered:
        body += "\n\n(committed on resume: arx was stopped after recording this keep)"
    trailers = {
        "Arx-Run": run, "Arx-Level": "1", "Arx-Iteration": str(record.iteration),
        "Arx-Status": "keep", "Arx-Metric": fmt_metric(record.metric),
        "Arx-Delta": f"{record.get('delta'):+.6f}" if record.get("delta") is not None else "n/a",
        "Arx-Changes": json.dumps(_jsonable(record.changes), sort_keys=True),
        "Arx-Hypothesis": (record.get("hypothesis") or "").replace("\n", " ")[:500],
    }
    return subject, body.strip(), trailers


def end_message(run: str, metric: str, engine: Any) -> Message:
    records = engine.records
    trials = [r for r in records if r.kind == "trial"]
    counts: dict[str, int] = {}
    for r in trials:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    best = engine.best
    base = engine.baseline_metric
    delta = best.metric - base if best and base is not None else None
    subject = (f"end of run {run}: {len(trials)} iterations, best {metric} "
               f"{fmt_metric(best.metric if best else None)} "
               f"({'n/a' if delta is None else f'{delta:+.6f}'} vs baseline)")
    body = "Trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if best:
        body += f"\nBest config from iteration {best.iteration}."
    trailers = {
        "Arx-Run": run, "Arx-Level": "end", "Arx-Iteration": str(len(trials)),
        "Arx-Metric": fmt_metric(best.metric if best else None),
        "Arx-Baseline": fmt_metric(base),
        "Arx-Delta": "n/a" if delta is None else f"{delta:+.6f}",
    }
    return subject, body, trailers


def last_committed_iteration(tree: GitRepo) -> int:
    """Highest Level-1 iteration committed as a keep on the branch (0 if none)."""
    for rec in tree.log("HEAD", max_count=200):
        if rec.trailers.get("Arx-Level") == "1" and rec.trailers.get("Arx-Status") == "keep":
            return int(rec.trailers.get("Arx-Iteration", 0))
        if rec.trailers.get("Arx-Level") == "baseline":
            return 0
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


__all__ = ["baseline_message", "keep_message", "end_message", "last_committed_iteration",
           "describe_changes", "fmt_value", "fmt_metric", "TrialState"]
