"""Where each Level-2 mechanism of a run stands: the one place that says "active".

Every Level-2 attempt (LLM, catalog, repair or `arx mechanism add`) writes one ``level2`` event to
the run's trace (``note``); a mechanism's state is derived from those events alone, oldest first:

- ``pass`` makes it **active**;
- ``runtime_revert`` (and any event marked ``reverted`` after it was active) makes it **reverted**;
- any other attempt (``fail``: committed then reverted by the gate; ``refused``: never written)
  leaves an active mechanism of the same name active and otherwise makes it **refused**.

The engine (which mechanism to blame for a fault), `arx status`, `arx mechanism list` and
`arx report` all read states from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arx.core.states import MechanismState, Verdict


def level2_note(run: str, cycle: int | None, iteration: int | None, mechanism: str,
                domain: str | None, source: str | None, verdict: Verdict, reason: str,
                **extra: Any) -> dict[str, Any]:
    """The trace event of one Level-2 attempt (its fields are public: see docs/trace.md)."""
    return {"run": run, "cycle": cycle, "iteration": iteration, "mechanism": mechanism,
            "domain": domain, "source": source, "verdict": verdict.value, "reason": reason,
            "reverted": verdict is Verdict.FAIL, **extra}


@dataclass(frozen=True)
class MechanismRecord:
    """One mechanism of a run: its latest state and the event that set it."""

    name: str
    state: MechanismState
    source: str | None
    domain: str | None
    cycle: int | None
    iteration: int | None
    commit: str | None  # the commit that activated it (None unless it was ever active)
    event: Mapping[str, Any]  # the event that set its state
    activated: int = -1  # position of its activation among the run's level2 events

    @property
    def active(self) -> bool:
        return self.state is MechanismState.ACTIVE


def _verdict(event: Mapping[str, Any]) -> Verdict | None:
    try:
        return Verdict(event.get("verdict"))
    except ValueError:
        return None


def mechanism_records(events: Iterable[Mapping[str, Any]]) -> list[MechanismRecord]:
    """Every mechanism named by the ``level2`` events in ``events``, in order of first mention."""
    out: dict[str, MechanismRecord] = {}
    for position, e in enumerate(e for e in events if e.get("event", "level2") == "level2"):
        name = str(e.get("mechanism") or "?")
        prev = out.get(name)
        verdict = _verdict(e)
        was_active = prev is not None and prev.active
        commit = prev.commit if prev is not None else None
        activated = prev.activated if prev is not None else -1
        if verdict is Verdict.PASS:
            state, commit, activated = MechanismState.ACTIVE, e.get("commit"), position
        elif was_active and (verdict is Verdict.RUNTIME_REVERT or e.get("reverted")
                             and e.get("commit") == commit):
            state = MechanismState.REVERTED
        elif was_active:
            state = MechanismState.ACTIVE  # a failed new attempt leaves the old one in place
        elif prev is not None and prev.state is MechanismState.REVERTED:
            state = MechanismState.REVERTED
        else:
            state = MechanismState.REFUSED
        kept = was_active and state is MechanismState.ACTIVE and verdict is not Verdict.PASS
        event = prev.event if kept and prev is not None else dict(e)
        out[name] = MechanismRecord(
            name=name, state=state, source=event.get("source"), domain=event.get("domain"),
            cycle=event.get("cycle"), iteration=event.get("iteration"), commit=commit,
            event=event, activated=activated)
    return list(out.values())


def active_mechanisms(events: Iterable[Mapping[str, Any]]) -> list[MechanismRecord]:
    """The active mechanisms, oldest activation first."""
    return sorted((m for m in mechanism_records(events) if m.active), key=lambda m: m.activated)
