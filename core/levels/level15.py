"""Level 1.5: every K iterations, adjust what the inner loop searches (not how).

From the trace: freeze parameters that the trials say do not matter, unfreeze frozen ones once
the search has moved or after a bounded number of cycles, and write guidance that points the
next proposals at under-explored parameters. Never freeze so much that fewer than
``min_active`` parameters remain. With an LLM, one call proposes the same three things as JSON
and the rules validate it; without one (or when its answer is unusable) the rules decide.

Two revisions of the rules, by the run's ``RunConfig.rules`` (old branches resume and replay as
they ran):

- **by counts** (rules < 3): freeze a parameter tried ``k`` times with no keep, counted over the
  whole history; unfreeze it once the best moved. This froze the most sensitive parameter (a
  learning rate whose big moves all lose) and re-froze at once what it unfroze (issue #16).
- **by evidence** (rules >= 3, ``evidence=True``): a parameter's **effect** is the median of
  ``|metric - best before|`` over its measured trials (how far changing it moves the metric). It
  is frozen only when it was measured at least ``k`` times since it was last unfrozen, none of
  them a keep that moved the best by ``INERT_SHARE`` of the largest effect or more (without
  noise every strictly better metric is kept, tiny gains included), and its effect is below
  ``INERT_SHARE`` of the largest effect of any parameter
  with as much evidence (and at least two parameters have it: a tiny sample freezes nothing). A
  frozen parameter returns when the best moved or after ``MAX_FROZEN_CYCLES`` cycles, and one
  unfrozen in a cycle needs ``k`` new trials before it can be frozen again.
- **loops are evidence** (rules >= 7, ``loops=True``): a parameter whose moves ran a
  configuration already measured at least ``k`` times in the last ``LOOP_WINDOW`` iterations,
  none of its trials there a keep, is proposed again and again for nothing (``looping``). The
  repeats themselves are the evidence: the rules freeze it (before the inert ones), and an LLM's
  freeze of it is honoured, with the repeats named. A near-deterministic LLM proposer asked 8
  times to freeze the parameter it kept repeating, and the rules by evidence refused each time
  (its effect was large: the repeats measured the same big loss again).

From rules 7 (``explore=True``) the offline guidance names only the few parameters the evidence
says are under-explored (``under_explored``), and the decision carries them (``explore``) for the
offline proposer, which moves them first when its model has nothing new to propose
(``proposers/offline.py``).

The state lives in ``runner/search_state.json`` on the branch, so each cycle is a commit and a
resumed or replayed run starts from exactly the state it had.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arx.core.levels.outcome import repeated
from arx.core.llm.jsonextract import extract_json_object
from arx.core.states import TrialKind, TrialState


@dataclass(frozen=True)
class SearchState:
    """What Level 1.5 decided last: frozen parameters (with when) and the guidance text."""

    cycle: int = 0
    #: name -> {"iteration": when frozen, "best_iteration": the best config's iteration then,
    #: and (rules by evidence) "cycle": the cycle that froze it}
    frozen: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    guidance: str = ""
    #: (rules by evidence) name -> the iteration it was last unfrozen at: its evidence for a new
    #: freeze counts from there
    released: Mapping[str, int] = field(default_factory=dict)
    #: (rules >= 7) the parameters the evidence says are under-explored (``under_explored``):
    #: the offline proposer moves one of them in a share of its proposals
    explore: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> SearchState:
        if not Path(path).exists():
            return cls()
        data = json.loads(Path(path).read_text())
        return cls(cycle=int(data.get("cycle", 0)), frozen=dict(data.get("frozen", {})),
                   guidance=str(data.get("guidance", "")),
                   released={str(k): int(v) for k, v in dict(data.get("released", {})).items()},
                   explore=tuple(str(n) for n in data.get("explore", ())))

    def dump(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"cycle": self.cycle, "frozen": dict(self.frozen),
                                "guidance": self.guidance}
        if self.released:  # only runs with rules by evidence have it
            data["released"] = dict(self.released)
        if self.explore:  # only runs with rules >= 7 have it
            data["explore"] = list(self.explore)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Decision:
    cycle: int
    freeze: tuple[str, ...]
    unfreeze: tuple[str, ...]
    guidance: str
    source: str  # "rules" or "llm"
    note: str = ""
    #: decided by the rules by evidence (rules >= 3): the state keeps when each was unfrozen
    evidence: bool = False
    #: (rules >= 7) the under-explored parameters the offline proposer is pointed at
    explore: tuple[str, ...] = ()

    def apply(self, state: SearchState, iteration: int, best_iteration: int) -> SearchState:
        frozen = {k: v for k, v in state.frozen.items() if k not in self.unfreeze}
        for name in self.freeze:
            frozen[name] = {"iteration": iteration, "best_iteration": best_iteration}
            if self.evidence:
                frozen[name]["cycle"] = self.cycle
        released = {k: v for k, v in state.released.items() if k not in frozen}
        if self.evidence:
            released.update({name: iteration for name in self.unfreeze})
        return SearchState(cycle=self.cycle, frozen=frozen, guidance=self.guidance,
                           released=released, explore=self.explore)


#: a parameter whose effect is below this share of the largest one does not matter (by evidence)
INERT_SHARE = 0.1
#: cycles a parameter stays frozen at most before it returns (by evidence)
MAX_FROZEN_CYCLES = 2
#: (rules >= 7) the iterations whose repeats make a parameter ``looping``
LOOP_WINDOW = 10


@dataclass(frozen=True)
class ParamStats:
    tried: int
    kept: int
    best_delta: float | None  # most negative (min) / positive (max) delta of its trials
    #: median |metric - best before| of its measured trials: how far changing it moves the metric
    effect: float | None = None
    measured: int = 0


def param_stats(records: Sequence[Mapping[str, Any]], direction: str,
                since: Mapping[str, int] | None = None) -> dict[str, ParamStats]:
    """Per parameter, what its trials say; with ``since`` (name -> iteration) a parameter's
    trials up to that iteration are not counted (the rules by evidence: since it was unfrozen)."""
    since = since or {}
    tried: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    best: dict[str, float] = {}
    moves: dict[str, list[float]] = {}
    sign = 1.0 if direction == "min" else -1.0
    for rec in records:
        if rec.get("kind", "trial") != TrialKind.TRIAL or rec.get("status") == TrialState.INTERRUPTED:
            continue
        for name in rec.get("changes") or {}:
            if int(rec.get("iteration", 0)) <= since.get(name, -1):
                continue
            tried[name] += 1
            if rec.get("status") == TrialState.KEEP:
                kept[name] += 1
            delta = rec.get("delta")
            if isinstance(delta, (int, float)) and delta == delta:
                moves.setdefault(name, []).append(abs(float(delta)))
                if name not in best or sign * delta < sign * best[name]:
                    best[name] = float(delta)
    return {n: ParamStats(tried[n], kept[n], best.get(n),
                          statistics.median(moves[n]) if n in moves else None,
                          len(moves.get(n, ())))
            for n in tried}


def rules(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
          best_iteration: int, direction: str, k: int = 3, min_active: int = 2,
          evidence: bool = False, explore: bool = False, loops: bool = False) -> Decision:
    """The offline Level 1.5 decision (also the validator of an LLM's decision): by counts, or
    with ``evidence`` (runs with rules >= 3) by what the trials say, repeats included with
    ``loops`` (rules >= 7; see the module); with ``explore`` (rules >= 7) its guidance names
    only the parameters ``under_explored`` finds, and the decision carries them for the
    offline proposer."""
    if evidence:
        decision = _by_evidence(records, state, active, best_iteration, direction, k, min_active,
                                loops)
        if explore:
            return with_explore(decision, records, state, active, direction, k)
        return decision
    stats = param_stats(records, direction)
    unfreeze = tuple(sorted(n for n, info in state.frozen.items()
                            if info.get("best_iteration", 0) != best_iteration))
    still_frozen = set(state.frozen) - set(unfreeze)
    candidates = [n for n in active if n not in still_frozen
                  and stats.get(n, ParamStats(0, 0, None)).tried >= k
                  and stats[n].kept == 0]
    room = max(0, len([n for n in active if n not in still_frozen]) - min_active)
    # freeze the most-tried hopeless ones first
    candidates.sort(key=lambda n: (-stats[n].tried, n))
    freeze = tuple(sorted(candidates[:room]))
    remaining = [n for n in active if n not in still_frozen and n not in freeze]
    return Decision(cycle=state.cycle + 1, freeze=freeze, unfreeze=unfreeze,
                    guidance=_guidance(remaining, stats), source="rules")


def _guidance(remaining: Sequence[str], stats: Mapping[str, ParamStats],
              effects: Sequence[str] = (), under: Sequence[str] | None = None) -> str:
    """The guidance text; ``under`` (rules >= 7) replaces "every remaining parameter, least tried
    first" by the names the evidence gives."""
    if under is None:
        under = sorted(remaining, key=lambda n: (stats.get(n, ParamStats(0, 0, None)).tried, n))
    guidance = ""
    if under:
        guidance = ("Under-explored so far: " + ", ".join(under[:4]) +
                    ". Prefer changes to these; bold moves (2x, 0.5x) are fine.")
    promising = [n for n in remaining if stats.get(n) and stats[n].kept]
    if promising:
        guidance += " Changes to " + ", ".join(sorted(promising)[:3]) + " helped before."
    if effects:
        guidance += " Largest effect on the metric so far: " + ", ".join(effects[:3]) + "."
    return guidance.strip()


def due_unfreeze(state: SearchState, best_iteration: int) -> tuple[str, ...]:
    """(By evidence) the frozen parameters that return this cycle: the best moved since they
    were frozen, or they were frozen ``MAX_FROZEN_CYCLES`` cycles ago (or more)."""
    cycle = state.cycle + 1
    return tuple(sorted(
        n for n, info in state.frozen.items()
        if info.get("best_iteration", 0) != best_iteration
        or cycle - int(info.get("cycle", state.cycle)) >= MAX_FROZEN_CYCLES))


def inert(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
          direction: str, k: int, exclude: Sequence[str] = ()) -> list[str]:
    """(By evidence) the active parameters the trials say do not matter, least effect first: at
    least ``k`` measured trials since they were last unfrozen, no keep among them, and an
    effect below ``INERT_SHARE`` of the largest effect measured on as much evidence."""
    stats = param_stats(records, direction, since=state.released)
    known = {n: s for n, s in stats.items() if s.measured >= k and s.effect is not None}
    if len(known) < 2:
        return []  # a tiny sample says nothing about what matters
    scale = max(s.effect for s in known.values())
    if scale <= 0:
        return []
    out = [n for n in active if n in known and n not in exclude and n not in state.frozen
           and negligible_keeps(stats[n], scale, direction)
           and known[n].effect < INERT_SHARE * scale]
    return sorted(out, key=lambda n: (known[n].effect, n))


def looping(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
            k: int, exclude: Sequence[str] = ()) -> dict[str, int]:
    """(Rules >= 7) the active parameters proposed again and again for nothing: name -> the
    trials of the last ``LOOP_WINDOW`` iterations (since it was last unfrozen) that changed it and
    ran a configuration already measured, at least ``k`` of them and no keep among its trials
    there; the most repeated first."""
    trials = [r for r in records if r.get("kind", TrialKind.TRIAL) == TrialKind.TRIAL
              and r.get("status") != TrialState.INTERRUPTED]
    if not trials:
        return {}
    start = max(int(r.get("iteration", 0)) for r in trials) - LOOP_WINDOW
    again = {id(r) for r in repeated(records)}
    counts: Counter[str] = Counter()
    kept: set[str] = set()
    for rec in trials:
        i = int(rec.get("iteration", 0))
        for name in rec.get("changes") or {}:
            if i <= max(start, state.released.get(name, -1)):
                continue
            if rec.get("status") == TrialState.KEEP:
                kept.add(name)
            if id(rec) in again:
                counts[name] += 1
    out = {n: c for n, c in counts.items() if c >= k and n not in kept and n in active
           and n not in state.frozen and n not in exclude}
    return dict(sorted(out.items(), key=lambda item: (-item[1], item[0])))


def negligible_keeps(stats: ParamStats, scale: float, direction: str) -> bool:
    """No keep, or none that moved the best by ``INERT_SHARE`` of the largest effect: on a
    target without noise every strictly better metric is kept, and a knob that barely matters
    collects such keeps without mattering."""
    if stats.kept == 0:
        return True
    gain = stats.best_delta if stats.best_delta is not None else 0.0
    gain = -gain if direction == "min" else gain
    return gain < INERT_SHARE * scale


def _by_evidence(records: Sequence[Mapping[str, Any]], state: SearchState,
                 active: Sequence[str], best_iteration: int, direction: str, k: int,
                 min_active: int, loops: bool = False) -> Decision:
    unfreeze = due_unfreeze(state, best_iteration)
    still_frozen = set(state.frozen) - set(unfreeze)
    # one unfrozen now is not frozen again now (its evidence counts from here on)
    candidates = inert(records, state, active, direction, k, exclude=unfreeze)
    if loops:  # the parameters wasting trials first
        candidates = list(dict.fromkeys([*looping(records, state, active, k, unfreeze),
                                         *candidates]))
    room = max(0, len([n for n in active if n not in still_frozen]) - min_active)
    freeze = tuple(sorted(candidates[:room]))
    remaining = [n for n in active if n not in still_frozen and n not in freeze]
    stats = param_stats(records, direction)
    ranked = sorted((n for n in remaining if stats.get(n) and stats[n].effect),
                    key=lambda n: (-stats[n].effect, n))
    return Decision(cycle=state.cycle + 1, freeze=freeze, unfreeze=unfreeze,
                    guidance=_guidance(remaining, stats, ranked), source="rules", evidence=True)


#: (rules >= 7) at most this many parameters are named under-explored in a cycle
MAX_EXPLORE = 3


def under_explored(records: Sequence[Mapping[str, Any]], remaining: Sequence[str],
                   direction: str, k: int) -> tuple[str, ...]:
    """(Rules >= 7) the few parameters, of ``remaining``, that the evidence says are
    under-explored, at most ``MAX_EXPLORE``: those whose changes were kept for a real gain
    (``negligible_keeps`` says which gains are not) but that were measured fewer times than
    the median parameter, least measured first. A large effect alone does not name a
    parameter: the effect is ``|metric - best|``, and a sensitive one whose moves all lose has
    the largest. Nothing is named before ``k`` parameters were measured, and often nothing
    after, so the guidance no longer lists every parameter."""
    stats = param_stats(records, direction)
    known = {n: stats[n] for n in remaining
             if n in stats and stats[n].measured and stats[n].effect is not None}
    if len(known) < max(k, 2):
        return ()
    scale = max(st.effect for st in known.values())
    mid_count = statistics.median(st.measured for st in known.values())
    under = [n for n, st in known.items() if st.kept and st.measured < mid_count
             and not negligible_keeps(st, scale, direction)]
    return tuple(sorted(under, key=lambda n: (known[n].measured, n))[:MAX_EXPLORE])


def with_explore(decision: Decision, records: Sequence[Mapping[str, Any]], state: SearchState,
                 active: Sequence[str], direction: str, k: int) -> Decision:
    """(Rules >= 7) ``decision`` with the under-explored parameters named in its guidance and
    carried for the offline proposer (``Decision.explore``)."""
    still = (set(state.frozen) - set(decision.unfreeze)) | set(decision.freeze)
    remaining = [n for n in active if n not in still]
    explore = under_explored(records, remaining, direction, k)
    stats = param_stats(records, direction)
    ranked = sorted((n for n in remaining if stats.get(n) and stats[n].effect),
                    key=lambda n: (-stats[n].effect, n))
    guidance = _guidance(remaining, stats, ranked, under=explore)
    return replace(decision, guidance=guidance, explore=explore)


def evidence_lines(records: Sequence[Mapping[str, Any]], state: SearchState,
                   decision: Decision, best_iteration: int, direction: str,
                   by_evidence: bool, loops: bool = False, k: int = 3) -> list[str]:
    """Per parameter frozen or unfrozen by ``decision`` (taken from ``state``), what decided
    it: its repeats (``loops``), its trials, keeps and effect against the largest (by
    evidence), its tries and keeps (by counts); for a return, the best's move or the cycles it
    was frozen."""
    lines = []
    if by_evidence:
        stats = param_stats(records, direction, since=state.released)
        known = {n: st for n, st in stats.items() if st.effect is not None}
        top = max(known, key=lambda n: (known[n].effect, n), default=None)
        loop = looping(records, state, list(decision.freeze), k) if loops else {}
        for name in decision.freeze:
            if name in loop:
                lines.append(f"freeze {name}: proposed again and again without gain: "
                             f"{loop[name]} trials changing it ran a configuration already "
                             f"measured in the last {LOOP_WINDOW} iterations, none kept")
                continue
            st = stats.get(name, ParamStats(0, 0, None))
            effect = "n/a" if st.effect is None else f"{st.effect:.4g}"
            largest = f" (the largest: {known[top].effect:.4g}, {top})" if top else ""
            lines.append(f"freeze {name}: {st.measured} measured trials since it was last "
                         f"unfrozen, {st.kept} kept; effect {effect} < {INERT_SHARE:g} x the "
                         f"largest effect{largest}")
    else:
        stats = param_stats(records, direction)
        for name in decision.freeze:
            st = stats.get(name, ParamStats(0, 0, None))
            lines.append(f"freeze {name}: tried {st.tried} times, kept {st.kept}")
    for name in decision.unfreeze:
        info = state.frozen.get(name, {})
        then = int(info.get("best_iteration", 0))
        if then != best_iteration:
            lines.append(f"unfreeze {name}: the best moved since it was frozen (iteration "
                         f"{then} then, {best_iteration} now)")
        else:
            lines.append(f"unfreeze {name}: frozen since cycle {info.get('cycle', '?')}, "
                         f"{MAX_FROZEN_CYCLES} cycles at most")
    return lines


def llm_messages(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
                 direction: str, metric: str, evidence: bool = False,
                 loops: bool = False, k: int = 3) -> list[dict[str, str]]:
    stats = param_stats(records, direction)
    lines = [f"Search trace summary ({metric}, {'lower' if direction == 'min' else 'higher'} "
             "is better). Per parameter: times tried, times kept, best delta"
             + (", effect (median |change of the metric| when it was changed)." if evidence
                else ".")]
    for name in active:
        s = stats.get(name, ParamStats(0, 0, None))
        line = (f"- {name}: tried {s.tried}, kept {s.kept}, best delta "
                f"{'n/a' if s.best_delta is None else f'{s.best_delta:+.4g}'}")
        if evidence:
            line += f", effect {'n/a' if s.effect is None else f'{s.effect:.4g}'}"
        lines.append(line)
    lines.append("Currently frozen: " + (", ".join(sorted(state.frozen)) or "none"))
    recent = [r for r in records if r.get("kind", "trial") == TrialKind.TRIAL][-10:]
    lines.append("Recent trials: " + "; ".join(
        f"#{r['iteration']} {r.get('changes')} {r.get('status')}" for r in recent))
    loop = looping(records, state, active, k) if loops else {}
    if loop:
        lines.append("Proposed again and again without gain (trials that re-ran a measured "
                     "configuration): " + ", ".join(f"{n} ({c})" for n, c in loop.items()))
    if evidence:
        lines.append("Only parameters whose effect is small next to the others' may be frozen"
                     + (", or those proposed again and again without gain" if loops else "")
                     + "; a frozen one returns after a few cycles or when the best moves.")
    lines.append('Answer with one JSON object: {"freeze": [names tried often with no gain], '
                 '"unfreeze": [frozen names worth another look], "guidance": "one or two '
                 'sentences steering the next proposals"}.')
    return [{"role": "system", "content": "You steer a hyperparameter search. Be concise."},
            {"role": "user", "content": "\n".join(lines)}]


def from_llm(text: str, records: Sequence[Mapping[str, Any]], state: SearchState,
             active: Sequence[str], best_iteration: int, direction: str, k: int,
             min_active: int, evidence: bool = False, loops: bool = False) -> Decision:
    """Validate an LLM's answer against the rules' limits; fall back to the rules if unusable.
    With ``evidence`` the same rules bound it: it may freeze only what the evidence says does
    not matter (``inert``) or, with ``loops``, what it keeps proposing for nothing
    (``looping``), never one unfrozen in this cycle, and what is due to return
    (``due_unfreeze``) returns whatever it says."""
    fallback = rules(records, state, active, best_iteration, direction, k, min_active, evidence,
                     loops)
    try:
        obj = extract_json_object(text)
        freeze = [str(n) for n in obj.get("freeze", []) or []]
        unfreeze = [str(n) for n in obj.get("unfreeze", []) or []]
        guidance = str(obj.get("guidance", "")).strip()
    except (ValueError, AttributeError, TypeError) as exc:
        return Decision(**{**fallback.__dict__, "note": f"LLM answer unusable ({exc}); rules used"})
    unfreeze = sorted(n for n in unfreeze if n in state.frozen)
    notes = []
    if evidence:
        unfreeze = sorted(set(unfreeze) | set(due_unfreeze(state, best_iteration)))
        allowed = set(inert(records, state, active, direction, k, exclude=unfreeze))
        if loops:
            allowed |= set(looping(records, state, active, k, unfreeze))
        refused = [n for n in dict.fromkeys(freeze) if n not in allowed and n in active
                   and n not in state.frozen]
        if refused:
            notes.append(f"not frozen (the evidence says they matter, or too few trials, or "
                         f"just unfrozen): {', '.join(refused)}")
        freeze = [n for n in freeze if n in allowed]
    still = set(state.frozen) - set(unfreeze)
    free = [n for n in active if n not in still]
    freeze = sorted(n for n in dict.fromkeys(freeze) if n in free)
    if len(free) - len(freeze) < min_active:
        keep_n = max(0, len(free) - min_active)
        notes.append(f"froze only {keep_n} of {len(freeze)} to keep {min_active} active")
        freeze = freeze[:keep_n]
    return Decision(cycle=state.cycle + 1, freeze=tuple(freeze), unfreeze=tuple(unfreeze),
                    guidance=guidance or fallback.guidance, source="llm", note="; ".join(notes),
                    evidence=evidence)
