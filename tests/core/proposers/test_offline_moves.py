"""The offline proposer does not re-run measured configurations (issue #16, defect 3), and its
fit stays bounded as the run grows; runs of older rules propose exactly as before."""

from __future__ import annotations

import json
import random

import git

from arx.core.config import CURRENT_RULES, RunConfig, TargetConfig
from arx.core.loop.engine import Engine
from arx.core.loop.space import ParameterSpace
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.moves import freeze, unmeasured_move
from arx.core.proposers.offline import KEEP_BEST, WINDOW, OptunaProposer, fitted, offline_proposer
from arx.core.repo.workspace import open_run

from support.repos import edit_toml

SPACE = ParameterSpace.from_toml({
    "LR": {"type": "float", "value": 0.02, "low": 1e-4, "high": 0.1, "log": True},
    "DEPTH": {"type": "int", "value": 6, "low": 1, "high": 12},
    "USE_BIAS": {"type": "bool", "value": True},
    "ACT": {"type": "str", "value": "relu", "choices": ["relu", "gelu", "silu"]},
})
BASE = {"LR": 0.02, "DEPTH": 6, "USE_BIAS": True, "ACT": "relu"}


def config(rules):
    return RunConfig(name="t", target=TargetConfig(), rules=rules)


def record(i, config, metric, status="discard"):
    return {"iteration": i, "kind": "trial", "status": status, "config": dict(config),
            "metric": metric, "changes": {}}


def request(history, best, focus=None, iteration=9):
    return ProposalRequest(iteration=iteration, prompt="", active=tuple(SPACE.names()),
                           best_config=best, space=SPACE, history=tuple(history),
                           focus=focus)


def test_a_focus_of_one_boolean_never_repeats_a_measured_configuration():
    # the trace: the bandit focuses on USE_BIAS, whose one move was measured already
    history = [record(0, BASE, 1.0, "baseline"), record(1, {**BASE, "USE_BIAS": False}, 1.1)]
    proposer = offline_proposer(config(CURRENT_RULES))
    tried = {freeze(r["config"]) for r in history}
    for iteration in range(2, 12):
        (p,) = proposer.propose(request(history, BASE, focus=("USE_BIAS",), iteration=iteration))
        assert p.changes, p.hypothesis
        assert freeze({**BASE, **p.changes}) not in tried, (iteration, p.changes)
        assert "not measured yet" in p.hypothesis
    # rules 2 (a run made before) proposes the repeat, exactly as it did
    (old,) = offline_proposer(config(2)).propose(
        request(history, BASE, focus=("USE_BIAS",)))
    assert old.changes == {"USE_BIAS": False}


def test_the_move_widens_within_the_focus_before_leaving_it():
    # focus USE_BIAS and ACT: every one-parameter move measured, two-parameter moves are not
    history = [record(0, BASE, 1.0, "baseline")]
    history += [record(i, {**BASE, **m}, 1.1) for i, m in enumerate(
        [{"USE_BIAS": False}, {"ACT": "gelu"}, {"ACT": "silu"}], 1)]
    proposer = OptunaProposer(seed=3, fresh=True)
    (p,) = proposer.propose(request(history, BASE, focus=("USE_BIAS", "ACT")))
    assert set(p.changes) == {"USE_BIAS", "ACT"}
    assert freeze({**BASE, **p.changes}) not in {freeze(r["config"]) for r in history}


def test_unmeasured_move_enumerates_a_small_discrete_space_to_its_end():
    proposer = OptunaProposer(fresh=True)
    codecs = {n: c for n, c in proposer_codecs(proposer).items() if n in ("USE_BIAS", "ACT")}
    tried = {freeze(BASE)}
    rng = random.Random(0)
    seen = []
    while (move := unmeasured_move([["USE_BIAS", "ACT"]], codecs, BASE, tried, {}, rng)):
        seen.append(move)
        tried.add(freeze({**BASE, **move}))
    assert len(seen) == 2 * 3 - 1  # every other configuration, one parameter moves first
    assert [len(m) for m in seen] == [1, 1, 1, 2, 2]


def proposer_codecs(proposer):
    from arx.core.proposers.offline import _Codec  # the codec is private to the proposer

    return {s.name: _Codec(s) for s in SPACE.tunable()}


def test_the_fit_is_a_bounded_window_of_the_history_that_keeps_the_best():
    history = [record(i, {**BASE, "LR": 0.001 * (i + 1)}, 2.0 - (i == 7) - 0.0001 * i)
               for i in range(400)]
    kept = fitted(history, "min")
    assert len(kept) == WINDOW + KEEP_BEST
    assert history[7] in kept and kept[-WINDOW:] == history[-WINDOW:]
    assert [r["iteration"] for r in kept] == sorted(r["iteration"] for r in kept)
    assert fitted(history[:50], "min") == history[:50]
    # a function of the history alone: the same request, the same proposal
    a = OptunaProposer(seed=1, fresh=True).propose(request(history, BASE))
    b = OptunaProposer(seed=1, fresh=True).propose(request(history, BASE))
    assert a == b


def test_a_run_over_a_small_space_measures_each_configuration_once(toy_repo):
    # USE_BIAS (2 values), ACTIVATION (2) and DEPTH (3) are tunable: 11 configurations besides
    # the baseline, and 11 iterations measure each of them once
    names = ["LR", "BATCH_SIZE", "WEIGHT_DECAY", "WARMUP_RATIO", "MODE"]
    edit_toml(toy_repo, params={"DEPTH": {"low": 5, "high": 7}}, locked=names)
    ws = open_run(toy_repo, {"iterations": 11, "group": "A"}, name="small")
    engine = Engine(ws, offline_proposer(ws.config))
    try:
        engine.run()
    finally:
        ws.close(remove_worktree=True)
    text = git.Repo(toy_repo).git.show("arx/small:runs/small/trace.jsonl")
    trials = [e for e in map(json.loads, text.splitlines())
              if e["event"] == "trial" and e["kind"] == "trial"]
    configs = [freeze(t["config"]) for t in trials]
    assert len(trials) == 11 and len(set(configs)) == 11, [t["changes"] for t in trials]
