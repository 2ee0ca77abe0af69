"""Where a mechanism stands, derived from a run's level2 events (and, without them, its commits)."""

from __future__ import annotations

from arx.core.levels.mechanism_state import (
    active_mechanisms,
    attempt_state,
    events_from_commits,
    level2_note,
    mechanism_records,
)
from arx.core.repo.gittext import CommitRecord
from arx.core.states import MechanismState, Verdict


def note(name, verdict, iteration=5, **extra):
    return {"event": "level2", **level2_note("r", 1, iteration, name, "d", "catalog", verdict, "",
                                             **extra)}


def states(events):
    return {m.name: m.state for m in mechanism_records(events)}


def test_pass_activates_and_a_gate_failure_or_a_bad_patch_is_refused():
    events = [note("A", Verdict.PASS, commit="a1"), note("B", Verdict.FAIL, commit="b1"),
              note("C", Verdict.REFUSED)]
    assert states(events) == {"A": MechanismState.ACTIVE, "B": MechanismState.REFUSED,
                              "C": MechanismState.REFUSED}
    assert [attempt_state(e) for e in events] == [
        MechanismState.ACTIVE, MechanismState.REFUSED, MechanismState.REFUSED]


def test_a_failed_second_attempt_under_the_same_name_leaves_the_first_active():
    events = [note("A", Verdict.PASS, iteration=5, commit="a1"),
              note("A", Verdict.REFUSED, iteration=10),
              note("A", Verdict.FAIL, iteration=15, commit="a2")]
    (record,) = mechanism_records(events)
    assert record.state is MechanismState.ACTIVE
    assert record.commit == "a1" and record.iteration == 5  # the activation, not the attempt


def test_a_runtime_revert_deactivates_and_blame_order_is_activation_order():
    events = [note("B", Verdict.REFUSED, iteration=2), note("A", Verdict.PASS, commit="a1"),
              note("B", Verdict.PASS, iteration=8, commit="b1"),
              note("A", Verdict.RUNTIME_REVERT, iteration=9, commit="a1", reverted=True)]
    assert states(events) == {"A": MechanismState.REVERTED, "B": MechanismState.ACTIVE}
    events.append(note("C", Verdict.PASS, iteration=9, commit="c1"))
    assert [m.name for m in active_mechanisms(events)] == ["B", "C"]


def test_events_without_a_verdict_are_read_by_their_gate_line():
    events = [{"event": "level2", "mechanism": "T", "gate": "pass", "reverted": False},
              {"event": "level2", "mechanism": "G", "gate": "fail: no sklearn", "reverted": True},
              {"event": "level2", "mechanism": "T", "gate": "pass", "reverted": True}]
    assert states(events) == {"T": MechanismState.REVERTED, "G": MechanismState.REFUSED}


def test_commits_stand_in_for_a_trace_without_events():
    commits = [
        CommitRecord("m1", "L2 mechanism Tabu", "", {
            "Arx-Run": "r", "Arx-Level": "2", "Arx-Mechanism": "Tabu", "Arx-Gate": "pass",
            "Arx-Iteration": "4"}),
        CommitRecord("m2", "L2 mechanism Bad", "", {
            "Arx-Run": "r", "Arx-Level": "2", "Arx-Mechanism": "Bad",
            "Arx-Gate": "fail: ruff F821", "Arx-Iteration": "6"}),
        CommitRecord("r2", "Revert L2 mechanism Bad: gate failed", "ruff said no", {
            "Arx-Run": "r", "Arx-Level": "2", "Arx-Mechanism": "Bad",
            "Arx-Gate": "fail: ruff F821", "Arx-Reverts": "m2"}),
        CommitRecord("r1", "Revert L2 mechanism Tabu: observe failed at run time", "boom", {
            "Arx-Run": "r", "Arx-Level": "2", "Arx-Mechanism": "Tabu",
            "Arx-Gate": "runtime: boom", "Arx-Reverts": "m1"}),
        CommitRecord("m3", "L2 mechanism Known", "", {
            "Arx-Run": "r", "Arx-Level": "2", "Arx-Mechanism": "Known", "Arx-Gate": "pass"}),
    ]
    events = events_from_commits(commits, known={"Known"})
    assert [(e["mechanism"], attempt_state(e)) for e in events] == [
        ("Tabu", MechanismState.ACTIVE), ("Bad", MechanismState.REFUSED),
        ("Tabu", MechanismState.REVERTED)]
    assert states(events) == {"Tabu": MechanismState.REVERTED, "Bad": MechanismState.REFUSED}
