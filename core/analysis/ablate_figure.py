"""The figure of `arx ablate`: each row's mean delta with its spread, and the mean best-so-far
curve per row. Headless (matplotlib's ``Figure`` API), read from the runs' branches."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from arx.core.loop.trace import read_trace
from arx.core.repo.git import GitRepo
from arx.core.states import RunState, TrialKind, TrialState

if TYPE_CHECKING:  # only for annotations: ablate imports this module
    from arx.core.analysis.ablate import Ablation


def running_delta(repo: GitRepo, run: str, iterations: int) -> list[float] | None:
    """Best - baseline after each iteration 0..iterations (held after the last trial)."""
    records = read_trace(repo, run)
    base = next((r.get("metric") for r in records if r.get("status") == TrialState.BASELINE), None)
    if not isinstance(base, (int, float)):
        return None
    best, out = base, []
    by_iteration = {}
    for r in records:
        if r.get("kind") == TrialKind.TRIAL and r.get("status") == TrialState.KEEP:
            by_iteration[int(r["iteration"])] = r.get("metric")
    for i in range(iterations + 1):
        best = by_iteration.get(i, best)
        out.append(best - base)
    return out


def figure(result: Ablation, repo: GitRepo) -> Any:
    """Left: each row's mean delta with its std and the repeats as points. Right: the mean
    best-so-far delta per iteration of each row."""
    # imported here: matplotlib is slow to load, and commands other than ablate must not pay for it
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_bar, ax_line = fig.subplots(1, 2, gridspec_kw={"width_ratios": (2, 3)})
    rows = [r for r in result.rows if r.mean is not None]
    xs = range(len(rows))
    ax_bar.bar(xs, [r.mean for r in rows], yerr=[r.std or 0.0 for r in rows], capsize=5,
               color=[f"C{i}" for i in xs], alpha=0.6)
    for i, row in zip(xs, rows):
        ax_bar.scatter([i] * len(row.deltas), row.deltas, color="black", s=14, zorder=3)
    ax_bar.set_xticks(list(xs), [r.label for r in rows], rotation=20, ha="right",
                     fontsize=8)
    ax_bar.axhline(0, color="black", linewidth=0.8)
    ax_bar.set_ylabel(f"delta {result.metric} (best - baseline)")
    ax_bar.set_title(f"mean ± std over {result.repeats} repeat(s)")
    for i, row in zip(xs, rows):
        curves = [c for c in (running_delta(repo, o.run, result.iterations)
                              for o in row.outcomes if o.state == RunState.FINISHED) if c]
        if curves:
            mean = [statistics.fmean(v) for v in zip(*curves)]
            ax_line.step(range(len(mean)), mean, where="post", color=f"C{i}",
                         label=row.label)
    ax_line.set_xlabel("iteration")
    ax_line.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_line.set_ylabel("mean best-so-far delta")
    ax_line.set_title(("lower" if result.direction == "min" else "higher") + " is better")
    ax_line.grid(alpha=0.3)
    if rows:
        ax_line.legend(fontsize="small")
    return fig
