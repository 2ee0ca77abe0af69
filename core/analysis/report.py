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
made from any clone of the branches. This module reads the runs (``load_run``) and writes the
report (``write_report``); the figure is drawn in ``figures``, the summary laid out in ``summary``.
Importing this module imports matplotlib (through ``figures``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arx.core.analysis.figures import Marker, build_figure
from arx.core.analysis.summary import as_number, summary_blocks, to_html, to_markdown
from arx.core.app.runs import run_names, run_status
from arx.core.config import RunConfig
from arx.core.errors import ConfigError, RepoError
from arx.core.loop.noise import latest_noise, reported
from arx.core.loop.trace import trace_events
from arx.core.repo.commits import Trailer
from arx.core.repo.git import GitRepo
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.paths import RunFiles, branch_of
from arx.core.states import Event, TrialKind, TrialState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: figure formats `arx report --out` writes (and HTML, which embeds a PNG)
FORMATS = (".png", ".svg", ".pdf", ".html")


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
        return [r for r in self.records if r.get("kind", "trial") == TrialKind.TRIAL
                and r.get("status") not in (TrialState.INTERRUPTED, TrialState.CONTENDED)]

    @property
    def noise(self) -> Mapping[str, Any] | None:
        """The run's measured (or given) spread of the metric, or None."""
        return latest_noise(self.events)

    @property
    def verified(self) -> Mapping[str, Any] | None:
        """The run's latest held-out verification (a ``verify`` event), or None."""
        return next((e for e in reversed(self.events) if e.get("event") == Event.VERIFY), None)

    @property
    def baseline(self) -> float | None:
        """As `arx status` shows it: a mean where the run measured its noise."""
        return as_number(reported(self.records, self.noise)[0])

    @property
    def best(self) -> float | None:
        return as_number(reported(self.records, self.noise)[1])

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
        """(iterations, best metric after each), from the baseline to the last trial. With a
        measured noise the best is what the engine compared with: the mean of its
        measurements (the noise mean for the baseline, a keep's ``reference``)."""
        xs, ys, best = [], [], None
        noise_mean = as_number((self.noise or {}).get("mean"))
        for rec in self.records:
            if rec.get("kind") not in (TrialKind.BASELINE, TrialKind.TRIAL) \
                    or rec.get("status") in (TrialState.INTERRUPTED, TrialState.CONTENDED):
                continue
            metric = as_number(rec.get("reference")) or as_number(rec.get("metric"))
            if rec.get("status") == TrialState.BASELINE and noise_mean is not None:
                metric = noise_mean
            if rec.get("status") in (TrialState.BASELINE, TrialState.KEEP) and metric is not None:
                best = metric
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
    stored = repo.show(branch_of(name), RunFiles(name).config_rel)
    group = RunConfig.from_json(stored).group.upper() if stored else "A"
    events = trace_events(repo, name)
    commits = [c for c in reversed(repo.log(branch_of(name)))
               if c.trailers.get(Trailer.RUN) == name or Trailer.MECHANISM in c.trailers]
    return RunData(
        name=name, metric=status.metric, direction=status.direction, group=group,
        state=status.state, iterations=status.iterations,
        records=tuple(e for e in events if e.get("event") == Event.TRIAL),
        events=tuple(e for e in events if e.get("event") in (Event.LEVEL15, Event.LEVEL2,
                                                             Event.NOISE, Event.VERIFY,
                                                             Event.STEP_ASIDE)),
        commits=tuple(commits), mechanisms=status.mechanisms,
    )


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
