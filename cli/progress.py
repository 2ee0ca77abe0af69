"""Progress reporters for `arx run`: one rich line per iteration, JSON lines, or quiet."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.table import Table

from arx.core.loop.engine import Engine, Reporter
from arx.core.loop.trace import TraceRecord, TrialState
from arx.core.repo.commits import describe_changes, fmt_metric

_STYLE = {
    TrialState.KEEP: "bold green", TrialState.BASELINE: "cyan", TrialState.DISCARD: "dim",
    TrialState.INVALID: "yellow", TrialState.INTERRUPTED: "yellow",
}


def console() -> Console:
    """A terminal keeps its width; pipes and logs get room for the tables."""
    con = Console(highlight=False)
    return con if con.is_terminal else Console(width=160, highlight=False)


def _eta(engine: Engine, record: TraceRecord) -> tuple[float, float | None]:
    elapsed = time.monotonic() - engine.started
    done = max(engine.trials_run, 1)
    left = max(engine.config.iterations - record.iteration, 0)
    return elapsed, (elapsed / done) * left if engine.trials_run else None


def summary_rows(engine: Engine) -> list[tuple[str, str]]:
    trials = [r for r in engine.records if r.kind == "trial"]
    counts: dict[str, int] = {}
    for r in trials:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    best, base = engine.best, engine.baseline_metric
    delta = best.metric - base if best and base is not None else None
    return [
        ("run", f"{engine.ws.name} (branch arx/{engine.ws.name})"),
        ("iterations", str(len(trials))),
        ("baseline", fmt_metric(base)),
        ("best", f"{fmt_metric(best.metric if best else None)} (iteration "
                 f"{best.iteration if best else '-'})"),
        ("delta", "n/a" if delta is None else f"{delta:+.6f}"),
        ("trials", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"),
        ("time", f"{time.monotonic() - engine.started:.0f} s "
                 f"({engine.trial_seconds:.0f} s in training)"),
    ]


class RichReporter(Reporter):
    def __init__(self, out: Console | None = None):
        self.console = out or console()

    def start(self, engine: Engine) -> None:
        verb = "resuming" if engine.ws.resumed else "starting"
        self.console.print(
            f"arx: {verb} run [bold]{engine.ws.name}[/] on branch arx/{engine.ws.name} "
            f"({engine.config.iterations} iterations, group {engine.config.group}, "
            f"proposer {engine.proposer.name})")

    def line(self, text: str) -> None:
        self.console.print(text)

    def trial(self, engine: Engine, record: TraceRecord) -> None:
        elapsed, eta = _eta(engine, record)
        change = describe_changes(record.changes, record.get("before") or {})
        if record.state is TrialState.BASELINE:
            change = "baseline"
        metric = fmt_metric(record.metric) if record.metric is not None else record.get("reason", "")
        best = fmt_metric(engine.best.metric if engine.best else None)
        style = _STYLE.get(record.state, "red" if record.state.is_failure else "")
        eta_text = f"eta {eta:.0f}s" if eta is not None else ""
        self.console.print(
            f"#{record.iteration:>3} [{style}]{record.state.value:<9}[/] {change[:60]:<60} "
            f"{metric[:40]:<12} best {best}  {elapsed:.0f}s {eta_text}", soft_wrap=True)

    def finish(self, engine: Engine) -> None:
        table = Table(title="arx run summary", show_header=False)
        for key, value in summary_rows(engine):
            table.add_row(key, value)
        self.console.print(table)
        self.console.print(f"read it: git log --oneline arx/{engine.ws.name}")


class JsonReporter(Reporter):
    """One JSON object per trial on stdout, then a summary object."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def _emit(self, obj) -> None:
        self.stream.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
        self.stream.flush()

    def trial(self, engine: Engine, record: TraceRecord) -> None:
        self._emit({"event": "trial", **record.data})

    def line(self, text: str) -> None:
        self._emit({"event": "note", "text": text})

    def finish(self, engine: Engine) -> None:
        self._emit({"event": "summary", **dict(summary_rows(engine)),
                    "best_metric": engine.best.metric if engine.best else None,
                    "baseline_metric": engine.baseline_metric})


class QuietReporter(Reporter):
    def finish(self, engine: Engine) -> None:
        best = engine.best
        print(f"{engine.ws.name}: best {fmt_metric(best.metric if best else None)} "
              f"baseline {fmt_metric(engine.baseline_metric)}")
