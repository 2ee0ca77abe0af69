"""Mechanisms compose (issue #16, defect 4): the runner template combines the focus of every
active mechanism instead of letting the first opinion win, and (rules >= 3) the offline catalog
is drawn in the order the trace calls for."""

from __future__ import annotations

from importlib.resources import files

from arx.core.errors import ProposalError
from arx.core.levels.level2 import catalog_order, next_from_catalog, symptoms
from arx.core.levels.mechanism import Mechanism, MechanismPatch, apply_patches, catalog
from arx.core.levels.policy import RunnerPolicy

TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
ACTIVE = ["LR", "DEPTH", "WD", "BIAS"]


def ctx(i, history=()):
    return {"iteration": i, "iterations": 30, "run": "r", "target_file": "t.py",
            "target_source": "", "metric": "m", "direction": "min", "baseline_metric": 1.0,
            "best_metric": 1.0, "best_iteration": 0, "best_config": {}, "active": list(ACTIVE),
            "frozen": [], "guidance": "", "history": list(history),
            "params": [{"name": n, "kind": "float", "value": 1, "describe": n, "locked": False,
                        "frozen": False} for n in ACTIVE]}


def validate(changes, current, frozen):
    if set(changes) - set(ACTIVE):
        raise ProposalError("not active", "unknown")
    return dict(changes)


def runner_with(*mechanisms):
    source = TEMPLATE
    for mech in mechanisms:
        source = apply_patches(source, mech.patches)
    return RunnerPolicy.start(source, {"direction": "min"}, validate, deadline_s=5.0)


def focus_class(name, names):
    code = f"class {name}:\n    def focus(self, ctx):\n        return {names!r}\n"
    return Mechanism(name, "testing", "", (
        MechanismPatch("new_helper_class", name, None, code),
        MechanismPatch("modify_init", name, None, f"self.mechanisms.append({name}())")))


def test_disjoint_opinions_take_turns_and_shared_names_win():
    p = runner_with(focus_class("OnlyLR", ["LR"]), focus_class("DepthWd", ["DEPTH", "WD"]))
    try:
        assert [p.focus(ctx(i)) for i in (1, 2, 3, 4)] == [["DEPTH", "WD"], ["LR"],
                                                             ["DEPTH", "WD"], ["LR"]]
    finally:
        p.close()
    p = runner_with(focus_class("LrDepth", ["LR", "DEPTH"]),
                    focus_class("DepthWd", ["DEPTH", "WD"]))
    try:
        assert p.focus(ctx(1)) == p.focus(ctx(2)) == ["DEPTH"]  # they agree on DEPTH
    finally:
        p.close()


def test_the_catalog_bandit_no_longer_silences_orthogonal_exploration():
    by_name = {m.name: m for m in catalog()}
    # LR paid off three times (the bandit's arm); the others were each tried once, in vain
    history = [{"iteration": i, "kind": "trial", "status": "keep", "changes": {"LR": 0.1 * i},
                "metric": 1.0 - 0.1 * i, "best_before": 1.1 - 0.1 * i} for i in (1, 2, 3)]
    history += [{"iteration": i, "kind": "trial", "status": "discard", "changes": {n: 2},
                 "metric": 1.0, "best_before": 0.7} for i, n in ((4, "DEPTH"), (5, "WD"),
                                                                 (6, "BIAS"))]
    p = runner_with(by_name["ParameterBandit"], by_name["OrthogonalExploration"])
    try:
        for rec in history:
            p.observe(ctx(7, history), rec)
        seen = [tuple(p.focus(ctx(i, history))) for i in (7, 8)]
    finally:
        p.close()
    # the bandit's arm and OrthogonalExploration's least-changed three take turns
    assert sorted(seen) == [("DEPTH", "WD", "BIAS"), ("LR",)]


def trial(i, changes, status="discard", config=None):
    return {"iteration": i, "kind": "trial", "status": status, "changes": changes,
            "config": config or {"LR": 1, **changes}}


def test_the_catalog_order_follows_the_trace():
    baseline = {"iteration": 0, "kind": "baseline", "status": "baseline", "changes": {},
                "config": {"LR": 1}}
    even = [baseline] + [trial(i, {n: i}) for i, n in enumerate(ACTIVE * 2, start=1)]
    assert symptoms(even, ACTIVE) == {"repeats": False, "uneven": False}
    assert catalog_order(even, ACTIVE)[0] == "ParameterBandit"
    lopsided = [baseline] + [trial(i, {"LR": i}) for i in range(1, 9)]
    assert catalog_order(lopsided, ACTIVE)[0] == "OrthogonalExploration"
    repeats = even + [trial(9, {"LR": 1}, config={"LR": 1}), trial(10, {"DEPTH": 3})]
    repeats[-1]["config"] = dict(even[3]["config"])
    assert symptoms(repeats, ACTIVE)["repeats"]
    assert catalog_order(repeats, ACTIVE)[0] == "TabuList"
    assert next_from_catalog([], repeats, ACTIVE).name == "TabuList"
    assert next_from_catalog(["TabuList"], repeats, ACTIVE).name == "ParameterBandit"
    # runs before rules 3 (no records): file-name order, as they ran
    assert next_from_catalog([]).name == "ParameterBandit"
