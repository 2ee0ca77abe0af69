"""Mechanisms that compose (rules >= 7, issue #26): a focus never names a parameter whose every
move another active mechanism refuses (the tabu), the catalog's TabuList also refuses an "undo"
(a configuration measured before), and the prompt says in one line what the mechanisms jointly
allow. The runner on a branch made with rules <= 6 behaves as it did (the catalog's older
TabuList, no such line)."""

from __future__ import annotations

from importlib.resources import files

from arx.core.errors import ProposalError
from arx.core.levels.gate import run_gate
from arx.core.levels.mechanism import apply_patches, catalog
from arx.core.levels.policy import RunnerPolicy
from arx.core.loop.space import ParameterSpace
from arx.core.proposers.moves import moves

TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
ACTIVE = ["LR", "DEPTH", "WD", "BIAS"]
BASE = {"LR": 0.01, "DEPTH": 4, "WD": 0.1, "BIAS": True}


def validate(changes, current, frozen):
    if set(changes) - set(ACTIVE):
        raise ProposalError("not active", "unknown")
    return dict(changes)


def rec(i, changes, status, best=None):
    return {"iteration": i, "kind": "trial", "status": status, "changes": changes,
            "metric": 1.0, "best_before": 1.0, "config": {**(best or BASE), **changes}}


def ctx(history, best=None, rules=7):
    out = {"iteration": len(history) + 1, "iterations": 30, "run": "r", "target_file": "t.py",
           "target_source": "", "metric": "m", "direction": "min", "baseline_metric": 1.0,
           "best_metric": 1.0, "best_iteration": 0, "best_config": dict(best or BASE),
           "active": list(ACTIVE), "movable": list(ACTIVE), "frozen": [], "guidance": "",
           "history": list(history),
           "params": [{"name": n, "kind": "float", "value": 1, "describe": n, "locked": False,
                       "frozen": False} for n in ACTIVE]}
    if rules >= 7:  # what the engine adds from rules 7 (``moves.moves``)
        out["moves"] = {"LR": [0.001, 0.003, 0.03, 0.1], "DEPTH": [2, 3, 5, 6],
                        "WD": [0.0, 0.05, 0.2], "BIAS": [False]}
    return out


def runner(rules, *names):
    source = TEMPLATE
    for mech in catalog(rules):
        if mech.name in names:
            source = apply_patches(source, mech.patches)
    return RunnerPolicy.start(source, {"direction": "min", "rules": rules}, validate,
                              deadline_s=5.0)


def stalled_history():
    """LR, DEPTH and WD were each changed twice; BIAS once, to its only other value, in vain:
    OrthogonalExploration's least-changed parameter is BIAS, whose one move the tabu refuses."""
    base = {"iteration": 0, "kind": "baseline", "status": "baseline", "changes": {},
            "metric": 1.0, "config": dict(BASE)}
    moves = [{"LR": 0.03}, {"DEPTH": 2}, {"WD": 0.2}, {"LR": 0.003}, {"DEPTH": 6}, {"WD": 0.0},
             {"BIAS": False}]
    return [base] + [rec(i, m, "discard") for i, m in enumerate(moves, 1)]


def test_a_focus_never_names_a_parameter_whose_every_move_the_tabu_refuses():
    history = stalled_history()
    for rules, expected in ((6, ["BIAS"]), (7, ["LR", "DEPTH", "WD"])):
        p = runner(rules, "TabuList", "OrthogonalExploration")
        try:
            for r in history[1:]:
                p.observe(ctx(history, rules=rules), r)
            assert p.focus(ctx(history, rules=rules)) == expected, rules
            prompt = p.build_prompt(ctx(history, rules=rules))
        finally:
            p.close()
        line = ("The active mechanisms (OrthogonalExploration, TabuList) jointly allow changes "
                "to: LR, DEPTH, WD; every move of BIAS (refused by TabuList) is excluded.")
        assert (line in prompt) is (rules == 7)


def test_the_rules_7_tabu_refuses_an_undo_to_a_measured_configuration():
    moved = {**BASE, "LR": 0.03}  # the keep at 1 moved LR from 0.01 to 0.03
    history = [{"iteration": 0, "kind": "baseline", "status": "baseline", "changes": {},
                "metric": 1.0, "config": dict(BASE)}, rec(1, {"LR": 0.03}, "keep")]
    undo = {"changes": {"LR": 0.01}, "hypothesis": "back"}
    fresh = {"changes": {"LR": 0.005}, "hypothesis": "lower"}
    for rules, kept in ((6, [undo, fresh]), (7, [fresh])):
        p = runner(rules, "TabuList")
        try:
            p.observe(ctx(history, moved, rules), history[1])
            assert p.filter_candidates(ctx(history, moved, rules), [undo, fresh]) == kept
            # all refused: the least refused one stays, so the loop never runs dry
            assert p.filter_candidates(ctx(history, moved, rules), [undo]) == [undo]
        finally:
            p.close()


def test_without_mechanisms_the_prompt_has_no_such_line_and_the_focus_is_free():
    p = runner(7)
    try:
        assert p.focus(ctx(stalled_history())) is None
        assert "jointly allow" not in p.build_prompt(ctx(stalled_history()))
    finally:
        p.close()


def test_moves_lists_the_values_a_move_of_its_own_may_take():
    space = ParameterSpace.from_toml({
        "constraints": ["not TIED or EMSIZE == NHID"],
        "TIED": {"type": "bool", "value": False},
        "EMSIZE": {"type": "int", "value": 200, "low": 50, "high": 800},
        "NHID": {"type": "int", "value": 200, "low": 50, "high": 800},
        "OPT": {"type": "str", "value": "adam", "choices": ["adam", "sgd", "lion"]}})
    best = space.defaults()
    found = moves(space, best)
    assert found["TIED"] == [True] and found["OPT"] == ["sgd", "lion"]
    assert 200 not in found["EMSIZE"] and {50, 800} <= set(found["EMSIZE"])
    assert moves(space, {**best, "TIED": True})["EMSIZE"] == []  # every move breaks TIED's rule
    assert "OPT" not in moves(space, best, frozen=["OPT"])


def test_the_rules_7_catalog_passes_the_gate_together(tmp_path):
    source = TEMPLATE
    for mech in catalog(7):
        source = apply_patches(source, mech.patches)
    assert "def allows(self, ctx, changes)" in source  # the rules-7 TabuList
    result = run_gate(source, tmp_path, mechanism="TabuList", rules=7)
    assert result.ok, result.describe()
    assert "def allows" not in "".join(p.code for m in catalog(6) for p in m.patches)


def test_the_gate_asks_a_mechanisms_allows_under_the_runs_rules(tmp_path):
    """The smoke drive gives the runner the run's rules and, from 7, the moves: an ``allows``
    that breaks is refused at the gate, not at the run's first focus."""
    broken = TEMPLATE
    for mech in catalog(7):
        if mech.name == "TabuList":
            broken = apply_patches(broken, mech.patches)
    assert broken.count("    def allows(self, ctx, changes):\n") == 1
    broken = broken.replace("    def allows(self, ctx, changes):\n",
                            "    def allows(self, ctx, changes):\n"
                            "        raise RuntimeError('allows is broken')\n")
    result = run_gate(broken, tmp_path / "seven", mechanism="TabuList", rules=7)
    assert not result.ok and result.steps[-1].name == "smoke", result.describe()
    assert "RuntimeError: allows is broken" in result.reason, result.reason
    # under rules 6 nothing asks ``allows`` (a branch made then replays as it gated)
    assert run_gate(broken, tmp_path / "six", mechanism="TabuList", rules=6).ok
