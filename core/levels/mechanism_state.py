"""Where each Level-2 mechanism of a run stands: the one place that says "active".

Every Level-2 attempt (LLM, catalog, repair or `arx mechanism add`) writes one ``level2`` event to
the run's trace (``note``); a mechanism's state is derived from those events, oldest first (a
branch whose trace lacks them is read from its commits by ``events_from_commits``):

- ``pass`` makes it **active**;
- ``runtime_revert`` and ``no_benefit`` (the outcome gate, ``outcome.py``), and any event marked
  ``reverted`` after it was active, make it **reverted**;
- ``kept`` (the outcome gate found it helped) leaves it **active**;
- any other attempt (``fail``: committed then reverted by the gate; ``refused``: never written)
  leaves an active mechanism of the same name active and otherwise makes it **refused**.

The engine (which mechanism to blame for a fault), `arx status`, `arx mechanism list` and
`arx report` all read states from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arx.core.repo.commits import Commit, Trailer, is_revert, outcome_of, trailer_int
from arx.core.states import Event, MechanismState, Verdict


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


def verdict_of(event: Mapping[str, Any]) -> Verdict | None:
    """The attempt's verdict; events without one (``gate`` as a line, ``reverted`` a flag; the
    form of commit-derived events too) are read by their gate line."""
    if event.get("verdict") is not None:
        try:
            return Verdict(event["verdict"])
        except ValueError:
            return None
    gate = event.get("gate")
    line = gate if isinstance(gate, str) else "pass"
    if not line.startswith("pass"):
        return Verdict.FAIL
    return Verdict.RUNTIME_REVERT if event.get("reverted") else Verdict.PASS


def attempt_state(event: Mapping[str, Any]) -> MechanismState:
    """What one attempt did to its mechanism: activated, reverted it, or was refused."""
    verdict = verdict_of(event)
    return (MechanismState.ACTIVE if verdict in (Verdict.PASS, Verdict.KEPT) else
            MechanismState.REVERTED if verdict in (Verdict.RUNTIME_REVERT, Verdict.NO_BENEFIT)
            else MechanismState.REFUSED)


def events_from_commits(commits: Iterable[Commit], known: Iterable[str] = ()) -> list[dict]:
    """``level2`` events read from a branch's commits (oldest first), for mechanisms the trace
    does not name (``known``): a mechanism commit is an attempt whose gate line is its
    ``Arx-Gate``; the revert of an active one is a run-time revert; the gate's own revert of a
    refused one adds nothing."""
    commits = list(commits)
    known = set(known)
    by_sha = {c.sha: c for c in commits}
    events: list[dict] = []
    activated: dict[str, dict] = {}  # sha of the mechanism's commit -> its event
    at = 0  # iteration of the latest commit that names one (reverts do not)
    for c in commits:
        t = c.trailers
        at = trailer_int(c, Trailer.ITERATION) or at
        undone = by_sha.get(t.get(Trailer.REVERTS, ""))
        name = t.get(Trailer.MECHANISM) or (undone.trailers.get(Trailer.MECHANISM)
                                            if undone else None)
        if not name or name in known:
            continue
        gate = t.get(Trailer.GATE) or "pass"
        reason = c.body.strip().splitlines()[0] if c.body.strip() else ""
        judged = outcome_of(c)
        if judged is not None:  # the outcome gate: kept, or reverted for no measured benefit
            events.append({"event": Event.LEVEL2.value, "mechanism": name, "iteration": at,
                           "verdict": judged.value, "reverted": judged is Verdict.NO_BENEFIT,
                           "reason": t.get(Trailer.OUTCOME, ""), "source": "commit",
                           "revert": c.sha if undone else None,
                           "commit": undone.sha if undone else None})
        elif undone is None and not is_revert(c):
            event = {"event": Event.LEVEL2.value, "mechanism": name, "iteration": at, "gate": gate,
                     "reason": "", "source": "commit", "commit": c.sha}
            activated[c.sha] = event
            events.append(event)
        elif undone is not None and undone.sha in activated and not gate.startswith("pass") \
                and not gate.startswith("runtime"):
            activated[undone.sha].update(gate=gate, reason=reason)  # the gate's own revert
        else:
            events.append({"event": Event.LEVEL2.value, "mechanism": name, "iteration": at,
                           "verdict": Verdict.RUNTIME_REVERT.value, "gate": gate,
                           "reverted": True, "reason": reason,
                           "source": "commit", "revert": c.sha,
                           "commit": undone.sha if undone else None})
    return events


def mechanism_records(events: Iterable[Mapping[str, Any]]) -> list[MechanismRecord]:
    """Every mechanism named by the ``level2`` events in ``events``, in order of first mention."""
    out: dict[str, MechanismRecord] = {}
    for position, e in enumerate(e for e in events if e.get("event", Event.LEVEL2) == Event.LEVEL2):
        name = str(e.get("mechanism") or "?")
        prev = out.get(name)
        verdict = verdict_of(e)
        was_active = prev is not None and prev.active
        commit = prev.commit if prev is not None else None
        activated = prev.activated if prev is not None else -1
        if verdict is Verdict.PASS:
            state, commit, activated = MechanismState.ACTIVE, e.get("commit"), position
        elif was_active and (verdict in (Verdict.RUNTIME_REVERT, Verdict.NO_BENEFIT)
                             or e.get("reverted")
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
