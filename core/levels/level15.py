"""Level 1.5: every K iterations, adjust what the inner loop searches (not how).

From the trace: freeze parameters tried at least ``k`` times with no gain, unfreeze frozen ones
once the search has moved (a keep since they were frozen), and write guidance that points the
next proposals at under-explored parameters. Never freeze so much that fewer than
``min_active`` parameters remain. With an LLM, one call proposes the same three things as JSON
and the rules above validate it; without one (or when its answer is unusable) the rules decide.

The state lives in ``runner/search_state.json`` on the branch, so each cycle is a commit and a
resumed or replayed run starts from exactly the state it had.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.llm.jsonextract import extract_json_object
from arx.core.states import TrialKind, TrialState


@dataclass(frozen=True)
class SearchState:
    """What Level 1.5 decided last: frozen parameters (with when) and the guidance text."""

    cycle: int = 0
    #: name -> {"iteration": when frozen, "best_iteration": the best config's iteration then}
    frozen: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    guidance: str = ""

    @classmethod
    def load(cls, path: Path) -> SearchState:
        if not Path(path).exists():
            return cls()
        data = json.loads(Path(path).read_text())
        return cls(cycle=int(data.get("cycle", 0)), frozen=dict(data.get("frozen", {})),
                   guidance=str(data.get("guidance", "")))

    def dump(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        data = {"cycle": self.cycle, "frozen": dict(self.frozen), "guidance": self.guidance}
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Decision:
    cycle: int
    freeze: tuple[str, ...]
    unfreeze: tuple[str, ...]
    guidance: str
    source: str  # "rules" or "llm"
    note: str = ""

    def apply(self, state: SearchState, iteration: int, best_iteration: int) -> SearchState:
        frozen = {k: v for k, v in state.frozen.items() if k not in self.unfreeze}
        for name in self.freeze:
            frozen[name] = {"iteration": iteration, "best_iteration": best_iteration}
        return SearchState(cycle=self.cycle, frozen=frozen, guidance=self.guidance)


@dataclass(frozen=True)
class ParamStats:
    tried: int
    kept: int
    best_delta: float | None  # most negative (min) / positive (max) delta of its trials


def param_stats(records: Sequence[Mapping[str, Any]], direction: str) -> dict[str, ParamStats]:
    tried: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    best: dict[str, float] = {}
    sign = 1.0 if direction == "min" else -1.0
    for rec in records:
        if rec.get("kind", "trial") != TrialKind.TRIAL or rec.get("status") == TrialState.INTERRUPTED:
            continue
        for name in rec.get("changes") or {}:
            tried[name] += 1
            if rec.get("status") == TrialState.KEEP:
                kept[name] += 1
            delta = rec.get("delta")
            if isinstance(delta, (int, float)) and (
                    name not in best or sign * delta < sign * best[name]):
                best[name] = float(delta)
    return {n: ParamStats(tried[n], kept[n], best.get(n)) for n in tried}


def rules(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
          best_iteration: int, direction: str, k: int = 3, min_active: int = 2) -> Decision:
    """The offline Level 1.5 decision (also the validator of an LLM's decision)."""
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
    under = sorted(remaining, key=lambda n: (stats.get(n, ParamStats(0, 0, None)).tried, n))
    guidance = ""
    if under:
        guidance = ("Under-explored so far: " + ", ".join(under[:4]) +
                    ". Prefer changes to these; bold moves (2x, 0.5x) are fine.")
    promising = [n for n in remaining if stats.get(n) and stats[n].kept]
    if promising:
        guidance += " Changes to " + ", ".join(sorted(promising)[:3]) + " helped before."
    return Decision(cycle=state.cycle + 1, freeze=freeze, unfreeze=unfreeze,
                    guidance=guidance.strip(), source="rules")


def llm_messages(records: Sequence[Mapping[str, Any]], state: SearchState, active: Sequence[str],
                 direction: str, metric: str) -> list[dict[str, str]]:
    stats = param_stats(records, direction)
    lines = [f"Search trace summary ({metric}, {'lower' if direction == 'min' else 'higher'} "
             "is better). Per parameter: times tried, times kept, best delta."]
    for name in active:
        s = stats.get(name, ParamStats(0, 0, None))
        lines.append(f"- {name}: tried {s.tried}, kept {s.kept}, best delta "
                     f"{'n/a' if s.best_delta is None else f'{s.best_delta:+.4g}'}")
    lines.append("Currently frozen: " + (", ".join(sorted(state.frozen)) or "none"))
    recent = [r for r in records if r.get("kind", "trial") == TrialKind.TRIAL][-10:]
    lines.append("Recent trials: " + "; ".join(
        f"#{r['iteration']} {r.get('changes')} {r.get('status')}" for r in recent))
    lines.append('Answer with one JSON object: {"freeze": [names tried often with no gain], '
                 '"unfreeze": [frozen names worth another look], "guidance": "one or two '
                 'sentences steering the next proposals"}.')
    return [{"role": "system", "content": "You steer a hyperparameter search. Be concise."},
            {"role": "user", "content": "\n".join(lines)}]


def from_llm(text: str, records: Sequence[Mapping[str, Any]], state: SearchState,
             active: Sequence[str], best_iteration: int, direction: str, k: int,
             min_active: int) -> Decision:
    """Validate an LLM's answer against the rules' limits; fall back to the rules if unusable."""
    fallback = rules(records, state, active, best_iteration, direction, k, min_active)
    try:
        obj = extract_json_object(text)
        freeze = [str(n) for n in obj.get("freeze", []) or []]
        unfreeze = [str(n) for n in obj.get("unfreeze", []) or []]
        guidance = str(obj.get("guidance", "")).strip()
    except (ValueError, AttributeError, TypeError) as exc:
        return Decision(**{**fallback.__dict__, "note": f"LLM answer unusable ({exc}); rules used"})
    unfreeze = sorted(n for n in unfreeze if n in state.frozen)
    still = set(state.frozen) - set(unfreeze)
    free = [n for n in active if n not in still]
    freeze = sorted(n for n in dict.fromkeys(freeze) if n in free)
    dropped = ""
    if len(free) - len(freeze) < min_active:
        keep_n = max(0, len(free) - min_active)
        dropped = f"; froze only {keep_n} of {len(freeze)} to keep {min_active} active"
        freeze = freeze[:keep_n]
    return Decision(cycle=state.cycle + 1, freeze=tuple(freeze), unfreeze=tuple(unfreeze),
                    guidance=guidance or fallback.guidance, source="llm", note=dropped.lstrip("; "))
