"""Level 1.5: the rules on hand-made traces, the LLM answer's validation, and group B runs."""

from __future__ import annotations

import json

import git

from arx.core.levels.level15 import SearchState, from_llm, rules
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.llm_server import ok


def trial(i, changes, status="discard", delta=0.1):
    return {"iteration": i, "kind": "trial", "changes": changes, "status": status, "delta": delta}


TRACE = [
    trial(1, {"A": 1}), trial(2, {"A": 2}), trial(3, {"A": 3}),           # A: 3 tries, no gain
    trial(4, {"B": 1}, "keep", -0.2), trial(5, {"B": 2}), trial(6, {"B": 3}),  # B helped once
    trial(7, {"C": 1}),
]


def test_rules_freeze_hopeless_and_point_at_under_explored():
    d = rules(TRACE, SearchState(), ["A", "B", "C", "D"], best_iteration=4, direction="min")
    assert d.freeze == ("A",) and d.unfreeze == () and d.cycle == 1
    assert "D" in d.guidance.split(".")[0]  # never tried: first in line
    assert "B" in d.guidance  # it helped before


def test_rules_keep_a_minimum_active():
    d = rules(TRACE, SearchState(), ["A", "C"], best_iteration=4, direction="min", k=1,
              min_active=2)
    assert d.freeze == ()
    d = rules(TRACE, SearchState(), ["A", "C", "D"], best_iteration=4, direction="min", k=1,
              min_active=2)
    assert d.freeze == ("A",)  # the most tried goes first


def test_rules_unfreeze_once_the_search_moved():
    state = SearchState(cycle=1, frozen={"A": {"iteration": 5, "best_iteration": 4}})
    same = rules(TRACE, state, ["A", "B", "C"], best_iteration=4, direction="min")
    assert same.unfreeze == ()
    moved = rules(TRACE, state, ["A", "B", "C"], best_iteration=9, direction="min")
    assert moved.unfreeze == ("A",) and moved.cycle == 2


def test_llm_answer_is_validated_against_the_rules_limits():
    text = 'Here: {"freeze": ["A", "B", "C", "NOPE"], "unfreeze": ["Z"], "guidance": "Try D."}'
    d = from_llm(text, TRACE, SearchState(), ["A", "B", "C", "D"], 4, "min", k=3, min_active=2)
    assert d.source == "llm" and d.freeze == ("A", "B") and d.unfreeze == ()
    assert d.guidance == "Try D." and "keep 2 active" in d.note
    garbage = from_llm("no json here", TRACE, SearchState(), ["A", "B", "C", "D"], 4, "min", 3, 2)
    assert garbage.source == "rules" and "unusable" in garbage.note


def run_group_b(root, name, iterations, llm=None):
    ws = open_run(root, {"iterations": iterations, "group": "B", "k": 5}, name=name)
    engine = Engine(ws, OptunaProposer(seed=2), llm=llm)
    try:
        engine.run()
        engine.notes = engine.trace.notes("level15")
    finally:
        ws.close(remove_worktree=True)
    return engine


def test_group_b_commits_each_cycle_and_frozen_parameters_are_not_proposed(toy_repo):
    engine = run_group_b(toy_repo, "b", 16)
    log = GitRepo(toy_repo).log("arx/b")
    cycles = [c for c in reversed(log) if c.trailers.get("Arx-Level") == "1.5"]
    assert [c.trailers["Arx-Cycle"] for c in cycles] == ["1", "2", "3"]
    assert [c.trailers["Arx-Iteration"] for c in cycles] == ["5", "10", "15"]
    assert cycles[0].subject.startswith("L1.5 cycle 1: ")
    notes = engine.notes
    assert [n["cycle"] for n in notes] == [1, 2, 3]
    # after each cycle, no trial changes a parameter frozen by it
    for note in notes:
        frozen = set(note["frozen"])
        later = [r for r in engine.records if r.kind == "trial"
                 and note["iteration"] < r.iteration <= note["iteration"] + 5]
        assert all(not (set(r.changes) & frozen) for r in later)
    state = json.loads(git.Repo(toy_repo).git.show("arx/b:runner/search_state.json"))
    assert state["cycle"] == 3 and state["guidance"] == notes[-1]["guidance"]


def test_group_b_with_an_llm_records_the_exchange(toy_repo, llm_server):
    from arx.core.llm.client import ChatClient
    from arx.core.llm.settings import resolve_llm

    llm_server.script([ok('{"freeze": ["DEPTH"], "unfreeze": [], "guidance": "Look at LR."}')])
    ws_path = toy_repo / ".arx" / "worktrees" / "bl"
    settings = resolve_llm(llm_server.base_url, "test-model", env={})
    client = ChatClient(settings, ws_path / "runs" / "bl" / "llm", rel_root=ws_path)
    engine = run_group_b(toy_repo, "bl", 6, llm=client)
    note = engine.notes[0]
    assert note["source"] == "llm" and note["guidance"] == "Look at LR."
    # the rules by evidence bound it: five trials are too few to say DEPTH does not matter
    assert note["freeze"] == [] and "not frozen" in note["note"] and "DEPTH" in note["note"]
    repo = git.Repo(toy_repo)
    files = repo.git.ls_tree("-r", "--name-only", "arx/bl", "runs/bl/llm").split()
    assert len(files) == 1 and "l15-cycle1" in files[0]
    parsed = json.loads(repo.git.show(f"arx/bl:{files[0]}"))["parsed"]
    assert parsed["source"] == "llm" and parsed["evidence"] is True
