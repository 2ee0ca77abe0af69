"""arx.core.levels.mechanism: structured runner patches (real libcst), the catalog, and its effects."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from arx.core.errors import PatchError
from arx.core.levels.gate import run_gate
from arx.core.levels.mechanism import (
    KINDS,
    Mechanism,
    MechanismPatch,
    apply_patch,
    apply_patches,
    catalog,
    load_catalog,
    new_method_names,
)

from support.inprocess import load_runner

RUNNER = '''\
"""A runner."""

import math


class Runner:
    """Doc."""

    def __init__(self, config):
        self.config = dict(config)
        self.mechanisms = []

    # ---- hooks
    def select(self, ctx, candidates):
        return candidates[0]


def mean(values):
    return sum(values) / len(values)
'''
TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")


def patch(kind, code, name="Probe", target=None):
    return MechanismPatch(kind=kind, name=name, target=target, code=code)


# -- the patch record ----------------------------------------------------------------------------


def test_from_json_accepts_object_and_text_and_round_trips():
    obj = {"kind": "replace_method", "name": "Greedy", "target": "select",
           "code": "def select(self, ctx, c):\n    return c[0]\n", "domain": "search"}
    p = MechanismPatch.from_json(obj)
    assert (p.kind, p.name, p.target, p.domain) == ("replace_method", "Greedy", "select", "search")
    assert MechanismPatch.from_json(json.dumps(obj)) == p
    assert MechanismPatch.from_json(p.to_json()) == p
    plain = MechanismPatch.from_json({"kind": "modify_init", "name": "X", "code": "self.a = 1"})
    assert plain.target is None and plain.domain == ""
    assert "domain" not in plain.to_json()


@pytest.mark.parametrize("obj, words", [
    ("{not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"kind": "diff", "name": "X", "code": "x"}, "unknown patch kind 'diff'"),
    ({"kind": "modify_init", "name": "X", "code": "x", "extra": 1}, "unknown: extra"),
    ({"kind": "modify_init", "name": "X"}, "missing: code"),
    ({"kind": "modify_init", "name": "X", "code": "  "}, "has no code"),
    ({"kind": "modify_init", "name": "tabu", "code": "x"}, "CamelCase"),
    ({"kind": "modify_init", "name": "Bad Name", "code": "x"}, "CamelCase"),
    ({"kind": "modify_init", "name": "X", "code": 3}, "must be a string"),
    ({"kind": "replace_method", "name": "X", "code": "x"}, "needs a method name"),
    ({"kind": "new_method", "name": "X", "target": "select", "code": "x"}, "takes no target"),
])
def test_from_json_refuses_anything_else(obj, words):
    text = obj if isinstance(obj, str) else json.dumps(obj)
    with pytest.raises(PatchError, match=words):
        MechanismPatch.from_json(text)


def test_mechanism_from_json_forms_and_name_check():
    helper = {"kind": "new_helper_class", "name": "Probe", "code": "class Probe:\n    pass\n"}
    init = {"kind": "modify_init", "name": "Probe", "code": "self.mechanisms.append(Probe())"}
    mech = Mechanism.from_json({"name": "Probe", "domain": "testing", "description": "d",
                                "patches": [helper, init]})
    assert [p.kind for p in mech.patches] == ["new_helper_class", "modify_init"]
    assert all(p.domain == "testing" for p in mech.patches)
    assert Mechanism.from_json([helper, init]).patches == tuple(
        MechanismPatch.from_json(x) for x in (helper, init))
    assert Mechanism.from_json(helper).name == "Probe"
    assert Mechanism.from_json(mech.to_json()).patches == mech.patches
    with pytest.raises(PatchError, match="must be named 'Probe'"):
        Mechanism.from_json([helper, {**init, "name": "Other"}])
    with pytest.raises(PatchError, match="non-empty list"):
        Mechanism.from_json({"name": "X", "patches": []})
    fullwidth = "\uff30robe"  # NFKC folds it to Probe: Python would bind the innocent name
    with pytest.raises(PatchError):
        Mechanism.from_json({**helper, "name": fullwidth})


# -- the four kinds, before/after ----------------------------------------------------------------


def test_new_helper_class_goes_before_runner_with_its_imports():
    code = ("from collections import deque\nimport math\n\n# remembers things\n"
            "class Memory:\n    def __init__(self):\n        self.seen = deque()\n")
    out = apply_patch(RUNNER, patch("new_helper_class", code, name="Memory"))
    assert out == RUNNER.replace(
        "import math\n\n\nclass Runner:",
        "import math\nfrom collections import deque\n\n\n# remembers things\nclass Memory:\n"
        "    def __init__(self):\n        self.seen = deque()\n\n\nclass Runner:")


def test_new_helper_class_when_runner_comes_first():
    bare = "class Runner:\n    def __init__(self, config):\n        pass\n"
    out = apply_patch(bare, patch("new_helper_class", "import heapq\nclass Probe:\n    pass\n"))
    assert out == "import heapq\n\n\nclass Probe:\n    pass\n\n\n" + bare


def test_new_method_is_appended_to_runner():
    code = "    def helper(self, x):\n        return x + 1\n"  # indented, as an LLM may send it
    out = apply_patch(RUNNER, patch("new_method", code))
    assert out == RUNNER.replace(
        "        return candidates[0]\n",
        "        return candidates[0]\n\n    def helper(self, x):\n        return x + 1\n")


def test_replace_method_keeps_the_comment_above():
    code = "def select(self, ctx, candidates):\n    return candidates[-1]\n"
    out = apply_patch(RUNNER, patch("replace_method", code, target="select"))
    assert out == RUNNER.replace("candidates[0]", "candidates[-1]")
    assert "# ---- hooks\n    def select" in out


def test_modify_init_appends_statements_reindented():
    code = "self.n_candidates = 4\nif True:\n    self.mechanisms.append(object())\n"
    out = apply_patch(RUNNER, patch("modify_init", code))
    assert out == RUNNER.replace(
        "        self.mechanisms = []\n",
        "        self.mechanisms = []\n        self.n_candidates = 4\n        if True:\n"
        "            self.mechanisms.append(object())\n")


def test_an_import_already_present_is_not_duplicated():
    out = apply_patch(RUNNER, patch("new_helper_class", "import math\n\n\nclass Probe:\n    pass\n"))
    assert out.count("import math") == 1
    assert out == RUNNER.replace("class Runner:", "class Probe:\n    pass\n\n\nclass Runner:")


def test_patches_apply_in_sequence_and_the_result_loads(tmp_path):
    out = apply_patches(TEMPLATE, [
        patch("new_helper_class", "class Probe:\n    def focus(self, ctx):\n"
                                  "        return ctx['active'][-1:]\n"),
        patch("modify_init", "self.mechanisms.append(Probe())"),
        patch("new_method", "def last(self, candidates):\n    return candidates[-1]\n"),
        patch("replace_method", "def select(self, ctx, candidates):\n"
                                "    return self.last(candidates)\n", target="select"),
    ])
    path = tmp_path / "runner" / "runner.py"
    path.parent.mkdir()
    path.write_text(out)
    runner = load_runner(path, {})
    assert type(runner.mechanisms[0]).__name__ == "Probe"
    assert runner.focus({"active": ["A", "B"]}) == ["B"]
    assert runner.select({}, [1, 2, 3]) == 3


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("p, words", [
    (patch("replace_method", "def nope(self):\n    pass\n", target="nope"),
     "'nope' matched 0 times"),
    (patch("replace_method", "def sel(self):\n    pass\n", target="select"),
     "defines 'sel', but the target is 'select'"),
    (patch("new_method", "def select(self, ctx, c):\n    pass\n"),
     "already has a method 'select'"),
    (patch("new_method", "def helper(ctx):\n    pass\n"), "must take `self`"),
    (patch("new_method", "x = 1\n"), "exactly one `def`"),
    (patch("new_method", "def a(self):\n    pass\ndef b(self):\n    pass\n"), "exactly one `def`"),
    (patch("new_helper_class", "class Other:\n    pass\n"),
     "named 'Other', but the mechanism is 'Probe'"),
    (patch("new_helper_class", "class Probe:\n    pass\nclass Two:\n    pass\n"),
     "exactly one class definition"),
    (patch("new_helper_class", "def Probe():\n    pass\n"), "exactly one class definition"),
    (patch("new_helper_class", "class Probe:\n    pass\nx = Probe()\n"),
     "exactly one class definition"),
    (patch("new_helper_class", "class Runner:\n    pass\n", name="Runner"), "cannot be named Runner"),
    (patch("new_helper_class", "class Probe:\n    pass\n", name="Probe"), None),
    (patch("new_helper_class", "class Probe(:\n"), "does not parse"),
    (patch("modify_init", "self.x = (\n"), "does not parse"),
])
def test_refusals(p, words):
    if words is None:  # a fresh name is fine: the control case
        assert "class Probe" in apply_patch(RUNNER, p)
        return
    with pytest.raises(PatchError, match=words):
        apply_patch(RUNNER, p)


def test_refuses_a_name_the_module_already_binds():
    once = apply_patch(RUNNER, patch("new_helper_class", "class Probe:\n    pass\n"))
    with pytest.raises(PatchError, match="already defines 'Probe'"):
        apply_patch(once, patch("new_helper_class", "class Probe:\n    x = 1\n"))


def test_refuses_zero_or_two_runner_classes_and_a_missing_init():
    two = RUNNER + "\n\nclass Runner:\n    pass\n"
    for p in (patch("modify_init", "self.x = 1"), patch("new_helper_class", "class Probe:\n  x=1")):
        with pytest.raises(PatchError, match="'Runner' matched 2 times"):
            apply_patch(two, p)
    with pytest.raises(PatchError, match="'Runner' matched 0 times"):
        apply_patch("x = 1\n", patch("new_method", "def f(self):\n    pass\n"))
    no_init = "class Runner:\n    def select(self, ctx, c):\n        return c[0]\n"
    with pytest.raises(PatchError, match="__init__ matched 0 times"):
        apply_patch(no_init, patch("modify_init", "self.x = 1"))


def test_a_refused_patch_in_a_sequence_returns_nothing():
    with pytest.raises(PatchError, match="replace_method nope"):
        apply_patches(RUNNER, [patch("modify_init", "self.x = 1"),
                               patch("replace_method", "def nope(self):\n    pass\n", target="nope")])


def test_new_method_names():
    patches = [patch("new_helper_class", "class Probe:\n    pass\n"),
               patch("new_method", "def helper(self):\n    pass\n")]
    assert new_method_names(patches) == ("helper",)


# -- the catalog ---------------------------------------------------------------------------------


def test_catalog_holds_the_papers_three_mechanisms():
    mechs = {m.name: m for m in catalog()}
    assert set(mechs) == {"TabuList", "ParameterBandit", "OrthogonalExploration"}
    assert mechs["TabuList"].domain == "combinatorial optimization"
    assert mechs["ParameterBandit"].domain == "multi-armed bandits"
    assert mechs["OrthogonalExploration"].domain == "design of experiments"
    lists = load_catalog()
    assert len(lists) == 3 and all(isinstance(p, MechanismPatch) for ps in lists for p in ps)
    assert all(p.kind in KINDS and p.domain for ps in lists for p in ps)
    assert all([p.kind for p in ps] == ["new_helper_class", "modify_init"] for ps in lists)


def _ok(result):
    assert result.ok, result.describe()
    return result


@pytest.mark.parametrize("name", ["TabuList", "ParameterBandit", "OrthogonalExploration"])
def test_each_catalog_mechanism_passes_the_gate(name, tmp_path):
    mech = next(m for m in catalog() if m.name == name)
    result = _ok(run_gate(apply_patches(TEMPLATE, mech.patches), tmp_path, mechanism=name))
    assert [s.name for s in result.steps] == ["parse", "ruff", "safety", "smoke"]


def test_all_catalog_mechanisms_together_pass_the_gate(tmp_path):
    source = TEMPLATE
    for mech in catalog():
        source = apply_patches(source, mech.patches)
    _ok(run_gate(source, tmp_path, mechanism="TabuList"))


# -- each mechanism's effect ---------------------------------------------------------------------

ACTIVE = ["LR", "BATCH", "DEPTH", "WD"]


def runner_with(tmp_path, *names):
    source = TEMPLATE
    for mech in catalog():
        if mech.name in names:
            source = apply_patches(source, mech.patches)
    path = tmp_path / "runner" / "runner.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return load_runner(path, {"direction": "min"})


def rec(i, changes, status, metric=None, best=1.0):
    return {"iteration": i, "kind": "trial", "status": status, "changes": changes,
            "metric": metric, "best_before": best}


def ctx(history=(), direction="min"):
    return {"active": list(ACTIVE), "direction": direction, "history": list(history)}


def test_tabu_filters_candidates_in_a_region_that_failed(tmp_path):
    runner = runner_with(tmp_path, "TabuList")
    assert runner.n_candidates == 4
    c = ctx()
    runner.observe(c, rec(1, {"BATCH": 2**20}, "discard", 1.2))
    runner.observe(c, rec(2, {"LR": 0.01}, "crash"))
    runner.observe(c, rec(3, {"DEPTH": 8}, "keep", 0.9))
    again = {"changes": {"BATCH": 2**20}, "hypothesis": "bigger batch"}
    near = {"changes": {"LR": 0.0101, "WD": 0.1}, "hypothesis": "same lr"}
    fresh = {"changes": {"BATCH": 2**18}, "hypothesis": "smaller batch"}
    kept = {"changes": {"DEPTH": 8}, "hypothesis": "a keep is not tabu"}
    assert runner.filter_candidates(c, [again, near, fresh, kept]) == [fresh, kept]
    # all tabu: the least tabu one survives, never an empty list
    both = {"changes": {"BATCH": 2**20, "LR": 0.01}, "hypothesis": "both"}
    assert runner.filter_candidates(c, [both, again]) == [again]
    assert "Tabu" in runner.build_prompt(_prompt_ctx(c)) and "BATCH=1048576" in \
        runner.build_prompt(_prompt_ctx(c))


def test_tabu_forgets_after_its_tenure_and_a_keep_clears(tmp_path):
    runner = runner_with(tmp_path, "TabuList")
    c = ctx()
    runner.observe(c, rec(1, {"BATCH": 2**20}, "discard", 1.2))
    cand = {"changes": {"BATCH": 2**20}, "hypothesis": ""}
    other = {"changes": {"WD": 0.2}, "hypothesis": ""}
    assert runner.filter_candidates(c, [cand, other]) == [other]
    runner.observe(c, rec(2, {"BATCH": 2**20}, "keep", 0.9))
    assert runner.filter_candidates(c, [cand, other]) == [cand, other]
    runner.observe(c, rec(3, {"BATCH": 2**20}, "discard", 1.2))
    for i in range(4, 10):
        runner.observe(c, rec(i, {"WD": 0.01 * i}, "keep", 0.8))
    assert runner.filter_candidates(c, [cand]) == [cand]


def test_bandit_focuses_on_the_rewarding_parameter(tmp_path):
    runner = runner_with(tmp_path, "ParameterBandit")
    c = ctx()
    assert runner.focus(c) is None  # no data: no opinion
    best = 1.0
    for i in range(12):
        name = ACTIVE[i % 4]
        if name == "BATCH":
            runner.observe(c, rec(i, {name: 2**i}, "keep", best - 0.02, best))
            best -= 0.02
        else:
            runner.observe(c, rec(i, {name: i}, "discard", best + 0.01, best))
    assert runner.focus(c) == ["BATCH"]
    # a parameter never pulled has an infinite upper bound: it is explored first
    assert runner.focus({**c, "active": [*ACTIVE, "NEW"]}) == ["NEW"]
    # maximising: gains are metric increases
    up = runner_with(tmp_path / "max", "ParameterBandit")
    cm = ctx(direction="max")
    for i in range(8):
        name = ACTIVE[i % 4]
        metric = 1.5 if name == "LR" else 0.5
        up.observe(cm, rec(i, {name: i}, "keep" if name == "LR" else "discard", metric, 1.0))
    assert up.focus(cm) == ["LR"]


def test_orthogonal_focuses_on_untried_names(tmp_path):
    runner = runner_with(tmp_path, "OrthogonalExploration")
    history = [rec(0, {}, "baseline", 1.0), rec(1, {"LR": 0.01}, "discard", 1.1),
               rec(2, {"LR": 0.02, "BATCH": 2**18}, "keep", 0.9)]
    c = ctx(history)
    assert runner.focus(c) == ["DEPTH", "WD"]
    c = ctx([*history, rec(3, {"DEPTH": 6, "WD": 0.1}, "discard", 1.0)])
    assert runner.focus(c) == ["BATCH", "DEPTH", "WD"]  # least changed, once each
    assert "Explore these parameters next: BATCH, DEPTH, WD" in runner.build_prompt(
        _prompt_ctx(c))


def _prompt_ctx(c):
    params = [{"name": n, "value": 1, "describe": f"{n} float"} for n in ACTIVE]
    return {**c, "target_file": "train.py", "metric": "val_bpb", "baseline_metric": 1.0,
            "best_metric": 1.0, "iteration": 4, "iterations": 10, "params": params,
            "guidance": "", "target_source": "LR = 1\n", "history": c["history"]}


def test_modify_init_may_name_the_method_it_extends():
    p = MechanismPatch.from_json({"kind": "modify_init", "name": "X", "target": "__init__",
                                  "code": "self.x = 1"})
    assert p.target is None and p == MechanismPatch("modify_init", "X", None, "self.x = 1")
    with pytest.raises(PatchError, match="takes no target"):
        MechanismPatch.from_json({"kind": "modify_init", "name": "X", "target": "select",
                                  "code": "self.x = 1"})
