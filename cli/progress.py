"""Progress reporters for `arx run`: one rich line per iteration, JSON lines, or quiet.

Each gets ``RunProgress`` snapshots from the engine (never the engine itself).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from arx.core.loop.diagnose import last_error, log_file
from arx.core.loop.progress import Reporter, RunProgress, Training
from arx.core.loop.trace import TraceRecord
from arx.core.repo.commits import change_items, fmt_delta, fmt_metric
from arx.core.repo.paths import branch_of
from arx.core.states import TrialKind, TrialState
from arx.core.textfit import fit, fit_items

_STYLE = {
    TrialState.KEEP: "bold green", TrialState.BASELINE: "cyan", TrialState.DISCARD: "dim",
    TrialState.INVALID: "yellow", TrialState.INTERRUPTED: "yellow", TrialState.PRUNED: "dim",
}


def console() -> Console:
    """A terminal keeps its width; pipes and logs get room for the tables."""
    con = Console(highlight=False)
    return con if con.is_terminal else Console(width=160, highlight=False)


def add_row(table: Table, *cells: str) -> None:
    """A table row printed as it is: cells hold commit subjects, values and reasons with
    brackets ("'[SL]'", "[levels]") that rich would read as markup."""
    table.add_row(*(Text(str(cell)) for cell in cells))


def _eta(p: RunProgress) -> str:
    return f"eta {p.eta_s:.0f}s" if p.eta_s is not None else ""


def training_text(t: Training) -> str:
    """``noise 2 (baseline, seed 2)``, ``#4 confirm (candidate, seed 1)``, ``verify (best (#3),
    seed 1001)``, with ``attempt 2`` for a contended re-run."""
    seed = f", seed {t.seed}" if t.seed is not None else ""
    again = f", attempt {t.attempt + 1}" if t.attempt else ""
    where = "" if t.kind in (TrialKind.NOISE, TrialKind.VERIFY) else f"#{t.iteration} "
    number = f" {t.seq}" if t.kind == TrialKind.NOISE else ""
    return f"{where}{t.kind}{number} ({t.what or t.kind}{seed}{again})"


def training_end(t: Training) -> str:
    """What a training ended with: its metric, or its status and reason (``confirm_timeout``:
    a confirmation the hard timeout killed, never folded silently into a discard)."""
    if t.status == "ok" and t.metric is not None:
        return f"{fmt_metric(t.metric)} in {t.wall_s or 0:.0f}s"
    return f"{t.kind}_{t.status}: {fit(t.reason, 80)} after {t.wall_s or 0:.0f}s"


def summary_rows(p: RunProgress) -> list[tuple[str, str]]:
    return [
        ("run", f"{p.run} (branch {branch_of(p.run)})"),
        ("iterations", str(sum(p.counts.values()))),
        ("baseline", fmt_metric(p.baseline_metric)),
        ("best", f"{fmt_metric(p.best_metric)} (iteration "
                 f"{p.best_iteration if p.best_iteration is not None else '-'})"),
        ("delta", fmt_delta(p.delta) + (" (in search)" if p.verified else "")),
        *([("held-out", p.verified)] if p.verified else []),
        ("trials", ", ".join(f"{k} {v}" for k, v in sorted(p.counts.items())) or "-"),
        ("time", f"{p.elapsed_s:.0f} s ({p.trial_seconds:.0f} s in training)"),
    ]


class RichReporter(Reporter):
    """One line per trial; a failed trial gets a second line with the error its log ends with
    and the log's path (``log_dir``: the run's log directory)."""

    def __init__(self, out: Console | None = None, log_dir: Path | None = None):
        self.console = out or console()
        self.log_dir = log_dir

    def start(self, p: RunProgress) -> None:
        verb = "resuming" if p.resumed else "starting"
        self.console.print(
            f"arx: {verb} run [bold]{p.run}[/] on branch {branch_of(p.run)} "
            f"({p.iterations} iterations, group {p.group}, proposer {p.proposer})")

    def line(self, text: str) -> None:
        # plain text: arx's lines quote names, reasons and settings ("[levels] judge_window"),
        # which rich would read as markup, dropping them or failing on a stray "[/]"
        self.console.print(text, markup=False)

    def training(self, p: RunProgress, t: Training) -> None:
        if t.status is None:
            text = Text(f"      {training_text(t)} ...", style="dim")
        else:
            style = "dim" if t.status == "ok" else "yellow"
            text = Text(f"      {training_text(t)}: {training_end(t)}  {p.elapsed_s:.0f}s "
                        f"{_eta(p)}", style=style)
        self.console.print(text, soft_wrap=True)

    def trial(self, p: RunProgress, record: TraceRecord) -> None:
        change = fit_items(change_items(record.changes, record.get("before") or {}), 60) \
            or "(no change)"
        if record.state is TrialState.BASELINE:
            change = "baseline"
        metric = fmt_metric(record.metric) if record.metric is not None \
            else fit(record.get("reason") or "", 60)
        style = _STYLE.get(record.state, "red" if record.state.is_failure else "")
        eta_text = _eta(p)
        # a Text, not markup: a state without a style, or a change or reason with brackets,
        # must print as it is (an empty style made "[]no_effect[/]", a MarkupError mid-run)
        line = Text(f"#{record.iteration:>3} ")
        line.append(f"{record.state.value:<9}", style=style or None)
        line.append(f" {change:<60} {metric:<12} best {fmt_metric(p.best_metric)}  "
                    f"{p.elapsed_s:.0f}s {eta_text}")
        self.console.print(line, soft_wrap=True)
        for failed in record.get("confirm_failed") or []:
            self.console.print(Text(f"      {failed}", style="yellow"), soft_wrap=True)
        if record.state.is_failure:
            error = last_error(record.get("log_tail") or "")
            log = log_file(self.log_dir, record.data) if self.log_dir else None
            if error or log:
                where = f"  (log: {escape(str(log))})" if log else ""
                self.console.print(f"      [red]{escape(error or '')}[/]{where}", soft_wrap=True)

    def finish(self, p: RunProgress) -> None:
        table = Table(title="arx run summary", show_header=False)
        for key, value in summary_rows(p):
            add_row(table, key, value)
        self.console.print(table)
        self.console.print(f"read it: git log --oneline {branch_of(p.run)}")


class JsonReporter(Reporter):
    """One JSON object per trial on stdout, then a summary object."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def _emit(self, obj) -> None:
        self.stream.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
        self.stream.flush()

    def trial(self, p: RunProgress, record: TraceRecord) -> None:
        self._emit({"event": "trial", **record.data})

    def line(self, text: str) -> None:
        self._emit({"event": "note", "text": text})

    def training(self, p: RunProgress, t: Training) -> None:
        self._emit({"event": "training", "phase": "start" if t.status is None else "end",
                    **asdict(t), "eta_s": p.eta_s})

    def finish(self, p: RunProgress) -> None:
        self._emit({"event": "summary", **dict(summary_rows(p)),
                    "best_metric": p.best_metric, "baseline_metric": p.baseline_metric})


class QuietReporter(Reporter):
    def finish(self, p: RunProgress) -> None:
        print(f"{p.run}: best {fmt_metric(p.best_metric)} "
              f"baseline {fmt_metric(p.baseline_metric)}"
              + (f"; held-out delta {p.verified}" if p.verified else ""))
