"""Level 1.5 by evidence (rules >= 3, issue #16 defect 1): what the trials say about each
parameter decides what is frozen, a frozen parameter returns, and one unfrozen in a cycle is not
frozen again in that cycle. The rules by counts stay for older runs (test_level15.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import git

from arx.core.levels.level15 import (
    MAX_FROZEN_CYCLES,
    SearchState,
    evidence_lines,
    from_llm,
    param_stats,
    rules,
)
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.commits import level15_message
from arx.core.repo.workspace import open_run

from support.repos import TOY, edit_toml, make_script_repo


def trial(i, changes, delta, status="discard"):
    return {"iteration": i, "kind": "trial", "changes": changes, "status": status, "delta": delta}


# LR moves the metric a lot (every move loses: the best already has a good LR); BIAS barely
# moves it; DEPTH once helped.
TRACE = [
    trial(1, {"LR": 0.1}, 0.9), trial(2, {"BIAS": False}, 0.004), trial(3, {"LR": 1e-5}, 1.2),
    trial(4, {"BIAS": False}, -0.002, "discard"), trial(5, {"LR": 0.05}, 0.4),
    trial(6, {"BIAS": True}, 0.003), trial(7, {"DEPTH": 2}, -0.3, "keep"),
]
ACTIVE = ["LR", "BIAS", "DEPTH", "WD"]


def test_the_sensitive_parameter_stays_and_the_inert_one_is_frozen():
    stats = param_stats(TRACE, "min")
    assert stats["LR"].effect == 0.9 and stats["BIAS"].effect == 0.003
    by_counts = rules(TRACE, SearchState(), ACTIVE, best_iteration=7, direction="min")
    assert "LR" in by_counts.freeze  # the old rule: 3 tries, no keep
    d = rules(TRACE, SearchState(), ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert d.freeze == ("BIAS",) and d.evidence
    assert "Largest effect on the metric so far: LR" in d.guidance


def test_a_knob_whose_keeps_are_tiny_is_frozen_one_with_a_real_keep_is_not():
    """On a target without noise every strictly better metric is kept: BIAS collects a keep
    worth 0.002 beside LR's effect of 0.9, and is still frozen; a keep worth 0.2 is real."""
    trace = [*TRACE, trial(8, {"BIAS": True}, -0.002, "keep")]
    d = rules(trace, SearchState(), ACTIVE, best_iteration=8, direction="min", evidence=True)
    assert d.freeze == ("BIAS",)
    big = [*TRACE, trial(8, {"BIAS": True}, -0.2, "keep")]
    d = rules(big, SearchState(), ACTIVE, best_iteration=8, direction="min", evidence=True)
    assert d.freeze == ()


def test_a_tiny_sample_freezes_nothing():
    few = TRACE[:4]  # only LR has two measured trials; BIAS two: less than k = 3
    d = rules(few, SearchState(), ACTIVE, best_iteration=0, direction="min", evidence=True)
    assert d.freeze == ()
    only_one = [trial(i, {"BIAS": i % 2 == 0}, 0.001 * i) for i in range(1, 6)]
    d = rules(only_one, SearchState(), ACTIVE, best_iteration=0, direction="min", evidence=True)
    assert d.freeze == ()  # nothing to compare its effect with


def test_a_frozen_parameter_returns_after_bounded_cycles_or_when_the_best_moves():
    frozen = SearchState(cycle=1, frozen={"BIAS": {"iteration": 7, "best_iteration": 7,
                                                   "cycle": 1}})
    stay = rules(TRACE, frozen, ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert stay.unfreeze == () and stay.cycle == 2
    state = stay.apply(frozen, 10, 7)
    for _ in range(MAX_FROZEN_CYCLES - 2):
        state = rules(TRACE, state, ACTIVE, 7, "min", evidence=True).apply(state, 10, 7)
    back = rules(TRACE, state, ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert back.unfreeze == ("BIAS",)
    moved = rules(TRACE, frozen, ACTIVE, best_iteration=9, direction="min", evidence=True)
    assert moved.unfreeze == ("BIAS",)


def test_one_unfrozen_is_not_frozen_again_until_new_trials_say_so():
    frozen = SearchState(cycle=1, frozen={"BIAS": {"iteration": 7, "best_iteration": 4,
                                                   "cycle": 1}})
    d = rules(TRACE, frozen, ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert d.unfreeze == ("BIAS",) and "BIAS" not in d.freeze
    state = d.apply(frozen, 8, 7)
    assert state.released == {"BIAS": 8} and "BIAS" not in state.frozen
    # the next cycle, with no new trial of it: still not frozen (its old trials do not count)
    later = rules(TRACE, state, ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert "BIAS" not in later.freeze
    # three new inert trials after its release: frozen again
    more = TRACE + [trial(9 + j, {"BIAS": j % 2 == 0}, 0.002) for j in range(3)]
    again = rules(more, state, ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert again.freeze == ("BIAS",)


def test_the_llm_is_bounded_by_the_same_rules():
    frozen = SearchState(cycle=2, frozen={"WD": {"iteration": 5, "best_iteration": 4,
                                                 "cycle": 2}})
    text = '{"freeze": ["LR", "BIAS"], "unfreeze": [], "guidance": "Try DEPTH."}'
    d = from_llm(text, TRACE, frozen, ACTIVE, 7, "min", k=3, min_active=2, evidence=True)
    assert d.source == "llm" and d.freeze == ("BIAS",)
    assert d.unfreeze == ("WD",)  # the best moved since it was frozen: it returns regardless
    assert "LR" in d.note and "matter" in d.note
    # by counts (older runs) the same answer froze LR
    old = from_llm(text, TRACE, SearchState(), ACTIVE, 7, "min", k=3, min_active=2)
    assert old.freeze == ("BIAS", "LR")


def test_group_b_never_freezes_what_matters_nor_refreezes_what_it_unfroze(tmp_path):
    """The toy target with LR already at its optimum (the objective's steepest constant): every
    LR move loses a lot. By counts, LR was frozen after 3 such tries and, once unfrozen, frozen
    again in the same cycle; by evidence it matters and stays active."""
    root = make_script_repo(tmp_path / "p", TOY, locked=["MODE"],
                            replace={"LR = 0.02": "LR = 0.003"})
    edit_toml(root, params={"ACTIVATION": {"choices": ["relu", "gelu"]}}, run={"noise": "off"})
    ws = open_run(root, {"iterations": 30, "group": "B", "k": 3, "seed": 2}, name="b")
    try:
        engine = Engine(ws, offline_proposer(ws.config))
        engine.run()
        notes = engine.trace.notes("level15")
        lr = param_stats([r.data for r in engine.records], "min")["LR"]
    finally:
        ws.close(remove_worktree=True)
    assert lr.tried >= 3 and lr.kept == 0  # what froze it by counts
    assert len(notes) == 9
    frozen_ever = {n for note in notes for n in note["freeze"]}
    assert "LR" not in frozen_ever and "BATCH_SIZE" not in frozen_ever
    for note in notes:
        assert not set(note["freeze"]) & set(note["unfreeze"])
    # every freeze ends within MAX_FROZEN_CYCLES cycles
    since: dict[str, int] = {}
    for note in notes:
        for name in note["unfreeze"]:
            assert note["cycle"] - since.pop(name) <= MAX_FROZEN_CYCLES
        for name in note["freeze"]:
            since[name] = note["cycle"]
        assert all(note["cycle"] - c < MAX_FROZEN_CYCLES for c in since.values())
    state = json.loads(git.Repo(root).git.show("arx/b:runner/search_state.json"))
    assert state["cycle"] == 9


def test_each_freeze_and_unfreeze_carries_the_evidence_that_decided_it():
    d = rules(TRACE, SearchState(), ACTIVE, best_iteration=7, direction="min", evidence=True)
    assert evidence_lines(TRACE, SearchState(), d, 7, "min", True) == [
        "freeze BIAS: 3 measured trials since it was last unfrozen, 0 kept; effect 0.003 < 0.1 "
        "x the largest effect (the largest: 0.9, LR)"]
    frozen = SearchState(cycle=1, frozen={"BIAS": {"iteration": 7, "best_iteration": 7,
                                                   "cycle": 1},
                                          "WD": {"iteration": 7, "best_iteration": 4,
                                                 "cycle": 1}})
    later = rules(TRACE, replace(frozen, cycle=1 + MAX_FROZEN_CYCLES), ACTIVE, 7, "min",
                  evidence=True)
    assert later.unfreeze == ("BIAS", "WD")
    assert evidence_lines(TRACE, replace(frozen, cycle=1 + MAX_FROZEN_CYCLES), later, 7, "min",
                          True)[-2:] == [
        f"unfreeze BIAS: frozen since cycle 1, {MAX_FROZEN_CYCLES} cycles at most",
        "unfreeze WD: the best moved since it was frozen (iteration 4 then, 7 now)"]
    counts = rules(TRACE, SearchState(), ACTIVE, best_iteration=7, direction="min")
    assert counts.freeze == ("BIAS", "LR")
    assert evidence_lines(TRACE, SearchState(), counts, 7, "min", False) == [
        "freeze BIAS: tried 3 times, kept 0", "freeze LR: tried 3 times, kept 0"]
    _, body, _ = level15_message("r", 7, 1, d.freeze, d.unfreeze, d.guidance, d.source,
                                 evidence=evidence_lines(TRACE, SearchState(), d, 7, "min", True))
    assert body.endswith("\nEvidence:\n- freeze BIAS: 3 measured trials since it was last "
                         "unfrozen, 0 kept; effect 0.003 < 0.1 x the largest effect (the "
                         "largest: 0.9, LR)")
