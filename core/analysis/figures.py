"""The figure of `arx report`: per run a metric panel and a parameter panel, and an overlay.

The metric panel shows the best so far as a staircase, every discard as a point, failures and
invalid proposals marked along the top, and vertical lines (``markers``) where Level 1.5 froze or
unfroze parameters and where Level 2 activated, refused or reverted a mechanism; the parameter
panel shows which constant each trial changed, coloured by outcome, with the spans during which
Level 1.5 had it frozen. Matplotlib is used through ``Figure`` objects only (no pyplot, no global
backend): headless and offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from arx.core.analysis.scale import YRange, declutter, y_range
from arx.core.analysis.summary import as_int, as_number, level2_rows, level15_rows
from arx.core.repo.commits import fmt_metric, verified_short
from arx.core.states import FAILED, TrialKind, TrialState, Verdict

if TYPE_CHECKING:  # report.py imports this module; a RunData is only ever passed in
    from arx.core.analysis.report import RunData

__all__ = ["MARKER_STYLES", "OUTCOME_COLOURS", "Marker", "build_figure", "markers",
           "metric_panel", "overlay", "param_panel"]

OUTCOME_COLOURS = {"keep": "#2ca02c", "discard": "#9a9a9a", "failure": "#d62728",
                   "contended": "#e377c2", "outlier": "#8c564b",
                   "invalid_proposal": "#ff7f0e", "baseline": "#1f77b4"}
#: the gid of the texts ``declutter`` keeps apart (marker labels, outliers' values)
LABEL_GID = "arx-label"
#: vertical-line styles of outer-loop markers, by action
MARKER_STYLES = {
    "freeze": {"color": "#9467bd", "linestyle": "--"},
    "unfreeze": {"color": "#17becf", "linestyle": "--"},
    "guidance": {"color": "#c5b0d5", "linestyle": ":"},
    "activate": {"color": "#2ca02c", "linestyle": "-"},
    "revert": {"color": "#d62728", "linestyle": ":"},
    "refuse": {"color": "#ff7f0e", "linestyle": "-."},
    "keep": {"color": "#2ca02c", "linestyle": ":"},
}


@dataclass(frozen=True)
class Marker:
    """One outer-loop event on the iteration axis (drawn after ``iteration``)."""

    run: str
    iteration: int
    #: "1.5" or "2"
    level: str
    #: Level 1.5: freeze, unfreeze, guidance; Level 2: activate, refuse, revert, keep (judged)
    action: str
    label: str


# ---- outer-loop markers -------------------------------------------------------------------
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
        out.append(Marker(run.name, as_int(row.get("iteration")), "1.5", action, " ".join(parts)))
    action_of = {"active": "activate", "refused": "refuse", "reverted": "revert"}
    for row in level2_rows(run):
        judged = row.get("verdict") in (Verdict.KEPT, Verdict.NO_BENEFIT)  # the outcome gate
        action = "keep" if row.get("verdict") == Verdict.KEPT else action_of[row["result"]]
        out.append(Marker(run.name, as_int(row.get("iteration")), "2", action,
                          f"L2 {action} {row['mechanism']}"
                          + (" (no benefit)" if judged and action == "revert" else "")))
    return sorted(out, key=lambda m: (m.iteration, m.level))


# ---- figure -------------------------------------------------------------------------------
def build_figure(runs: Sequence[RunData]) -> tuple[Figure, list[Marker], dict[str, Any]]:
    """The report figure: an overlay panel when there are several runs, then per run the metric
    panel and the parameter panel. Returns (figure, markers drawn, axes by name)."""
    heights = [3.2] if len(runs) > 1 else []
    for run in runs:
        heights += [3.2, max(1.2, 0.32 * len(_changed_names(run)) + 0.6)]
        heights += [2.6] if has_curves(run) else []
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
        if has_curves(run):
            axes[f"{run.name}:curves"] = ax_c = fig.add_subplot(grid[row])
            curve_panel(ax_c, run)
            row += 1
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # the layout: labels are moved apart at their final size
    for ax in axes.values():
        declutter([t for t in ax.texts if t.get_gid() == LABEL_GID], renderer)
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
    measured = [(int(r["iteration"]), as_number(r.get("metric")), r.get("status"))
                for r in run.records if r.get("kind") in (TrialKind.BASELINE, TrialKind.TRIAL)
                and as_number(r.get("metric")) is not None]
    last = max([int(r["iteration"]) for r in run.records] + [run.iterations, 1])
    if xs:
        ax.step(xs + [last], ys + [ys[-1]], where="post", color="black", linewidth=1.5,
                label="best so far")
        sd = as_number((run.noise or {}).get("sd"))
        if sd:
            ax.fill_between(xs + [last], [y - sd for y in ys] + [ys[-1] - sd],
                            [y + sd for y in ys] + [ys[-1] + sd], step="post", color="black",
                            alpha=0.12, linewidth=0, label=f"noise (best ± sd {sd:.3g})")
    confirmed = [(int(r["iteration"]), as_number(r.get("metric"))) for r in run.trials
                 if r.get("confirm_metrics") and as_number(r.get("metric")) is not None]
    if confirmed:
        ax.scatter(*zip(*confirmed), s=110, facecolors="none", edgecolors="#555555",
                   linewidths=1.0, label="confirmed on more seeds", zorder=2)
    for status, kw in (("discard", {"s": 14, "alpha": 0.6}), ("keep", {"s": 40, "zorder": 3}),
                       ("baseline", {"s": 40, "marker": "s", "zorder": 3})):
        pts = [(i, m) for i, m, s in measured if s == status]
        if pts:
            ax.scatter(*zip(*pts), color=OUTCOME_COLOURS[status], label=status, **kw)
    contended = [int(r["iteration"]) for r in run.records
                 if r.get("status") == TrialState.CONTENDED]
    if contended:
        ax.scatter(contended, [0.88] * len(contended), transform=top, marker="s", s=30,
                   color=OUTCOME_COLOURS["contended"], label="contended (run again)",
                   clip_on=False, zorder=4)
    for label, statuses, mk in (("crash/failure", FAILED, "X"),
                                ("invalid proposal", ("invalid_proposal",), "v")):
        its = [int(r["iteration"]) for r in run.trials if r.get("status") in statuses]
        if its:
            colour = OUTCOME_COLOURS["failure" if mk == "X" else "invalid_proposal"]
            ax.scatter(its, [0.95] * len(its), transform=top, marker=mk, s=45, color=colour,
                       label=label, clip_on=False, zorder=4)
    sd = as_number((run.noise or {}).get("sd")) or 0.0
    core = [m for _, m, s in measured if s in (TrialState.BASELINE, TrialState.KEEP)]
    core += [y + d for y in ys for d in ((-sd, 0.0, sd) if sd else (0.0,))]
    _y_axis(ax, top, y_range(core, [(i, m) for i, m, _ in measured]))
    drawn = markers(run)
    labelled: set[str] = set()
    for m in drawn:
        style = MARKER_STYLES[m.action]
        key = f"L{m.level} {m.action}"
        ax.axvline(m.iteration + 0.5, linewidth=1.2, alpha=0.85,
                   label=None if key in labelled else key, **style)
        labelled.add(key)
    by_iteration: dict[int, list[Marker]] = {}
    for m in drawn:  # one label per iteration: two events there would overprint
        by_iteration.setdefault(m.iteration, []).append(m)
    for i, ms in by_iteration.items():
        colours = {MARKER_STYLES[m.action]["color"] for m in ms}
        label = ax.text(i + 0.6, 0.02, "\n".join(m.label for m in ms), transform=top,
                        rotation=90, fontsize=6, color=colours.pop() if len(colours) == 1
                        else "#444444", va="bottom", ha="left", clip_on=True, gid=LABEL_GID)
        label.set_in_layout(False)
    base, best, delta = run.baseline, run.best, run.delta
    held = f"; held-out {verified_short(run.verified)}" if run.verified else ""
    ax.set_title(f"{run.name} (group {run.group}, {run.state}): {run.metric} baseline "
                 f"{fmt_metric(base)}, best {fmt_metric(best)}, "
                 f"delta {'n/a' if delta is None else f'{delta:+.6f}'}"
                 f"{' in search' if held else ''}{held} "
                 f"({'lower' if run.direction == 'min' else 'higher'} is better)", fontsize=10)
    ax.set_ylabel(run.metric)
    ax.set_xlim(-0.5, last + 0.8)
    ax.grid(alpha=0.3)
    rates = [(int(r["iteration"]), as_number(r.get("throughput"))) for r in run.records
             if r.get("kind") in (TrialKind.BASELINE, TrialKind.TRIAL)
             and as_number(r.get("throughput")) is not None]
    if rates:  # what each trial got done per second: a slow machine shows here first
        twin = ax.twinx()
        twin.plot(*zip(*rates), linestyle="none", marker=".", color="#8c8c8c", alpha=0.7,
                  label="steps/s (right axis)")
        twin.set_ylabel("steps/s", color="#8c8c8c", fontsize=8)
        twin.tick_params(axis="y", colors="#8c8c8c", labelsize=7)
        handles, labels = ax.get_legend_handles_labels()
        more, names = twin.get_legend_handles_labels()
        # beyond the twin axis's ticks and label, so the legend does not cover them
        ax.legend(handles + more, labels + names, fontsize="x-small", loc="center left",
                  bbox_to_anchor=(1.06, 0.5))
    else:
        ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(labelbottom=False)
    return drawn


def _y_axis(ax: Any, top: Any, yr: YRange | None) -> None:
    """Limits and scale from ``scale.y_range``; each outlier a marker on the edge it passed,
    with its value."""
    if yr is None:
        return
    if yr.scale == "symlog":
        ax.set_yscale("symlog", linthresh=yr.linthresh)
    elif yr.scale == "log":
        ax.set_yscale("log")
    ax.set_ylim(yr.low, yr.high)
    for points, y, mk in ((yr.above, 0.82, "^"), (yr.below, 0.08, "v")):
        if not points:
            continue
        ax.scatter([i for i, _ in points], [y] * len(points), transform=top, marker=mk, s=40,
                   color=OUTCOME_COLOURS["outlier"], label="off the axis (value)",
                   clip_on=False, zorder=4)
        for i, v in points:
            label = ax.text(i + 0.25, y, f"{v:.3g}", transform=top, fontsize=6, va="center",
                            ha="left", color=OUTCOME_COLOURS["outlier"], clip_on=True,
                            gid=LABEL_GID)
            label.set_in_layout(False)


def param_panel(ax: Any, run: RunData) -> None:
    """Which constant each trial changed, coloured by outcome; frozen spans shaded."""
    names = _changed_names(run)
    row = {n: i for i, n in enumerate(names)}
    last = max([int(r["iteration"]) for r in run.records] + [run.iterations, 1])
    frozen_since: dict[str, float] = {}
    spans: list[tuple[str, float, float]] = []
    for dec in level15_rows(run):
        at = as_int(dec.get("iteration")) + 0.5
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


def has_curves(run: RunData) -> bool:
    """Whether the run's trials printed learning curves (``execution.curve``)."""
    return any(r.get("curve") for r in run.trials)


def curve_panel(ax: Any, run: RunData) -> None:
    """The learning curves: the baseline and keeps drawn in full, discards light, pruned
    trials faint up to the point where they were stopped (a cross)."""
    styles = {"baseline": dict(color=OUTCOME_COLOURS["baseline"], linewidth=1.6, zorder=3),
              "keep": dict(color=OUTCOME_COLOURS["keep"], linewidth=1.4, zorder=3),
              "pruned": dict(color="#d62728", linewidth=0.8, alpha=0.25)}
    labelled: set[str] = set()
    units = set()
    drawn: list[tuple[str, list[tuple[float, float]]]] = []
    for rec in run.records:
        status, curve = rec.get("status"), rec.get("curve")
        if not curve or rec.get("kind") not in (TrialKind.BASELINE, TrialKind.TRIAL):
            continue
        units.add(rec.get("curve_unit"))
        drawn.append((status, [(x, y) for x, y in curve
                                if isinstance(y, (int, float)) and math.isfinite(y)]))
        style = styles.get(status, dict(color=OUTCOME_COLOURS["discard"], linewidth=0.8,
                                        alpha=0.5))
        name = "pruned (stopped)" if status == "pruned" else status
        xs, ys = zip(*curve)
        ax.plot(xs, ys, label=None if name in labelled else name, **style)
        labelled.add(name)
        if status == "pruned":
            ax.plot(xs[-1], ys[-1], marker="x", linestyle="none", markersize=5, color="#d62728",
                    alpha=0.6)
    _y_axis(ax, ax.get_xaxis_transform(), curve_range(drawn))
    pruned = sum(1 for r in run.trials if r.get("status") == "pruned")
    ax.set_title(f"learning curves ({pruned} trial(s) pruned)", fontsize=9)
    ax.set_xlabel("step" if units == {"step"} else "seconds" if units == {"s"} else "progress")
    ax.set_ylabel(run.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))


def curve_range(curves: Sequence[tuple[str, Sequence[tuple[float, float]]]]) -> YRange | None:
    """The curve panel's y-range, outlier-proof as the metric panel's (``scale.y_range``): the
    baseline's and keeps' curves must be readable, and a diverged curve is one marker on the
    edge (at its most extreme point) instead of one per point beyond it."""
    core = [y for status, pts in curves if status in (TrialState.BASELINE, TrialState.KEEP)
            for _x, y in pts]
    yr = y_range(core, [pt for _status, pts in curves for pt in pts])
    if yr is None:
        return None
    above, below = [], []
    for _status, pts in curves:
        if beyond := [(x, y) for x, y in pts if y > yr.high]:
            above.append(max(beyond, key=lambda pt: pt[1]))
        if beyond := [(x, y) for x, y in pts if y < yr.low]:
            below.append(min(beyond, key=lambda pt: pt[1]))
    return replace(yr, above=tuple(above), below=tuple(below))


def _trial_names(rec: Mapping[str, Any]) -> list[str]:
    names = list(rec.get("changes") or {})
    if not names and rec.get("status") == TrialState.INVALID:
        names = [str(n) for n in (rec.get("proposal") or {})]
    return names


def _changed_names(run: RunData) -> list[str]:
    seen: dict[str, None] = {}
    for rec in run.trials:
        for n in _trial_names(rec):
            seen.setdefault(n, None)
    return list(seen)
