"""Mechanisms cannot lock the search into refused proposals (issue 24): the word_language_model
situation, a constraint ``not TIED or EMSIZE == NHID`` and a focus on TIED, whose one move
breaks it. Mechanisms of the runner template choose among the parameters that can move on their
own (``ctx["movable"]``); a focus that still leads to refusals is waste, and 3 such iterations
in a row are a fault that reverts the mechanism. Real runs of the toy target, real worker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import git

from arx.core.levels.level2 import add_by_hand
from arx.core.levels.mechanism import Mechanism, catalog
from arx.core.loop.driver import run_to_end
from arx.core.loop.space import ParameterSpace
from arx.core.proposers.moves import movable
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.workspace import open_run

from support.repos import TOY, edit_toml, make_script_repo

TABLE = {
    "constraints": ["not TIED or EMSIZE == NHID"],
    "TIED": {"type": "bool", "value": False},
    "EMSIZE": {"type": "int", "value": 200, "low": 50, "high": 800},
    "NHID": {"type": "int", "value": 400, "low": 50, "high": 800},
    "LR": {"type": "float", "value": 0.02, "low": 0.002, "high": 0.2, "log": True},
}
#: a mechanism whose focus is TIED whatever the space says (it replaces the Runner's own focus,
#: as a generated mechanism may): every proposal it leads to is refused
LOCK_TIED = {"name": "LockTied", "domain": "testing", "description": "focus on TIED",
             "patches": [{"kind": "replace_method", "name": "LockTied", "target": "focus",
                          "code": "def focus(self, ctx):\n"
                                  "    return ['TIED'] if 'TIED' in ctx['active'] else None\n"}]}


def test_movable_leaves_out_a_parameter_whose_every_move_breaks_a_constraint():
    space = ParameterSpace.from_toml(TABLE)
    best = space.defaults()  # TIED False, EMSIZE 200 != NHID 400
    assert movable(space, best) == ["EMSIZE", "NHID", "LR"]
    tied_ok = {**best, "EMSIZE": 400}  # EMSIZE == NHID: TIED may move, EMSIZE and NHID not
    assert movable(space, tied_ok) == ["TIED", "EMSIZE", "NHID", "LR"]
    tied = {**tied_ok, "TIED": True}
    assert movable(space, tied) == ["TIED", "LR"]
    assert movable(space, tied, frozen=["LR"]) == ["TIED"]
    free = ParameterSpace.from_toml({k: v for k, v in TABLE.items() if k != "constraints"})
    assert movable(free, best) == ["TIED", "EMSIZE", "NHID", "LR"]


def test_the_template_gives_mechanisms_only_parameters_that_can_move():
    """OrthogonalExploration from the catalog, in the runner template: TIED, changed least,
    is not its focus while no move of TIED alone is allowed."""
    spec = importlib.util.spec_from_file_location(
        "runner_template", Path(__file__).parents[3] / "runner_repo" / "runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ortho = next(m for m in catalog() if m.name == "OrthogonalExploration")
    exec(ortho.patches[0].code, module.__dict__)
    runner = module.Runner({"direction": "min"})
    runner.mechanisms.append(module.OrthogonalExploration(width=1))
    history = [{"iteration": i, "changes": {name: 1}} for i, name in
               enumerate(["EMSIZE", "NHID", "LR", "LR"], 1)]
    ctx = {"iteration": 5, "active": ["TIED", "EMSIZE", "NHID", "LR"], "history": history}
    assert runner.focus(ctx) == ["TIED"]  # without ``movable`` (an older arx): as before
    assert runner.focus({**ctx, "movable": ["EMSIZE", "NHID", "LR"]}) == ["EMSIZE"]
    assert runner.focus({**ctx, "movable": []}) is None


def test_a_focus_whose_only_move_breaks_a_constraint_is_reverted_within_3_iterations(tmp_path):
    root = make_script_repo(tmp_path / "project", TOY, locked=["MODE", "SEED"], replace={
        'ACTIVATION = "relu"': 'ACTIVATION = "relu"\nTIED = False\nEMSIZE = 200\nNHID = 400'})
    edit_toml(root, params={k: v for k, v in TABLE.items() if k != "constraints"})
    doc = (root / "arx.toml").read_text()
    (root / "arx.toml").write_text(doc.replace(
        "[params]\n", "[params]\nconstraints = [\"not TIED or EMSIZE == NHID\"]\n", 1))
    git.Repo(root).git.commit("-am", "test: the word_language_model constraint")
    flags = {"iterations": 1, "noise": "off", "verify": 0}
    run_to_end(open_run(root, flags, name="w"), OptunaProposer(seed=0))
    ws = open_run(root, {}, resume="w")
    try:
        outcome = add_by_hand(ws, Mechanism.from_json(json.dumps(LOCK_TIED).encode()))
    finally:
        ws.close(remove_worktree=True)
    assert outcome.active, outcome.reason
    run_to_end(open_run(root, {"iterations": 5}, resume="w"), OptunaProposer(seed=0))

    events = [json.loads(line) for line in git.Repo(root).git.show(
        "arx/w:runs/w/trace.jsonl").splitlines()]
    trials = [e for e in events if e["event"] == "trial" and e["kind"] == "trial"]
    revert = next(e for e in events if e["event"] == "level2"
                  and e.get("verdict") == "runtime_revert")
    assert revert["mechanism"] == "LockTied" and revert["fault"] == "no_progress"
    assert "not TIED or EMSIZE == NHID" in revert["reason"]
    locked = [t for t in trials if t.get("focus") == ["TIED"]]
    assert [t["iteration"] for t in locked] == [2, 3, 4]  # reverted within 3 iterations
    assert all(t["status"] == "invalid_proposal" for t in locked)
    assert revert["iteration"] == 4
    after = [t for t in trials if t["iteration"] > 4]
    assert [t["iteration"] for t in after] == [5]  # the run went on, without the focus
    assert all(t["status"] != "invalid_proposal" and not t.get("focus") for t in after)
