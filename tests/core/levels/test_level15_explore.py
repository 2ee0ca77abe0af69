"""Level 1.5's guidance changes what the offline proposer asks (rules >= 7, issue #24): it names
only the parameters the evidence says are under-explored, and the Optuna proposer moves them in
a share of its proposals. Runs of older rules guide and propose exactly as before."""

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


# LR and BIAS measured 3 times each (BIAS barely matters), DEPTH once, WD never
TRACE = [
    trial(1, {"LR": 0.1}, 0.9), trial(2, {"BIAS": False}, 0.004), trial(3, {"LR": 1e-5}, 1.2),
    trial(4, {"BIAS": False}, -0.002), trial(5, {"LR": 0.05}, 0.4),
    trial(6, {"BIAS": True}, 0.003), trial(7, {"DEPTH": 2}, -0.3, "keep"),
]
ACTIVE = ["LR", "BIAS", "DEPTH", "WD"]


def test_guidance_names_only_the_parameters_with_thin_evidence():
    before = rules(TRACE, SearchState(), ACTIVE, 7, "min", evidence=True)
    assert before.guidance.startswith("Under-explored so far: WD, DEPTH, LR.")  # all remaining
    assert before.explore == ()
    d = rules(TRACE, SearchState(), ACTIVE, 7, "min", evidence=True, explore=True)
    assert d.freeze == before.freeze == ("BIAS",)  # what is frozen does not change
    assert d.explore == ("WD", "DEPTH")  # fewer than k=3 measured trials, least measured first
    assert d.guidance.startswith("Under-explored so far: WD, DEPTH. Prefer")
    assert "Largest effect on the metric so far: LR" in d.guidance
    state = d.apply(SearchState(), 7, 7)
    assert state.explore == ("WD", "DEPTH")


def test_with_enough_evidence_only_what_matters_and_was_tried_less_is_named():
    # every parameter measured 3+ times: A matters most and was measured least; B matters as
    # much but was measured often; C was measured as rarely as A but barely matters
    trace = ([trial(i, {"A": i}, 1.0) for i in range(1, 4)]
             + [trial(i, {"B": i}, 0.9) for i in range(4, 10)]
             + [trial(i, {"C": i}, 0.05) for i in range(10, 13)]
             + [trial(i, {"D": i}, 0.5) for i in range(13, 18)])
    assert under_explored(trace, ["A", "B", "C", "D"], "min", k=3) == ("A",)
    # nothing stands out once the counts are even: no name at all
    even = [trial(i, {n: i}, 1.0) for i, n in enumerate("ABCD" * 3, start=1)]
    assert under_explored(even, ["A", "B", "C", "D"], "min", k=3) == ()
    many = [f"P{i}" for i in range(10)]
    assert len(under_explored([], many, "min", k=3)) == MAX_EXPLORE


def test_state_files_without_explore_read_as_before(tmp_path):
    path = tmp_path / "search_state.json"
    SearchState(cycle=2, guidance="g").dump(path)
    assert "explore" not in json.loads(path.read_text())  # older runs' files stay byte-equal
    assert SearchState.load(path).explore == ()
    SearchState(cycle=3, explore=("LR",)).dump(path)
    assert SearchState.load(path).explore == ("LR",)


SPACE = ParameterSpace.from_toml({
    "LR": {"type": "float", "value": 0.02, "low": 1e-4, "high": 0.1, "log": True},
    "DEPTH": {"type": "int", "value": 6, "low": 1, "high": 12},
    "USE_BIAS": {"type": "bool", "value": True},
    "ACT": {"type": "str", "value": "relu", "choices": ["relu", "gelu", "silu"]},
})
BASE = {"LR": 0.02, "DEPTH": 6, "USE_BIAS": True, "ACT": "relu"}


def _moves_of_act(rules_revision, explore, focus=None, n=24):
    proposer = offline_proposer(RunConfig(name="t", target=TargetConfig(), rules=rules_revision))
    history = ({"iteration": 0, "kind": "baseline", "status": "baseline", "config": BASE,
                "metric": 1.0, "changes": {}},)
    hits = []
    for i in range(1, n + 1):
        (p,) = proposer.propose(ProposalRequest(
            iteration=i, prompt="", active=tuple(SPACE.names()), best_config=BASE, space=SPACE,
            history=history, explore=explore, focus=focus))
        hits.append(set(p.changes) == {"ACT"})
    return hits


def test_the_offline_proposer_moves_the_named_parameters_from_rules_7():
    old_plain, old_told = _moves_of_act(6, ()), _moves_of_act(6, ("ACT",))
    assert old_plain == old_told  # rules 6 ignores it: old runs propose what they proposed
    new = _moves_of_act(7, ("ACT",))
    assert sum(new) >= sum(old_plain) + 6, (sum(new), sum(old_plain))
    assert sum(new) < len(new)  # a share, not all: the others still move
    assert _moves_of_act(7, ()) == old_plain  # nothing named: as before
    # a mechanism's focus comes first
    assert not any(_moves_of_act(7, ("ACT",), focus=("LR",), n=8))


class _Recording:
    """The run's own offline proposer, noting what each request named (the engine's side)."""

    def __init__(self, proposer):
        self.proposer, self.name, self.asked = proposer, proposer.name, {}

    def propose(self, request, feedback=None):
        self.asked[request.iteration] = request.explore
        return self.proposer.propose(request, feedback)


def test_a_group_b_run_stores_the_named_parameters_and_hands_them_to_the_proposer(tmp_path):
    root = make_toy_repo(tmp_path / "p")
    ws = open_run(root, {"iterations": 9, "group": "B", "k": 4, "seed": 1}, name="b")
    try:
        assert ws.config.rules >= 7
        proposer = _Recording(offline_proposer(ws.config))
        engine = Engine(ws, proposer)
        engine.run()
        notes = engine.trace.notes("level15")
    finally:
        ws.close(remove_worktree=True)
    assert len(notes) == 2
    named = [tuple(n["guidance"].split(". ")[0].removeprefix("Under-explored so far: ")
                   .split(", ")) for n in notes]
    assert all(1 <= len(n) <= MAX_EXPLORE for n in named)
    assert proposer.asked[3] == ()  # before the first cycle nothing is named
    assert proposer.asked[5] == named[0] and proposer.asked[9] == named[1]
    state = json.loads(git.Repo(root).git.show("arx/b:runner/search_state.json"))
    assert tuple(state["explore"]) == named[1]
