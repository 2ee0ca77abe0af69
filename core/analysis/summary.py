"""The summary of `arx report`: the rows a report reads from a run, as Markdown or HTML.

``level15_rows`` and ``level2_rows`` read a run's Level 1.5 decisions and Level 2 outcomes (from
the trace, else from commit trailers); ``summary_blocks`` lays out the run table, kept changes,
decisions and mechanisms as blocks that ``to_markdown`` and ``to_html`` render. No matplotlib
here: ``arx ablate`` uses the same blocks for its table.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from arx.core.levels.mechanism_state import (
    attempt_state,
    events_from_commits,
    mechanism_records,
    verdict_of,
)
from arx.core.levels.outcome import step_aside_line
from arx.core.loop.measure import confirm_failure
from arx.core.repo.commits import (
    describe_changes,
    fmt_metric,
    level15_facts,
    verified_short,
    verified_text,
)
from arx.core.states import FAILED, Event, TrialKind, TrialState, Verdict

if TYPE_CHECKING:  # report.py imports this module; a RunData is only ever passed in
    from arx.core.analysis.report import RunData

__all__ = ["Block", "as_int", "as_number", "delta_convention", "level15_rows", "level2_rows",
           "run_blocks", "summary_blocks", "to_html", "to_markdown"]


# ---- summary ------------------------------------------------------------------------------
Block = tuple  # ("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", src, alt)


def summary_blocks(runs: Sequence[RunData], image: str | None = None) -> list[Block]:
    blocks: list[Block] = [("h", 1, "arx report")]
    if image:
        blocks.append(("img", image, "arx report figure"))
    rows = []
    for run in runs:
        counts: dict[str, int] = {}
        for r in run.trials:
            key = "fail" if r.get("status") in FAILED else r.get("status")
            counts[key] = counts.get(key, 0) + 1
        use = run.usage()
        rows.append([
            run.name, run.group, run.state,
            f"{len({r['iteration'] for r in run.trials})}/{run.iterations}",
            fmt_metric(run.baseline), fmt_metric(run.best), _delta(run.delta),
            verified_short(run.verified),
            "/".join(str(counts.get(k, 0)) for k in ("keep", "discard", "fail",
                                                     "invalid_proposal")),
            f"{int(use['prompt_tokens'])}+{int(use['completion_tokens'])}",
            f"{use['cost_usd']:.4f}", ", ".join(run.mechanisms) or "-"])
    blocks.append(("table", ["run", "group", "state", "iterations", "baseline", "best",
                             "delta (in search)", "held-out delta",
                             "keep/discard/fail/invalid", "tokens (prompt+completion)",
                             "cost $", "active mechanisms"], rows))
    if runs:
        blocks.append(("p", delta_convention(runs[0].metric, runs[0].direction)))
    for run in runs:
        blocks += run_blocks(run)
    return blocks


def delta_convention(metric: str, direction: str) -> str:
    """The sign convention of delta, in one sentence (report and ablation tables)."""
    if direction == "min":
        return (f"delta = best - baseline {metric}; lower {metric} is better, so an improvement "
                "is a negative delta (more negative is better).")
    return (f"delta = best - baseline {metric}; higher {metric} is better, so an improvement "
            "is a positive delta (more positive is better).")


def run_blocks(run: RunData) -> list[Block]:
    blocks: list[Block] = [("h", 2, f"{run.name} (group {run.group})")]
    noise, reruns = run.noise, sum(1 for r in run.records
                                   if r.get("status") == TrialState.CONTENDED)
    if noise and noise.get("sd"):
        blocks.append(("p", f"Noise: {run.metric} sd {noise['sd']:.4g} "
                            + (f"over {noise['n']} baseline runs ({noise['method']})"
                               if noise.get("n") else "(given)")
                            + f"; {reruns} trial(s) ran on a contended machine and ran again."))
    failed = confirm_failures(run)
    if failed:
        blocks.append(("p", f"Failed confirmations ({len(failed)}), decided without their "
                            "value: " + "; ".join(failed) + "."))
    if run.verified:
        blocks.append(("p", f"Held-out verification: {run.metric} {verified_text(run.verified)}. "
                            "The in-search delta was measured on the seeds that picked the best; "
                            "the held-out one on seeds no decision of the run used."))
    kept = [r for r in run.trials if r.get("status") == TrialState.KEEP]
    blocks.append(("h", 3, "Kept changes"))
    if kept:
        blocks.append(("table", ["iteration", "change", run.metric, "delta", "margin (sd)",
                                 "hypothesis"], [
            [str(r["iteration"]), describe_changes(r.get("changes") or {}, r.get("before") or {}),
             fmt_metric(as_number(r.get("metric"))), _delta(as_number(r.get("delta"))),
             "-" if r.get("margin_sd") is None else f"{r['margin_sd']:.2f}",
             r.get("hypothesis") or ""] for r in kept]))
    else:
        blocks.append(("p", "No change was kept."))
    decisions = level15_rows(run)
    if decisions or run.group != "A":
        blocks.append(("h", 3, "Level 1.5 decisions"))
        if decisions:
            blocks.append(("table", ["after iteration", "cycle", "freeze", "unfreeze",
                                     "frozen now", "guidance", "decided by"], [
                [str(d.get("iteration")), str(d.get("cycle", "")),
                 ", ".join(d.get("freeze") or []) or "-", ", ".join(d.get("unfreeze") or []) or "-",
                 "-" if d.get("frozen") is None else ", ".join(d.get("frozen")) or "-",
                 d.get("guidance") or "", d.get("source", "")] for d in decisions]))
        else:
            blocks.append(("p", "No Level 1.5 cycle yet."))
    mechs = level2_rows(run)
    if mechs or run.group in ("C", "D"):
        blocks.append(("h", 3, "Level 2 mechanisms"))
        if mechs:
            blocks.append(("table", ["after iteration", "mechanism", "domain", "source", "gate",
                                     "result", "now"], [
                [str(m.get("iteration")), str(m["mechanism"]), str(m.get("domain") or "-"),
                 str(m.get("source") or "-"), m["gate"], m["result"], m["now"]] for m in mechs]))
        else:
            blocks.append(("p", "No Level 2 mechanism yet."))
        asides = [e for e in run.events if e.get("event") == Event.STEP_ASIDE]
        if asides:
            blocks.append(("p", "Level 2 stepped aside (no mechanism added, no commit): "
                                + "; ".join(f"after iteration {e.get('iteration')}: "
                                            f"{step_aside_line(e)}" for e in asides) + "."))
    return blocks


def to_markdown(blocks: Iterable[Block]) -> str:
    out = []
    for block in blocks:
        if block[0] == "h":
            out.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            out.append(block[1])
        elif block[0] == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif block[0] == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def to_html(blocks: Iterable[Block], title: str = "arx report") -> str:
    body = []
    for block in blocks:
        if block[0] == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "img":
            body.append(f'<img src="{block[1]}" alt="{html.escape(block[2])}">')
        elif block[0] == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                           + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}img{max-width:100%}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 6px;font-size:13px;text-align:left;vertical-align:top}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


# ---- rows read from a run -----------------------------------------------------------------
def confirm_failures(run: RunData) -> list[str]:
    """Each confirmation training that failed (a timeout on a busy machine, a crash), as the
    run's output said it: ``#4 confirm_timeout: candidate, seed 2 (...)``."""
    out = []
    for r in run.records:
        if r.get("kind") == TrialKind.CONFIRM and r.get("status") in FAILED:
            i = as_int(r.get("iteration"))
            out.append(f"#{i} {confirm_failure(r, i)}")
    return out


def level15_rows(run: RunData) -> list[dict[str, Any]]:
    """Level 1.5 decisions, from the trace, else from ``Arx-Level: 1.5`` commits."""
    rows = [dict(e) for e in run.events if e.get("event") == Event.LEVEL15]
    if rows:
        return rows
    return [facts for facts in map(level15_facts, run.commits) if facts is not None]


def level2_rows(run: RunData) -> list[dict[str, Any]]:
    """Level 2 attempts and the outcome gate's judgements, oldest first: ``result`` is what the
    event did (active, refused, or reverted at run time or for no measured benefit; a ``kept``
    judgement leaves it active), ``now`` where its mechanism stands, ``gate`` a line. From the
    trace's ``level2`` events, and for mechanisms the trace does not name, from the branch's
    commits; both read by ``mechanism_state``, the one place that decides."""
    events = [dict(e) for e in run.events if e.get("event") == Event.LEVEL2]
    events += events_from_commits(run.commits, {str(e.get("mechanism")) for e in events})
    now = {m.name: m.state.value for m in mechanism_records(events)}
    rows = []
    for e in events:
        name = str(e.get("mechanism") or "?")
        rows.append({**e, "mechanism": name, "gate": _gate_line(e),
                     "result": attempt_state(e).value, "now": now[name],
                     "reason": str(e.get("reason") or ""), "iteration": as_int(e.get("iteration"))})
    return sorted(rows, key=lambda r: r["iteration"])


def _gate_line(e: Mapping[str, Any]) -> str:
    verdict, reason = e.get("verdict"), str(e.get("reason") or "")
    if verdict is None:
        gate = e.get("gate")
        return gate if isinstance(gate, str) else "pass"
    return {Verdict.PASS: "pass", Verdict.FAIL: f"fail: {reason}",
            Verdict.REFUSED: f"refused: {reason}",
            Verdict.RUNTIME_REVERT: "pass (failed at run time)",
            Verdict.NO_BENEFIT: f"pass (reverted: {reason})",
            Verdict.KEPT: f"pass ({reason})"}.get(verdict_of(e), str(verdict))


def _md_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.6f}"


def as_number(value: Any) -> float | None:
    """A trace value as a float if it is a number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def as_int(value: Any, default: int = 0) -> int:
    """A trace or trailer value as an int, ``default`` when it is missing or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default

