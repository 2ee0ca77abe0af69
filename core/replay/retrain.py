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
  one metric). The check passes when every |drift| <= the tolerance and no decision flips. The
  tolerance is relative to the metric's own noise (``tolerance_for``): ``--tolerance`` when
  given, else ``NOISE_SDS`` x the sd of the run's latest ``noise`` event (the baseline measured
  again), else ``RELATIVE_TOLERANCE`` x |baseline metric|.
- A retrained trial that fails (crash, timeout, no metric) where the original measured fails.
- The data fingerprint (``data_fingerprint:`` of the target's summary) of every retrained trial
  must equal its record's, else ``ReplayError`` (exit 2): other data, no comparison; so must the
  records among themselves (a run whose data changed while it ran cannot be retrained).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.codemods.bundle import TargetFiles
from arx.core.codemods.constants import apply_changes, discover_constants
from arx.core.config import RunConfig
from arx.core.execution.trial import TrialSpec, run_trial
from arx.core.llm.settings import secret_names_in
from arx.core.replay.source import Recording, ReplayError, norm
from arx.core.states import MEASURED, Event, TrialKind, TrialState

#: time mode without --tolerance: this many sds of the baseline's measured spread ...
NOISE_SDS = 3.0
#: ... or, when the run measured none, this fraction of |baseline metric|
RELATIVE_TOLERANCE = 0.01


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
    #: where the tolerance comes from, in words ("3 x the measured sd 0.0041 (seeds, n=5)")
    tolerance_source: str = ""

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
        source = f" ({self.tolerance_source})" if self.tolerance_source else ""
        return (f"{self.mode} mode: every |drift| <= {self.tolerance:.6g}{source} and no "
                "keep/discard decision flips")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "tolerance": self.tolerance,
                "tolerance_source": self.tolerance_source, "rule": self.rule(),
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


def _source(baseline_source: str, config: Mapping[str, Any], path: str) -> str:
    current = {c.name: c.value for c in discover_constants(baseline_source, path)}
    changes = {k: v for k, v in config.items() if k in current and norm(v) != norm(current[k])}
    return apply_changes(baseline_source, changes, path)


def retrain(recording: Recording, worktree: Path, config: RunConfig, baseline_source: str, *,
            only_kept: bool, tolerance: float | None, log_dir: Path, pid_path: Path,
            on_line: Callable[[str], None] | None = None) -> RetrainReport:
    """Retrain the recorded measured trials in ``worktree``; the target file is restored after."""
    target = config.target
    say = on_line or (lambda _s: None)
    mode = "steps" if config.steps else "time"
    records = recording.records()
    _check_one_dataset(records)
    source = "--tolerance" if tolerance is not None else ""
    if mode == "time" and tolerance is None:
        tolerance, source = tolerance_for(recording.events)
    report = RetrainReport(mode, tolerance, tolerance_source=source)
    started = time.monotonic()
    statuses = ("baseline", "keep") if only_kept else MEASURED
    todo = [r for r in records if r.get("status") in statuses]
    todo.sort(key=lambda r: r.get("status") != TrialState.BASELINE)  # the baseline first (the data check)
    base_wall = next((r.get("wall_s") for r in records if r.get("status") == TrialState.BASELINE), None)
    timeout = config.trial_timeout(base_wall)
    files = TargetFiles(Path(worktree), target.paths())
    before = {p: (Path(worktree) / p).read_bytes() for p in target.paths()
              if (Path(worktree) / p).exists()}
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
            files.write(_source(baseline_source, _config_of(rec, records), target.file))
            label = f"{int(rec['iteration']):04d}-{rec.get('kind', 'trial')}-{rec.get('seq', 0)}"
            result = run_trial(spec(target.command, timeout, f"retrain-{label}"))
            _check_fingerprint(rec, result.summary)
            row = judge(rec, result.metric if result.ok else None, result.reason, mode,
                        tolerance, target.direction)
            report.rows.append(row)
            say(f"retrain {n + 1}/{len(todo)}: {trial_label_of(row)} recorded "
                f"{_fmt(row.recorded)} retrained {_fmt(row.retrained)}"
                + (f" ({row.note})" if row.note else ""))
    finally:
        for rel, data in before.items():
            (Path(worktree) / rel).write_bytes(data)
    report.seconds = time.monotonic() - started
    return report


def tolerance_for(events: list[Mapping[str, Any]]) -> tuple[float, str]:
    """Time mode's tolerance without --tolerance, and where it comes from, in words."""
    noise = [e for e in events if e.get("event") == Event.NOISE
             and isinstance(e.get("sd"), (int, float))]
    if noise:
        e = noise[-1]
        return NOISE_SDS * float(e["sd"]), (
            f"{NOISE_SDS:g} x the metric's measured sd {float(e['sd']):.6g}, "
            f"{e.get('method', '?')}, n={e.get('n', '?')}")
    base = next((e.get("metric") for e in events if e.get("event") == Event.TRIAL
                 and e.get("status") == TrialState.BASELINE
                 and isinstance(e.get("metric"), (int, float))), None)
    if base is None:
        return 0.0, "no baseline metric recorded: identical"
    return RELATIVE_TOLERANCE * abs(float(base)), (
        f"{RELATIVE_TOLERANCE:.0%} of |baseline metric| {float(base):.6g}: the run measured no "
        "noise")


def _check_one_dataset(records: list[Mapping[str, Any]]) -> None:
    """The run's records must name one data fingerprint: retraining cannot bring back data
    that changed while the run went on."""
    seen: dict[str, int] = {}
    for r in records:
        fp = r.get("data_fingerprint")
        if fp is not None:
            seen.setdefault(str(fp), int(r.get("iteration", 0)))
    if len(seen) > 1:
        (a, i), (b, j) = list(seen.items())[:2]
        raise ReplayError(
            f"the run's training data changed while it ran: data fingerprint {a} from "
            f"iteration {i}, {b} from iteration {j}; its metrics cannot be retrained on one "
            "dataset", hint="replay without --retrain: the decisions still replay")


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
