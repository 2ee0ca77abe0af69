"""`arx report`: figures and a summary of runs, read straight from their branches.

Per run, two panels share the iteration axis: the metric (the best so far as a staircase, every
discard as a point, failures and invalid proposals marked along the top, vertical lines where
Level 1.5 froze or unfroze parameters and where Level 2 activated, refused or reverted a
mechanism) and a parameter-by-iteration chart (which constant each trial changed, coloured by
outcome, with the spans during which Level 1.5 had it frozen). With several runs a first panel
overlays the best-so-far line of each. A summary (Markdown beside the image, or one HTML file
with the image embedded) lists the kept changes with their hypotheses, the Level 1.5 decisions,
the mechanisms with their gate results, tokens and cost, baseline, best and delta.

Everything comes from the trace (``trial``, ``level15`` and ``level2`` events) and from the run's
commit trailers (``Arx-Level: 1.5``, ``Arx-Level: 2`` with ``Arx-Mechanism``), so a report can be
made from any clone of the branches. Matplotlib is used through ``Figure`` objects only (no
pyplot, no global backend): headless and offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from arx.core.config import RunConfig
from arx.core.errors import ConfigError, RepoError
from arx.core.loop.trace import FAILED
from arx.core.repo.commits import describe_changes, fmt_metric
from arx.core.repo.git import GitRepo
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.runs import run_names, run_status, trace_events
from arx.core.repo.workspace import branch_of

#: figure formats `arx report --out` writes (and HTML, which embeds a PNG)
FORMATS = (".png", ".svg", ".pdf", ".html")
OUTCOME_COLOURS = {"keep": "#2ca02c", "discard": "#9a9a9a", "failure": "#d62728",
                   "invalid_proposal": "#ff7f0e", "baseline": "#1f77b4"}
#: vertical-line styles of outer-loop markers, by action
MARKER_STYLES = {
    "freeze": {"color": "#9467bd", "linestyle": "--"},
    "unfreeze": {"color": "#17becf", "linestyle": "--"},
    "guidance": {"color": "#c5b0d5", "linestyle": ":"},
    "activate": {"color": "#2ca02c", "linestyle": "-"},
    "revert": {"color": "#d62728", "linestyle": ":"},
    "refuse": {"color": "#ff7f0e", "linestyle": "-."},
}


@dataclass(frozen=True)
class Marker:
    """One outer-loop event on the iteration axis (drawn after ``iteration``)."""

    run: str
    iteration: int
    #: "1.5" or "2"
    level: str
    #: Level 1.5: freeze, unfreeze, guidance; Level 2: activate, refuse, revert
    action: str
    label: str


@dataclass(frozen=True)
class RunData:
    """What a report shows of one run: its records, outer-loop events and commits."""

    name: str
    metric: str = "metric"
    direction: str = "min"
    group: str = "A"
    state: str = "finished"
    iterations: int = 0
    #: finished-trial records (``event: trial``), oldest first
    records: tuple[Mapping[str, Any], ...] = ()
    #: outer-loop notes (``event: level15`` / ``level2``), oldest first
    events: tuple[Mapping[str, Any], ...] = ()
    #: the run's commits, oldest first
    commits: tuple[CommitRecord, ...] = ()
    mechanisms: tuple[str, ...] = ()

    @property
    def trials(self) -> list[Mapping[str, Any]]:
        return [r for r in self.records if r.get("kind", "trial") == "trial"
                and r.get("status") != "interrupted"]

    @property
    def baseline(self) -> float | None:
        return next((_num(r.get("metric")) for r in self.records
                     if r.get("status") == "baseline"), None)

    @property
    def best(self) -> float | None:
        kept = [_num(r.get("metric")) for r in self.records
                if r.get("status") in ("baseline", "keep")]
        return kept[-1] if kept else None

    @property
    def delta(self) -> float | None:
        base, best = self.baseline, self.best
        return None if base is None or best is None else best - base

    def usage(self) -> dict[str, float]:
        """Token and cost totals over trials and outer-loop calls."""
        out = {"prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0}
        for item in (*self.records, *self.events):
            for key in out:
                out[key] += float((item.get("usage") or {}).get(key, 0) or 0)
        return out

    def running_best(self) -> tuple[list[int], list[float]]:
        """(iterations, best metric after each), from the baseline to the last trial."""
        xs, ys, best = [], [], None
        for rec in self.records:
            if rec.get("kind") not in ("baseline", "trial") or rec.get("status") == "interrupted":
                continue
            if rec.get("status") in ("baseline", "keep") and _num(rec.get("metric")) is not None:
                best = _num(rec.get("metric"))
            if best is not None:
                if xs and xs[-1] == int(rec["iteration"]):
                    ys[-1] = best
                else:
                    xs.append(int(rec["iteration"]))
                    ys.append(best)
        return xs, ys


@dataclass
class Report:
    figure: Figure
    markers: list[Marker]
    runs: list[RunData]
    #: "overlay" (several runs), and per run "<name>:metric" and "<name>:params"
    axes: dict[str, Any] = field(default_factory=dict)
    image_path: Path | None = None
    summary_path: Path | None = None


# ---- reading ------------------------------------------------------------------------------
def load_run(repo: GitRepo, name: str) -> RunData:
    status = run_status(repo, name)
    stored = repo.show(branch_of(name), f"runs/{name}/config.json")
    group = RunConfig.from_json(stored).group.upper() if stored else "A"
    events = trace_events(repo, name)
    commits = [c for c in reversed(repo.log(branch_of(name)))
               if c.trailers.get("Arx-Run") == name or "Arx-Mechanism" in c.trailers]
    return RunData(
        name=name, metric=status.metric, direction=status.direction, group=group,
        state=status.state, iterations=status.iterations,
        records=tuple(e for e in events if e.get("event") == "trial"),
        events=tuple(e for e in events if e.get("event") in ("level15", "level2")),
        commits=tuple(commits), mechanisms=status.mechanisms,
    )


# ---- outer-loop markers -------------------------------------------------------------------
def level15_rows(run: RunData) -> list[dict[str, Any]]:
    """Level 1.5 decisions, from the trace, else from ``Arx-Level: 1.5`` commits."""
    rows = [dict(e) for e in run.events if e.get("event") == "level15"]
    if rows:
        return rows
    for c in run.commits:
        t = c.trailers
        if t.get("Arx-Level") == "1.5":
            rows.append({
                "iteration": _int(t.get("Arx-Iteration")), "cycle": _int(t.get("Arx-Cycle")),
                "freeze": _names(t.get("Arx-Freeze")), "unfreeze": _names(t.get("Arx-Unfreeze")),
                "frozen": None, "guidance": t.get("Arx-Guidance", ""), "source": "commit",
            })
    return rows


def level2_rows(run: RunData) -> list[dict[str, Any]]:
    """Level 2 outcomes, oldest first: ``result`` is active, refused (the patch did not apply or
    the gate failed; reverted at once) or reverted (it failed at run time), ``gate`` a line.

    From ``level2`` trace events (the engine's ``verdict`` pass/fail/refused/runtime_revert, or
    a ``gate`` line "pass" / "fail: ..." with ``reverted``). A mechanism that shows only in
    commits (``Arx-Level: 2`` with ``Arx-Mechanism`` and ``Arx-Gate``; its revert carries
    ``Arx-Reverts``) is read from there."""
    rows = [_level2_event(e) for e in run.events if e.get("event") == "level2"]
    seen = {r["mechanism"] for r in rows}
    by_sha = {c.sha: c for c in run.commits}
    activations: dict[str, dict[str, Any]] = {}  # sha of the mechanism's commit -> its row
    at = 0  # iteration of the latest commit that names one (reverts do not)
    for c in run.commits:
        t = c.trailers
        at = _int(t.get("Arx-Iteration"), at)
        undone = by_sha.get(t.get("Arx-Reverts", ""))
        mech = t.get("Arx-Mechanism") or (undone.trailers.get("Arx-Mechanism") if undone else None)
        if not mech or mech in seen:
            continue
        gate = t.get("Arx-Gate") or "pass"
        reason = c.body.strip().splitlines()[0] if c.body.strip() else ""
        if undone is None and not c.subject.startswith("Revert"):
            row = {"iteration": at, "mechanism": mech, "gate": gate, "reason": "",
                   "result": "active" if gate.startswith("pass") else "refused",
                   "source": "commit"}
            activations[c.sha] = row
            rows.append(row)
            continue
        row = activations.get(undone.sha if undone else "")
        if row is not None and not gate.startswith(("pass", "runtime")):
            row.update(result="refused", gate=gate, reason=reason)  # the gate's own revert
        else:
            rows.append({"iteration": at, "mechanism": mech, "gate": gate, "result": "reverted",
                         "reason": reason, "source": "commit"})
    return sorted(rows, key=lambda r: r["iteration"])


def _level2_event(e: Mapping[str, Any]) -> dict[str, Any]:
    verdict = e.get("verdict")
    reason = str(e.get("reason") or "")
    gate = e.get("gate")
    if verdict is not None:
        result = {"pass": "active", "runtime_revert": "reverted"}.get(str(verdict), "refused")
        line = {"pass": "pass", "fail": f"fail: {reason}", "refused": f"refused: {reason}",
                "runtime_revert": "pass (failed at run time)"}.get(str(verdict), str(verdict))
    else:
        line = str(gate if isinstance(gate, str) else "pass")
        result = ("refused" if not line.startswith("pass") else
                  "reverted" if e.get("reverted") else "active")
    return {**e, "mechanism": e.get("mechanism") or e.get("name") or "?", "gate": line,
            "result": result, "reason": reason, "iteration": _int(e.get("iteration"))}


def markers(run: RunData) -> list[Marker]:
    out = []
    for row in level15_rows(run):
        freeze, unfreeze = list(row.get("freeze") or []), list(row.get("unfreeze") or [])
        action = "freeze" if freeze else "unfreeze" if unfreeze else "guidance"
        parts = [f"L1.5 c{row.get('cycle', '?')}"]
        if freeze:
            parts.append("freeze " + ",".join(freeze))
        if unfreeze:
            parts.append("unfreeze " + ",".join(unfreeze))
        out.append(Marker(run.name, _int(row.get("iteration")), "1.5", action, " ".join(parts)))
    action_of = {"active": "activate", "refused": "refuse", "reverted": "revert"}
    for row in level2_rows(run):
        action = action_of[row["result"]]
        out.append(Marker(run.name, _int(row.get("iteration")), "2", action,
                          f"L2 {action} {row['mechanism']}"))
    return sorted(out, key=lambda m: (m.iteration, m.level))


# ---- figure -------------------------------------------------------------------------------
def build_figure(runs: Sequence[RunData]) -> tuple[Figure, list[Marker], dict[str, Any]]:
    """The report figure: an overlay panel when there are several runs, then per run the metric
    panel and the parameter panel. Returns (figure, markers drawn, axes by name)."""
    heights = [3.2] if len(runs) > 1 else []
    for run in runs:
        heights += [3.2, max(1.2, 0.32 * len(_changed_names(run)) + 0.6)]
    fig = Figure(figsize=(12, sum(heights) + 0.4 * len(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    axes: dict[str, Any] = {}
    drawn: list[Marker] = []
    row = 0
    if len(runs) > 1:
        axes["overlay"] = ax = fig.add_subplot(grid[0])
        overlay(ax, runs)
        row = 1
    for run in runs:
        ax_m = fig.add_subplot(grid[row])
        ax_p = fig.add_subplot(grid[row + 1], sharex=ax_m)
        axes[f"{run.name}:metric"], axes[f"{run.name}:params"] = ax_m, ax_p
        drawn += metric_panel(ax_m, run)
        param_panel(ax_p, run)
        row += 2
    return fig, drawn, axes


def overlay(ax: Any, runs: Sequence[RunData]) -> None:
    """The best-so-far metric of each run on one axis (one line per run)."""
    for run in runs:
        xs, ys = run.running_best()
        if xs:
            ax.step(xs, ys, where="post", label=run.name, linewidth=1.6)
    first = runs[0]
    ax.set_title(f"best {first.metric} so far, {len(runs)} runs "
                 f"({'lower' if first.direction == 'min' else 'higher'} is better)")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(first.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=max(1, len(runs) // 8), loc="best")


def metric_panel(ax: Any, run: RunData) -> list[Marker]:
    """Metric per iteration with the outer-loop markers; returns the markers drawn."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    xs, ys = run.running_best()
    measured = [(int(r["iteration"]), _num(r.get("metric")), r.get("status"))
                for r in run.records if r.get("kind") in ("baseline", "trial")
                and _num(r.get("metric")) is not None]
    last = max([int(r["iteration"]) for r in run.records] + [run.iterations, 1])
    if xs:
        ax.step(xs + [last], ys + [ys[-1]], where="post", color="black", linewidth=1.5,
                label="best so far")
    for status, kw in (("discard", {"s": 14, "alpha": 0.6}), ("keep", {"s": 40, "zorder": 3}),
                       ("baseline", {"s": 40, "marker": "s", "zorder": 3})):
        pts = [(i, m) for i, m, s in measured if s == status]
        if pts:
            ax.scatter(*zip(*pts), color=OUTCOME_COLOURS[status], label=status, **kw)
    for label, statuses, mk in (("crash/failure", FAILED, "X"),
                                ("invalid proposal", ("invalid_proposal",), "v")):
        its = [int(r["iteration"]) for r in run.trials if r.get("status") in statuses]
        if its:
            colour = OUTCOME_COLOURS["failure" if mk == "X" else "invalid_proposal"]
            ax.scatter(its, [0.95] * len(its), transform=top, marker=mk, s=45, color=colour,
                       label=label, clip_on=False, zorder=4)
    values = [m for _, m, _ in measured]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.01 or 0.01
        ax.set_ylim(lo - pad, hi + pad * 3.5)  # room for the markers along the top
    drawn = markers(run)
    labelled: set[str] = set()
    for m in drawn:
        style = MARKER_STYLES[m.action]
        key = f"L{m.level} {m.action}"
        ax.axvline(m.iteration + 0.5, linewidth=1.2, alpha=0.85,
                   label=None if key in labelled else key, **style)
        labelled.add(key)
        ax.text(m.iteration + 0.6, 0.02 if m.level == "1.5" else 0.5, m.label, transform=top,
                rotation=90, fontsize=6,
                color=style["color"], va="bottom", clip_on=True)
    base, best, delta = run.baseline, run.best, run.delta
    ax.set_title(f"{run.name} (group {run.group}, {run.state}): {run.metric} baseline "
                 f"{fmt_metric(base)}, best {fmt_metric(best)}, "
                 f"delta {'n/a' if delta is None else f'{delta:+.6f}'} "
                 f"({'lower' if run.direction == 'min' else 'higher'} is better)", fontsize=10)
    ax.set_ylabel(run.metric)
    ax.set_xlim(-0.5, last + 0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(labelbottom=False)
    return drawn


def param_panel(ax: Any, run: RunData) -> None:
    """Which constant each trial changed, coloured by outcome; frozen spans shaded."""
    names = _changed_names(run)
    row = {n: i for i, n in enumerate(names)}
    last = max([int(r["iteration"]) for r in run.records] + [run.iterations, 1])
    frozen_since: dict[str, float] = {}
    spans: list[tuple[str, float, float]] = []
    for dec in level15_rows(run):
        at = _int(dec.get("iteration")) + 0.5
        now = dec.get("frozen")
        if now is None:  # from commits: rebuild the frozen set from freeze/unfreeze
            now = (set(frozen_since) | set(dec.get("freeze") or [])) - set(dec.get("unfreeze") or [])
        for n in set(frozen_since) - set(now):
            spans.append((n, frozen_since.pop(n), at))
        for n in now:
            frozen_since.setdefault(n, at)
    spans += [(n, start, last + 0.5) for n, start in frozen_since.items()]
    labelled = False
    for n, start, end in spans:
        if n in row:
            ax.barh(row[n], end - start, left=start, height=0.7, color="#9467bd", alpha=0.15,
                    label=None if labelled else "frozen (Level 1.5)")
            labelled = True
    groups: dict[str, list[tuple[int, int]]] = {}
    for rec in run.trials:
        status = rec.get("status")
        outcome = "failure" if status in FAILED else status
        for n in _trial_names(rec):
            groups.setdefault(outcome, []).append((int(rec["iteration"]), row[n]))
    for outcome in ("discard", "keep", "failure", "invalid_proposal"):
        if groups.get(outcome):
            ax.scatter(*zip(*groups[outcome]), marker="s", s=36, zorder=3,
                       color=OUTCOME_COLOURS[outcome], label=outcome.replace("_", " "))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(max(len(names), 1) - 0.3, -0.7)  # first changed on top
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    if not names:
        ax.text(0.5, 0.5, "no trials yet", transform=ax.transAxes, ha="center", va="center")
    elif groups or spans:
        ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))


def _trial_names(rec: Mapping[str, Any]) -> list[str]:
    names = list(rec.get("changes") or {})
    if not names and rec.get("status") == "invalid_proposal":
        names = [str(n) for n in (rec.get("proposal") or {})]
    return names


def _changed_names(run: RunData) -> list[str]:
    seen: dict[str, None] = {}
    for rec in run.trials:
        for n in _trial_names(rec):
            seen.setdefault(n, None)
    return list(seen)


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
            "/".join(str(counts.get(k, 0)) for k in ("keep", "discard", "fail",
                                                     "invalid_proposal")),
            f"{int(use['prompt_tokens'])}+{int(use['completion_tokens'])}",
            f"{use['cost_usd']:.4f}", ", ".join(run.mechanisms) or "-"])
    blocks.append(("table", ["run", "group", "state", "iterations", "baseline", "best", "delta",
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
    kept = [r for r in run.trials if r.get("status") == "keep"]
    blocks.append(("h", 3, "Kept changes"))
    if kept:
        blocks.append(("table", ["iteration", "change", run.metric, "delta", "hypothesis"], [
            [str(r["iteration"]), describe_changes(r.get("changes") or {}, r.get("before") or {}),
             fmt_metric(_num(r.get("metric"))), _delta(_num(r.get("delta"))),
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
                                     "result"], [
                [str(m.get("iteration")), str(m["mechanism"]), str(m.get("domain") or "-"),
                 str(m.get("source") or "-"), m["gate"], m["result"]] for m in mechs]))
        else:
            blocks.append(("p", "No Level 2 mechanism yet."))
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


# ---- the command's work -------------------------------------------------------------------
def write_report(root: Path | str, names: Sequence[str] = (), out: Path | str = "arx-report.png",
                 dpi: int = 110) -> Report:
    """Read the runs (default: all), draw the figure and write it with its summary.

    ``out`` ending in .png/.svg/.pdf: the figure there and ``<out stem>.md`` beside it;
    ending in .html: one self-contained page with the figure embedded as a base64 PNG."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format {out.suffix or '(none)'}",
                          hint="end it in " + ", ".join(FORMATS))
    repo = GitRepo(root)
    names = list(names) or run_names(repo)
    if not names:
        raise RepoError("no runs to report", hint="`arx run` starts one")
    runs = [load_run(repo, n) for n in names]
    fig, drawn, axes = build_figure(runs)
    report = Report(fig, drawn, runs, axes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        out.write_text(to_html(summary_blocks(runs, image=uri)))
        report.summary_path = out
    else:
        fig.savefig(out, dpi=dpi)
        summary = out.with_suffix(".md")
        summary.write_text(to_markdown(summary_blocks(runs, image=out.name)))
        report.image_path, report.summary_path = out, summary
    return report


def _md_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.6f}"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _names(text: str | None) -> list[str]:
    return [n for n in (text or "").split(",") if n and n != "-"]
