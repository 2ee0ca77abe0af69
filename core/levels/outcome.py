"""The outcome gate: a Level-2 mechanism stays only while it helps.

The gate (``gate.py``) checks that a mechanism is safe and runs; nothing in the paper checks that
it makes the search better. Here, once a mechanism has run ``[levels] judge_window`` (W)
iterations, its window is compared with the W iterations before it was activated, on what the
trace says of the search's progress (``Window``):

- **gain per trial**: how far the keeps moved the best (``best_before - metric`` in the metric's
  direction, the confirmed mean where the trial has one), summed over the window's trials and
  divided by their number;
- **waste per trial**: exact repeats of a configuration already measured (``repeated``) plus
  invalid proposals, divided by the number of trials.

A mechanism **helps** when its window's gain per trial is higher, or as high with less waste.
One that does no better is reverted with ``git revert`` (verdict ``no_benefit``, "no measured
benefit"), one that helps is kept (verdict ``kept``); each mechanism is judged once, after its
first window.

From rules 7 the gate judges **what the mechanism changed, not the search's age**. The control
is still the W iterations before activation: from rules 4 Level 2 adds a mechanism only after
such a window ``stalled``, so the control *is* the stall that called for it. But a stall of
repeats can hold the search's easy early gains (iterations 1-10 keep whatever the first moves
found), and against those any later window has less gain per trial: the gate reverted the tabu
that cut 6 repeats in 10 to none. So waste avoided is a benefit in its own right: a mechanism
whose window has fewer repeats per trial, or less waste (repeats plus invalid proposals) per
trial, than the control helps, whatever the gain, since reverting it would bring the repeats
back; otherwise it helps when its gain per trial is higher with no more waste (a control that
gained nothing, the stall of no gain, is beaten by any gain). Runs before rules 7 keep the rule
above, so they resume and replay as they ran. Both are pure functions of the trace's records, so resume and replay judge
exactly as the run did. Mechanisms added by hand (`arx mechanism add`) are not judged: a person
asked for them. Runs with ``rules`` < 3 are never judged (``OuterLoop`` asks ``due``).

From rules 4 Level 2 also **steps aside** while the search is progressing: a Level-2 cycle adds
a mechanism only when the W iterations before it are ``stalled`` (no gain, or waste), the very
window the outcome gate will compare the mechanism with (``calls_for_level2``). Measured on the
suite (docs/ablation.md): a mechanism that narrows a search that is still gaining can lead it
into a worse basin, and the gate cannot see what that costs later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from arx.core.levels.mechanism_state import MechanismRecord
from arx.core.proposers.moves import freeze
from arx.core.states import Event, Source, TrialKind, TrialState, Verdict

#: mechanisms the outcome gate judges: those Level 2 chose, not those a person added
JUDGED_SOURCES = frozenset({Source.CATALOG.value, Source.LLM.value, Source.LLM_REPAIR.value})


def _is_trial(rec: Mapping[str, Any]) -> bool:
    return rec.get("kind", TrialKind.TRIAL) == TrialKind.TRIAL and rec.get("status") not in (
        TrialState.INTERRUPTED, TrialState.CONTENDED)


def repeated(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The trials whose configuration (the full ``config``) equals one measured or tried
    before them, the baseline included: configurations run again for nothing. Equal as the
    proposer tells them apart (``moves.freeze``: a list and a tuple of the same values are the
    same, as a record read back from the trace and the one the engine holds)."""
    seen: set[tuple] = set()
    out = []
    for rec in records:
        config = rec.get("config")
        if not isinstance(config, Mapping) or rec.get("kind") not in (
                TrialKind.TRIAL, TrialKind.BASELINE):
            continue
        key = freeze(config)
        if _is_trial(rec) and rec.get("changes") and key in seen:
            out.append(rec)
        seen.add(key)
    return out


def _gain(rec: Mapping[str, Any], direction: str) -> float:
    if rec.get("status") != TrialState.KEEP:
        return 0.0
    metric = rec.get("reference", rec.get("metric"))
    best = rec.get("best_before")
    if not isinstance(metric, (int, float)) or not isinstance(best, (int, float)):
        return 0.0
    return max(0.0, float(best - metric if direction == "min" else metric - best))


@dataclass(frozen=True)
class Window:
    """What the search did in iterations ``first``..``last`` (inclusive)."""

    first: int
    last: int
    trials: int
    gain: float
    repeats: int
    invalid: int

    @property
    def gain_per_trial(self) -> float:
        return self.gain / self.trials if self.trials else 0.0

    @property
    def waste_per_trial(self) -> float:
        return (self.repeats + self.invalid) / self.trials if self.trials else 0.0

    @property
    def repeats_per_trial(self) -> float:
        return self.repeats / self.trials if self.trials else 0.0

    @property
    def stalled(self) -> bool:
        """Nothing to show for it: no gain, or trials wasted on repeats or invalid proposals.
        Only such a window calls for a new mechanism (``calls_for_level2``)."""
        return self.gain <= 0 or self.repeats + self.invalid > 0

    def describe(self) -> str:
        return (f"iterations {self.first}-{self.last}: {self.trials} trials, gain/trial "
                f"{self.gain_per_trial:.6g}, {self.repeats} repeats, {self.invalid} invalid")


def window(records: Sequence[Mapping[str, Any]], first: int, last: int,
           direction: str) -> Window:
    """The search's progress over iterations ``first``..``last`` of ``records`` (the trace's
    trial records, oldest first)."""
    again = {id(r) for r in repeated(records)}
    inside = [r for r in records if _is_trial(r) and first <= int(r["iteration"]) <= last]
    return Window(first, last, len(inside), sum(_gain(r, direction) for r in inside),
                  sum(1 for r in inside if id(r) in again),
                  sum(1 for r in inside if r.get("status") == TrialState.INVALID))


#: the first revision of the run rules whose outcome gate counts waste avoided as a benefit
WASTE_RULES = 7


@dataclass(frozen=True)
class Judgement:
    mechanism: MechanismRecord
    before: Window
    after: Window
    #: the run's rules revision: from ``WASTE_RULES`` waste avoided is a benefit of its own
    rules: int = WASTE_RULES - 1

    @property
    def avoided_waste(self) -> bool:
        """(Rules >= 7) fewer repeats, or less waste, per trial than the control: what the
        mechanism fixed would come back without it."""
        b, a = self.before, self.after
        return self.rules >= WASTE_RULES and (a.repeats_per_trial < b.repeats_per_trial
                                              or a.waste_per_trial < b.waste_per_trial)

    @property
    def helps(self) -> bool:
        b, a = self.before, self.after
        if self.rules >= WASTE_RULES:
            return self.avoided_waste or (a.gain_per_trial > b.gain_per_trial
                                          and a.waste_per_trial <= b.waste_per_trial)
        return a.gain_per_trial > b.gain_per_trial or (
            a.gain_per_trial >= b.gain_per_trial and a.waste_per_trial < b.waste_per_trial)

    @property
    def verdict(self) -> Verdict:
        return Verdict.KEPT if self.helps else Verdict.NO_BENEFIT

    @property
    def evidence(self) -> str:
        """One line: what was compared (the trailer ``Arx-Outcome`` after the verdict)."""
        b, a = self.before, self.after
        repeats = (f", repeats {b.repeats}/{b.trials} -> {a.repeats}/{a.trials}"
                   if self.rules >= WASTE_RULES else "")
        return (f"gain/trial {b.gain_per_trial:.4g} -> {a.gain_per_trial:.4g}, "
                f"waste/trial {b.waste_per_trial:.2f} -> {a.waste_per_trial:.2f}{repeats} "
                f"(iterations {b.first}-{b.last} -> {a.first}-{a.last})")

    @property
    def reason(self) -> str:
        """The trace event's ``reason``: the judgement and its evidence."""
        what = "measured benefit" if self.helps else "no measured benefit"
        if self.avoided_waste:
            what = "measured benefit (waste avoided)"
        return f"{what}: {self.evidence}"

    def fields(self) -> dict[str, Any]:
        """The ``level2`` event's extra fields (docs/trace.md)."""
        return {"before": asdict(self.before), "after": asdict(self.after),
                "window": self.after.last - self.after.first + 1}


def judged(notes: Iterable[Mapping[str, Any]]) -> set[str | None]:
    """The activation commits already judged (a ``kept`` or ``no_benefit`` event names them)."""
    return {n.get("commit") for n in notes if n.get("event", Event.LEVEL2) == Event.LEVEL2
            and n.get("verdict") in (Verdict.KEPT, Verdict.NO_BENEFIT)}


def due(active: Sequence[MechanismRecord], notes: Iterable[Mapping[str, Any]],
        done: int, judge_window: int) -> list[MechanismRecord]:
    """The active mechanisms to judge once iteration ``done`` is decided: chosen by Level 2,
    not judged yet, and active for ``judge_window`` iterations by then; oldest first."""
    if judge_window <= 0:
        return []
    seen = judged(notes)
    return [m for m in active if m.source in JUDGED_SOURCES and m.commit not in seen
            and m.iteration is not None and done >= int(m.iteration) + judge_window]


def judge(mech: MechanismRecord, records: Sequence[Mapping[str, Any]], judge_window: int,
          direction: str, rules: int = WASTE_RULES - 1) -> Judgement:
    """Compare the ``judge_window`` iterations after ``mech`` was activated (at the end of its
    ``iteration``) with as many before it, by the rules of revision ``rules``."""
    at = int(mech.iteration or 0)
    return Judgement(mech, window(records, max(1, at - judge_window + 1), at, direction),
                     window(records, at + 1, at + judge_window, direction), rules)


def calls_for_level2(records: Sequence[Mapping[str, Any]], last: int, judge_window: int,
                     direction: str) -> Window:
    """The ``judge_window`` iterations up to ``last`` that decide whether a Level-2 cycle adds
    a mechanism (rules >= 4): it does when the window is ``stalled``."""
    return window([r for r in records if int(r.get("iteration", 0)) <= last],
                  max(1, last - judge_window + 1), last, direction)


def too_late(iteration: int, judge_window: int, iterations: int) -> bool:
    """(Rules >= 7) Whether a mechanism activated after ``iteration`` could not run its
    ``judge_window`` iterations, and so be judged, by the run's last iteration."""
    return iteration + judge_window > iterations


def step_aside_event(run: str, cycle: int, iteration: int, recent: Window,
                     late: tuple[int, int] | None = None) -> dict[str, Any]:
    """The trace's ``step_aside`` event of a Level-2 cycle that added nothing because the
    search was progressing, or (``late``: the judge window and the run's last iteration)
    because the outcome gate could not judge a mechanism before the run ends: its cycle, the
    iteration it ran at and the window before it."""
    reason = (f"too late to judge a mechanism (its {late[0]} iterations would end after the "
              f"run's last iteration, {late[1]})" if late
              else f"the search is progressing ({recent.describe()})")
    return {"run": run, "cycle": cycle, "iteration": iteration, "reason": reason,
            "window": asdict(recent)}


def step_aside_line(event: Mapping[str, Any]) -> str:
    """How the run's output, `arx log` and the report say a step-aside."""
    return f"L2 cycle {event.get('cycle')}: steps aside, {event.get('reason')}"
