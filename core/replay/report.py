"""The readable form of a ``ReplayReport`` (the command's default output)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from arx.core.replay.run import ReplayReport


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _m(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def likely_cause(provenance: dict[str, Any]) -> str:
    """What most likely made an untouched branch diverge, from its recorded provenance."""
    if provenance.get("decisive"):
        return ("likely cause: the versions differ from the run's: "
                + "; ".join(provenance["decisive"]))
    if not provenance.get("recorded"):
        return ("if the branch is untouched, the usual cause is another arx, optuna or ruff "
                "version than the run's (this branch does not record them): replay with the "
                "versions that made it")
    return ("the versions this machine runs are the ones the branch records: the branch was "
            "changed after the run, or this arx's code differs from the one that made it")


def render(report: ReplayReport) -> str:
    c = report.counts
    lines = [
        f"arx replay {report.branch} (run {report.run}, group {report.group}, "
        f"{report.iterations} iterations, proposer {report.proposer}) from base "
        f"{report.base[:8]} on {report.replay_branch}",
        f"checked {report.steps_checked} of {report.steps} steps: {c['trials']} trial records, "
        f"{c['level15']} Level-1.5 cycles, {c['level2']} Level-2 outcomes, {c['commits']} commits "
        f"(subject, trailers, tree); {c['trials_served']} trials served from the trace, "
        f"{c['llm_requests']} LLM requests served from the transcripts",
    ]
    if len(report.acts) > 1:
        lines.append(f"replayed {len(report.acts)} acts: " + "; ".join(report.acts))
    lines += [f"note: {n}" for n in report.provenance.get("notes", [])]
    d = report.divergence
    if d is None:
        lines.append("decisions and commits: IDENTICAL to the original")
    else:
        at = "?" if d.index is None else d.index
        lines += [f"decisions and commits: DIVERGED at step {at}: {d.step}", f"  {d.what}"]
        if d.original is not None or d.replay is not None:
            width = max(len(s) for s in d.sides)
            lines += [f"  {d.sides[0]:<{width}} : {_show(d.original)}",
                      f"  {d.sides[1]:<{width}} : {_show(d.replay)}"]
        lines.append(f"  (the replay's branch {report.replay_branch} is kept for inspection: "
                     f"git log {report.replay_branch})")
        lines.append("  " + likely_cause(report.provenance))
    r = report.retrain
    if r is not None:
        lines += ["", f"retrain ({r.rule()}): {len(r.rows)} trials in {r.seconds:.1f} s",
                  f"  {'iter':>4} {'kind':<10} {'status':<9} {'recorded':>10} {'retrained':>10} "
                  f"{'drift':>10}  verdict"]
        for row in r.rows:
            drift = "-" if row.drift is None else f"{row.drift:+.6f}"
            verdict = "ok" if row.ok else f"FAIL: {row.note}"
            lines.append(f"  {row.iteration:>4} {row.kind:<10} {row.status:<9} "
                         f"{_m(row.recorded):>10} {_m(row.retrained):>10} {drift:>10}  {verdict}")
        worst = r.max_drift
        lines.append(f"  max |drift| {'-' if worst is None else f'{worst:.6f}'}, "
                     f"{len(r.flips)} decision(s) would flip: "
                     f"{'PASS' if r.ok else 'FAIL'}")
    lines += ["", f"result: {'REPRODUCED' if report.reproduced else 'DIVERGED'} "
              f"({report.seconds:.1f} s)"]
    return "\n".join(lines)
