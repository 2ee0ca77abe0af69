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


# every parameter measured 3+ times: A matters most and was measured least; B matters as much
# but was measured often; C was measured as rarely as A but barely matters (frozen); D between
TRACE = ([trial(i, {"A": i}, 1.0) for i in range(1, 4)]
         + [trial(i, {"B": i}, 0.9) for i in range(4, 10)]
         + [trial(i, {"C": i}, 0.05) for i in range(10, 13)]
         + [trial(i, {"D": i}, 0.5) for i in range(13, 18)])
ACTIVE = ["A", "B", "C", "D"]


def test_guidance_names_only_what_matters_and_was_tried_less():
    before = rules(TRACE, SearchState(), ACTIVE, 17, "min", evidence=True)
    assert before.guidance.startswith("Under-explored so far: A, D, B.")  # every remaining one
    assert before.explore == ()
    d = rules(TRACE, SearchState(), ACTIVE, 17, "min", evidence=True, explore=True)
    assert d.freeze == before.freeze == ("C",)  # what is frozen does not change
    assert d.explore == ("A",)
    assert d.guidance.startswith("Under-explored so far: A. Prefer")
    assert "Largest effect on the metric so far: A, B, D" in d.guidance
    assert d.apply(SearchState(), 17, 17).explore == ("A",)


def test_nothing_is_named_without_evidence_or_when_the_counts_are_even():
    assert under_explored(TRACE[:4], ACTIVE, "min", k=3) == ()  # two parameters measured
    even = [trial(i, {n: i}, 1.0) for i, n in enumerate("ABCD" * 3, start=1)]
    assert under_explored(even, ACTIVE, "min", k=3) == ()
    # never more than MAX_EXPLORE
    many = [trial(i, {f"P{i % 9}": i}, 1.0 if i % 9 < 5 else 0.9) for i in range(1, 60)]
    many += [trial(i, {f"P{i % 9}": i}, 1.0) for i in range(60, 80) if i % 9 >= 5]
    named = under_explored(many, [f"P{j}" for j in range(9)], "min", k=3)
    assert 1 <= len(named) <= MAX_EXPLORE


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


def _moves_of_act(rules_revision, explore, focus=None, n=60):
    proposer = offline_proposer(RunConfig(name="t", target=TargetConfig(), rules=rules_revision))
    history = ({"iteration": 0, "kind": "baseline", "status": "baseline", "config": BASE,
                "metric": 1.0, "changes": {}},)
    hits = []
    for i in range(1, n + 1):
        (p,) = proposer.propose(ProposalRequest(
            iteration=i, prompt="", active=tuple(SPACE.names()), best_config=BASE, space=SPACE,
            history=history, explore=explore, focus=focus))
        hits.append("ACT" in p.changes)
    return hits


def test_the_offline_proposer_changes_the_named_parameters_more_often_from_rules_7():
    old_plain, old_told = _moves_of_act(6, ()), _moves_of_act(6, ("ACT",))
    assert old_plain == old_told  # rules 6 ignores it: old runs propose what they proposed
    new = _moves_of_act(7, ("ACT",))
    assert sum(new) >= sum(old_plain) + 6, (sum(new), sum(old_plain))  # 28 against 18
    assert sum(new) < len(new) / 2  # likelier, not always: the others still move
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
    ws = open_run(root, {"iterations": 9, "group": "B", "k": 4, "seed": 2}, name="b")
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
