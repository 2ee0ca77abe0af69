"""Level 1.5's guidance changes what the offline proposer asks (rules >= 7, issue #24): it names
only the parameters the evidence says are under-explored, and the Optuna proposer moves them
first when its draws land only on measured configurations. Runs of older rules guide and
propose exactly as before."""

from __future__ import annotations

import json

import git

from arx.core.config import RunConfig, TargetConfig
from arx.core.levels.level15 import MAX_EXPLORE, SearchState, rules, under_explored
from arx.core.loop.engine import Engine
from arx.core.loop.space import ParameterSpace
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run

from support.repos import make_toy_repo


def trial(i, changes, delta, status="discard"):
    return {"iteration": i, "kind": "trial", "changes": changes, "status": status, "delta": delta}


# A was kept for a real gain and measured least; B was kept too but measured most; C's only
# keep is negligible (and C is frozen as inert); D never helped; E moves the metric most, but
# every move of it loses (a sensitive parameter, like a learning rate already at its best)
TRACE = ([trial(1, {"A": 1}, 1.0), trial(2, {"A": 2}, 1.0), trial(3, {"A": 3}, -0.5, "keep")]
         + [trial(i, {"B": i}, 0.9) for i in range(4, 10)] + [trial(10, {"B": 10}, -0.4, "keep")]
         + [trial(11, {"C": 11}, 0.05), trial(12, {"C": 12}, 0.05),
            trial(13, {"C": 13}, -0.001, "keep")]
         + [trial(i, {"D": i}, 0.5) for i in range(14, 20)]
         + [trial(i, {"E": i}, 2.0) for i in range(20, 25)])
ACTIVE = ["A", "B", "C", "D", "E"]


def test_guidance_names_only_what_helped_and_was_tried_less():
    before = rules(TRACE, SearchState(), ACTIVE, 13, "min", evidence=True)
    assert before.guidance.startswith("Under-explored so far: A, E, D, B.")  # every one left
    assert before.explore == ()
    d = rules(TRACE, SearchState(), ACTIVE, 13, "min", evidence=True, explore=True)
    assert d.freeze == before.freeze == ("C",)  # what is frozen does not change
    assert d.explore == ("A",)
    assert d.guidance.startswith("Under-explored so far: A. Prefer")
    assert "Largest effect on the metric so far: E, A, B" in d.guidance
    assert d.apply(SearchState(), 13, 13).explore == ("A",)


def test_nothing_is_named_without_evidence_or_a_real_gain():
    assert under_explored(TRACE[:4], ACTIVE, "min", k=3) == ()  # two parameters measured
    # C's keep is negligible next to E's effect, E never helped: neither is named
    assert under_explored(TRACE, ["B", "C", "D", "E"], "min", k=3) == ()
    even = [trial(i, {n: i}, -0.5, "keep") for i, n in enumerate("ABCD" * 3, start=1)]
    assert under_explored(even, ["A", "B", "C", "D"], "min", k=3) == ()  # tried alike
    many = [trial(i, {f"P{j}": i}, -1.0, "keep") for i, j in enumerate(range(9), start=1)]
    many += [trial(i, {f"P{i % 5}": i}, 0.5) for i in range(10, 40)]  # P5-P8 tried less
    assert len(under_explored(many, [f"P{j}" for j in range(9)], "min", k=3)) == MAX_EXPLORE


def test_state_files_without_explore_read_as_before(tmp_path):
    path = tmp_path / "search_state.json"
    SearchState(cycle=2, guidance="g").dump(path)
    assert "explore" not in json.loads(path.read_text())  # older runs' files stay byte-equal
    assert SearchState.load(path).explore == ()
    SearchState(cycle=3, explore=("LR",)).dump(path)
    assert SearchState.load(path).explore == ("LR",)


SPACE = ParameterSpace.from_toml({
    "X": {"type": "bool", "value": True}, "Y": {"type": "bool", "value": True},
    "Z": {"type": "str", "value": "a", "choices": ["a", "b", "c"]}})
BASE = {"X": True, "Y": True, "Z": "a"}


def measured(i, changes, metric):
    return {"iteration": i, "kind": "trial" if i else "baseline",
            "status": "discard" if i else "baseline", "config": {**BASE, **changes},
            "metric": metric, "changes": changes}


# every move from BASE is measured but two: Y -> False and Z -> "c"
STUCK = (measured(0, {}, 1.0), measured(1, {"X": False}, 1.2), measured(2, {"Z": "b"}, 1.1),
         measured(3, {"X": False, "Y": False}, 1.3), measured(4, {"X": False, "Z": "c"}, 1.3),
         measured(5, {"Y": False, "Z": "b"}, 1.3), measured(6, {"X": False, "Z": "b"}, 1.3),
         measured(7, {"Y": False, "Z": "c"}, 1.3))


def _stuck_moves(rules_revision, explore, focus=None):
    """What the offline proposer asks over 20 iterations where TPE only rates measured
    configurations, as (changes, widened) pairs."""
    proposer = offline_proposer(RunConfig(name="t", target=TargetConfig(), rules=rules_revision))
    out = []
    for i in range(8, 28):
        (p,) = proposer.propose(ProposalRequest(
            iteration=i, prompt="", active=("X", "Y", "Z"), best_config=BASE, space=SPACE,
            history=STUCK, explore=explore, focus=focus))
        out.append((p.changes, "not measured yet" in p.hypothesis))
    return out


def test_a_stuck_proposer_moves_the_named_parameters_first_from_rules_7():
    before = _stuck_moves(6, ())
    assert all(widened for _c, widened in before)
    assert {"Y": False} in [c for c, _w in before] and {"Z": "c"} in [c for c, _w in before]
    assert _stuck_moves(6, ("Z",)) == before  # rules 6 ignores it: old runs ask the same
    assert _stuck_moves(7, ()) == before  # nothing named: as before
    assert [c for c, _w in _stuck_moves(7, ("Z",))] == [{"Z": "c"}] * 20
    # a mechanism's focus comes first
    assert _stuck_moves(7, ("Z",), focus=("Y",)) == _stuck_moves(6, (), focus=("Y",))


class _Recording:
    """The run's own offline proposer, noting what each request named (the engine's side)."""

    def __init__(self, proposer):
        self.proposer, self.name, self.asked = proposer, proposer.name, {}

    def propose(self, request, feedback=None):
        self.asked[request.iteration] = request.explore
        return self.proposer.propose(request, feedback)


def test_a_group_b_run_stores_the_named_parameters_and_hands_them_to_the_proposer(tmp_path):
    root = make_toy_repo(tmp_path / "p")
    ws = open_run(root, {"iterations": 9, "group": "B", "k": 4, "seed": 3}, name="b")
    try:
        assert ws.config.rules >= 7
        proposer = _Recording(offline_proposer(ws.config))
        engine = Engine(ws, proposer)
        engine.run()
        notes = engine.trace.notes("level15")
    finally:
        ws.close(remove_worktree=True)
    assert len(notes) == 2
    # cycle 1 (4 trials): too little evidence, nothing named (before: every parameter)
    assert not notes[0]["guidance"].startswith("Under-explored")
    head = notes[1]["guidance"].split(". ")[0]
    assert head.startswith("Under-explored so far: ")
    named = tuple(head.removeprefix("Under-explored so far: ").split(", "))
    assert 1 <= len(named) <= MAX_EXPLORE
    assert proposer.asked[3] == proposer.asked[5] == ()
    assert proposer.asked[9] == named  # the engine hands the cycle's names to the proposer
    state = json.loads(git.Repo(root).git.show("arx/b:runner/search_state.json"))
    assert tuple(state["explore"]) == named
