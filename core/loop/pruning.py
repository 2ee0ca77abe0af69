"""Pruning: stop a trial early when its learning curve trails the best's, as the runner decides.

arx only gathers the facts; the decision is the runner's ``prune(ctx, curves)`` hook (so Level 2
can replace it, as it can ``accept``). While a Level-1 trial trains, its ``watch`` (``Pruner``)
turns each new point of the curve into a share of the budget and asks the runner, with the best's
whole curve in the same shares and the curve's noise (``curve_noise``: the spread of the noise
trainings' curves at the same progress). A worker call costs a few milliseconds, so the runner is
asked at a new point only once the trial has moved on by ``ASK_EVERY`` of its budget since the
last question: at most about a hundred questions per trial, whatever the script prints.

A trial the runner stops is ``pruned``: its curve up to the last point is recorded, it is never
kept nor confirmed. The same watch is handed to a replay, which asks the runner again at every
recorded point (``replay.engine.ServedTrials``), so a replay decides as the run did. Without a
best curve (the best printed none, or the run's ``prune`` is off) there is no watch at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from arx.core.config import RunConfig
from arx.core.execution.curve import SECONDS, STEP, CurveReader, value_at
from arx.core.execution.trial import TrialResult
from arx.core.loop.trace import TraceRecord
from arx.core.states import TrialKind, TrialState

#: the least share of the budget between two questions to the runner
ASK_EVERY = 0.01


class Judge(Protocol):
    """What the watch asks: ``RunnerPolicy.prune``."""

    def prune(self, ctx: Mapping[str, Any], curves: Mapping[str, Any]) -> bool: ...


def best_record(records: Sequence[TraceRecord], iteration: int) -> TraceRecord | None:
    """The record that made the best of ``iteration`` (the baseline, or that iteration's keep)."""
    for rec in reversed(records):
        if rec.iteration == iteration and rec.state.is_best:
            return rec
    return None


def whole(rec: TraceRecord, unit: str | None, config: RunConfig) -> float | None:
    """What a share of the budget is a share of, in ``unit``: where the best's progress ended
    (``curve_end``: its last step, or its seconds); else the steps it trained (``num_steps``,
    else ``--steps``), or the seconds of the time budget (else of the best's training)."""
    end = rec.get("curve_end")
    if isinstance(end, (int, float)) and end > 0:
        return float(end)
    if unit == STEP:
        steps = rec.get("num_steps")
        return float(steps) if isinstance(steps, (int, float)) and steps > 0 else (
            float(config.steps) if config.steps else None)
    if unit == SECONDS:
        if config.budget:
            return float(config.budget)
        wall = rec.get("wall_s")
        return float(wall) if isinstance(wall, (int, float)) and wall > 0 else None
    return None


def curve_noise(records: Iterable[TraceRecord], unit: str | None) -> float | None:
    """The curve's noise: the baseline and its noise trainings (same configuration, other seeds
    or repeats) compared at each point of the baseline's curve; the pooled standard deviation
    over those points. None with fewer than two curves in ``unit``."""
    curves = [rec.get("curve") for rec in records
              if rec.kind in (TrialKind.BASELINE, TrialKind.NOISE) and rec.state in (
                  TrialState.BASELINE, TrialState.NOISE) and rec.get("curve_unit") == unit
              and rec.get("curve")]
    if len(curves) < 2:
        return None
    variances = []
    for x, _ in curves[0]:
        values = [value_at(c, x) for c in curves]
        if any(v is None for v in values):
            continue
        mean = sum(values) / len(values)
        variances.append(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return math.sqrt(sum(variances) / len(variances)) if variances else None


class Pruner:
    """The watch of one trial: asks ``judge.prune`` at its new points (see the module)."""

    def __init__(self, judge: Judge, ctx: Mapping[str, Any], best: Sequence[Sequence[float]],
                 unit: str, total: float, sd: float | None):
        self.judge = judge
        self.ctx = ctx
        self.unit = unit
        self.total = total
        self.best = [[p / total, v] for p, v in best]
        self.sd = sd
        self.asked_at: float | None = None
        self.asked = 0
        self.reading: CurveReader | None = None

    def __call__(self, curve: CurveReader) -> bool:
        if curve is not self.reading:  # a trial run again (a contended attempt): ask anew
            self.reading, self.asked_at = curve, None
        if curve.unit != self.unit or not curve.points:
            return False
        share = curve.points[-1][0] / self.total
        if self.asked_at is not None and share < self.asked_at + ASK_EVERY:
            return False
        self.asked_at = share
        self.asked += 1
        return self.judge.prune(self.ctx, {
            "curve": [[p / self.total, v] for p, v in curve.points], "best": self.best,
            "sd": self.sd, "unit": self.unit})


def describe_curve(result: TrialResult, config: RunConfig) -> str:
    """What ``arx check`` says of a trial's learning curve, and so of pruning."""
    if not result.curve:
        return (f"none: {config.target.metric} is printed once, so every trial trains to the end "
                "(print it after each evaluation too, and trials that trail the best are stopped "
                "early)")
    first, last = result.curve[0][0], result.curve[-1][0]
    state = "on: a trial that trails the best's curve is stopped early" \
        if config.prune == "on" else "off (--prune on stops trials that trail the best's curve)"
    return (f"{len(result.curve)} point(s) by {result.curve_unit}, {first:g} to {last:g}; "
            f"pruning {state}")


def watch_for(config: RunConfig, judge: Judge, ctx: Mapping[str, Any],
              records: Sequence[TraceRecord], best_iteration: int) -> Pruner | None:
    """The watch of a Level-1 trial, or None: pruning off, or no best curve to compare with."""
    if config.prune != "on":
        return None
    rec = best_record(records, best_iteration)
    if rec is None or not rec.get("curve"):
        return None
    unit = rec.get("curve_unit")
    total = whole(rec, unit, config)
    if not total:
        return None
    return Pruner(judge, ctx, rec.get("curve"), unit, total, curve_noise(records, unit))
