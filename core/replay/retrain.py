"""`arx replay --retrain`: train the recorded configurations again and compare the metrics.

For each recorded measured trial (baseline, keep, discard, confirm, rebaseline; with
``only_kept`` the baseline and the keeps) the target is rebuilt from the baseline commit's file
(which holds the budget constants the run set) with the record's ``config`` applied, and run for
real with the run's command after its setup command, in the replay's worktree.

- Steps mode (the run had ``--steps``): every metric must be identical to the recorded one (or
  within ``tolerance`` when one is given: GPUs are not always bit-exact).
- Time mode: each metric's drift (retrained - recorded) is reported, and whether a decision
  would flip: a keep whose new metric no longer strictly beats the recorded ``best_before``, or
  a discard whose new metric now would (records confirmed over several seeds are not judged on
  one metric). The check passes when every |drift| <= ``tolerance`` (default
  ``DEFAULT_TOLERANCE``) and no decision flips.
- A retrained trial that fails (crash, timeout, no metric) where the original measured fails.
- The data fingerprint (``data_fingerprint:`` of the target's summary) of the first retrained
  trial must equal the recorded one, else ``ReplayError`` (exit 2): other data, no comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.codemods.constants import apply_changes, discover_constants
from arx.core.config import RunConfig
from arx.core.execution.trial import TrialSpec, run_trial
from arx.core.llm.settings import secret_names_in
from arx.core.replay.source import Recording, ReplayError, norm
from arx.core.states import MEASURED, TrialKind, TrialState

DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class RetrainRow:
    iteration: int
    kind: str
    seq: int
    status: str
    recorded: float | None
    retrained: float | None
    drift: float | None
    flip: str | None
    ok: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RetrainReport:
    mode: str  # "steps" or "time"
    tolerance: float | None
    rows: list[RetrainRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_drift(self) -> float | None:
        drifts = [abs(r.drift) for r in self.rows if r.drift is not None]
        return max(drifts) if drifts else None

    @property
    def flips(self) -> list[RetrainRow]:
        return [r for r in self.rows if r.flip]

    def rule(self) -> str:
        if self.mode == "steps" and self.tolerance is None:
            return "steps mode: every metric must be identical"
        return (f"{self.mode} mode: every |drift| <= {self.tolerance:g} and no keep/discard "
                "decision flips")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "tolerance": self.tolerance, "rule": self.rule(),
                "ok": self.ok, "max_drift": self.max_drift, "flips": len(self.flips),
                "seconds": round(self.seconds, 2), "rows": [r.as_dict() for r in self.rows]}


def better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "min" else a > b


def judge(rec: Mapping[str, Any], new: float | None, reason: str, mode: str,
          tolerance: float | None, direction: str) -> RetrainRow:
    """One retrained record against its recording (the rule of the module docstring)."""
    recorded = rec.get("metric")
    recorded = float(recorded) if isinstance(recorded, (int, float)) else None
    key = dict(iteration=int(rec.get("iteration", 0)), kind=rec.get("kind", "trial"),
               seq=int(rec.get("seq", 0) or 0), status=str(rec.get("status")), recorded=recorded)
    if new is None or recorded is None:
        return RetrainRow(**key, retrained=new, drift=None, flip=None, ok=False,
                          note=f"retrained trial failed: {reason}" if new is None else
                          "no recorded metric")
    drift = new - recorded
    flip = None
    best_before = rec.get("best_before")
    if (rec.get("status") in (TrialState.KEEP, TrialState.DISCARD) and isinstance(best_before, (int, float))
            and not rec.get("confirm_metrics")):
        wins = better(new, float(best_before), direction)
        if rec["status"] == TrialState.KEEP and not wins:
            flip = "keep would now be a discard"
        elif rec["status"] == TrialState.DISCARD and wins:
            flip = "discard would now be a keep"
    if mode == "steps" and tolerance is None:
        ok = new == recorded
        note = "" if ok else "not identical in steps mode"
    else:
        ok = abs(drift) <= float(tolerance) and flip is None
        note = "" if ok else flip or f"|drift| > {tolerance:g}"
    return RetrainRow(**key, retrained=new, drift=drift, flip=flip, ok=ok, note=note)


def _config_of(rec: Mapping[str, Any], records: list[Mapping[str, Any]]) -> dict[str, Any]:
    if rec.get("kind") != TrialKind.CONFIRM:
        return dict(rec.get("config") or {})
    of = rec.get("of")
    origin = next((r for r in records if r.get("iteration") == of
                   and r.get("kind", "trial") in (TrialKind.BASELINE, TrialKind.TRIAL)
                   and r.get("status") in (TrialState.BASELINE, TrialState.KEEP, TrialState.DISCARD)), None)
    return {**dict((origin or {}).get("config") or {}), **dict(rec.get("changes") or {})}


def _source(baseline_source: str, config: Mapping[str, Any]) -> str:
    current = {c.name: c.value for c in discover_constants(baseline_source)}
    changes = {k: v for k, v in config.items() if k in current and norm(v) != norm(current[k])}
    return apply_changes(baseline_source, changes)


def retrain(recording: Recording, worktree: Path, config: RunConfig, baseline_source: str, *,
            only_kept: bool, tolerance: float | None, log_dir: Path, pid_path: Path,
            on_line: Callable[[str], None] | None = None) -> RetrainReport:
    """Retrain the recorded measured trials in ``worktree``; the target file is restored after."""
    target = config.target
    say = on_line or (lambda _s: None)
    mode = "steps" if config.steps else "time"
    if mode == "time" and tolerance is None:
        tolerance = DEFAULT_TOLERANCE
    report = RetrainReport(mode, tolerance)
    started = time.monotonic()
    records = recording.records()
    statuses = ("baseline", "keep") if only_kept else MEASURED
    todo = [r for r in records if r.get("status") in statuses]
    todo.sort(key=lambda r: r.get("status") != TrialState.BASELINE)  # the baseline first (the data check)
    base_wall = next((r.get("wall_s") for r in records if r.get("status") == TrialState.BASELINE), None)
    timeout = config.trial_timeout(base_wall)
    path = Path(worktree) / target.file
    before = path.read_bytes() if path.exists() else None
    secret_env = secret_names_in(Path(worktree))

    def spec(command: str, timeout_s: float, log: str) -> TrialSpec:
        return TrialSpec(command=command, cwd=Path(worktree), timeout_s=timeout_s,
                         metric=target.metric, metric_regex=target.metric_regex,
                         log_path=log_dir / f"{log}.log", pid_path=pid_path, drop_env=secret_env)

    try:
        if target.setup:
            say(f"retrain: setup `{target.setup}`")
            result = run_trial(spec(target.setup, 3600.0, "retrain-setup"))
            if result.returncode != 0:
                raise ReplayError(f"the setup command `{target.setup}` failed "
                                  f"({result.reason}):\n{result.log_tail}",
                                  hint="fix what it needs (data, network), then replay again")
        for n, rec in enumerate(todo):
            path.write_text(_source(baseline_source, _config_of(rec, records)))
            label = f"{int(rec['iteration']):04d}-{rec.get('kind', 'trial')}-{rec.get('seq', 0)}"
            result = run_trial(spec(target.command, timeout, f"retrain-{label}"))
            if n == 0:
                _check_fingerprint(rec, result.summary)
            row = judge(rec, result.metric if result.ok else None, result.reason, mode,
                        tolerance, target.direction)
            report.rows.append(row)
            say(f"retrain {n + 1}/{len(todo)}: {trial_label_of(row)} recorded "
                f"{_fmt(row.recorded)} retrained {_fmt(row.retrained)}"
                + (f" ({row.note})" if row.note else ""))
    finally:
        if before is not None:
            path.write_bytes(before)
    report.seconds = time.monotonic() - started
    return report


def _check_fingerprint(rec: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    recorded = rec.get("data_fingerprint")
    if recorded is None:
        return
    now = summary.get("data_fingerprint")
    if str(now) != str(recorded):
        raise ReplayError(
            f"the data differs from the run's: data fingerprint {now or '(none printed)'} here, "
            f"{recorded} recorded; metrics on other data are not comparable",
            hint="prepare the data the run used (the setup command, e.g. `python prepare.py`, "
                 "with the recorded corpus and options, or ARX_DATA_DIR pointing at that data), "
                 "then replay again")


def trial_label_of(row: RetrainRow) -> str:
    return f"#{row.iteration} {row.kind}" + (f" seq {row.seq}" if row.seq else "")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
