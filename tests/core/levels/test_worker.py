"""arx.core.levels.worker, policy and blame: the runner in a real worker process, its answers
checked, its faults traced to a mechanism."""

from __future__ import annotations

import time
from importlib.resources import files

import pytest

from arx.core.errors import ProposalError
from arx.core.execution.process import group_alive
from arx.core.levels.blame import patched_methods, responsible
from arx.core.levels.mechanism import Mechanism, MechanismPatch, apply_patches, catalog
from arx.core.levels.mechanism_state import MechanismRecord
from arx.core.levels.policy import MAX_CANDIDATES, NO_PROGRESS, RunnerPolicy
from arx.core.levels.worker import MechanismFault
from arx.core.states import MechanismState

TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")
ACTIVE = ["LR", "DEPTH"]


def ctx(i=1, **extra):
    base = {"iteration": i, "iterations": 5, "run": "r", "target_file": "t.py",
            "target_source": "LR = 0.1\n", "metric": "m", "direction": "min",
            "baseline_metric": 1.0, "best_metric": 1.0, "best_iteration": 0,
            "best_config": {"LR": 0.1, "DEPTH": 2}, "active": list(ACTIVE), "frozen": [],
            "guidance": "", "history": [],
            "params": [{"name": n, "kind": "float", "value": 1, "describe": n, "locked": False,
                        "frozen": False} for n in ACTIVE]}
    return {**base, **extra}


def validate(changes, current, frozen):
    for name, value in changes.items():
        if name not in ACTIVE or name in frozen:
            raise ProposalError(f"{name} is not active", "unknown")
        if not 0 < value < 10:
            raise ProposalError(f"{name}={value} out of range", "range")
    return dict(changes)


def with_class(code, init=None, name="M"):
    return apply_patches(TEMPLATE, [
        MechanismPatch("new_helper_class", name, None, code),
        MechanismPatch("modify_init", name, None, init or f"self.mechanisms.append({name}())")])


def policy(source=TEMPLATE, deadline=1.0, **config):
    return RunnerPolicy.start(source, {"direction": "min", **config}, validate,
                              deadline_s=deadline)


def test_the_template_answers_every_hook_through_the_worker():
    p = policy()
    try:
        assert p.n_candidates == 1 and p.focus(ctx()) is None
        assert "Parameters you may change" in p.build_prompt(ctx())
        cands = [{"changes": {"LR": 0.2}, "hypothesis": "h"}]
        kept = p.filter_candidates(ctx(), cands)
        assert p.select(ctx(), kept) is kept[0] and p.dropped(1) == {}
        assert p.confirm_seeds(ctx(), 0.9, 1.0) == 0
        assert p.accept(ctx(), [0.9], [1.0]) is True and p.accept(ctx(), [1.1], [1.0]) is False
        p.observe(ctx(), {"iteration": 1, "kind": "trial", "status": "keep"})
    finally:
        p.close()


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_deadline_kills_the_whole_group_and_names_the_mechanism():
    source = with_class("import itertools\n\n\nclass M:\n    def focus(self, ctx):\n"
                        "        return [max(itertools.count())]\n")
    p = policy(source)
    pid = p.worker.proc.pid
    start = time.monotonic()
    with pytest.raises(MechanismFault) as caught:
        p.focus(ctx())
    assert time.monotonic() - start < 3
    fault = caught.value
    assert (fault.kind, fault.hook, fault.mechanism) == ("deadline", "focus", "M")
    assert "while M.focus ran" in fault.error
    assert not group_alive(pid) and not p.worker.alive


def test_an_exception_names_the_mechanism_and_its_frames():
    source = with_class("class M:\n    def observe(self, ctx, record):\n        self.boom()\n\n"
                        "    def boom(self):\n        raise KeyError('x')\n")
    p = policy(source)
    with pytest.raises(MechanismFault) as caught:
        p.observe(ctx(), {"iteration": 1})
    fault = caught.value
    assert (fault.kind, fault.mechanism) == ("exception", "M")
    assert [f[0] for f in fault.frames] == ["Runner.observe", "M.observe", "M.boom"]
    assert "KeyError: 'x'" in fault.error


@pytest.mark.parametrize("hook, code, words", [
    ("focus", "def focus(self, ctx):\n    return ['SEED']\n", "not active parameters"),
    ("focus", "def focus(self, ctx):\n    return 'LR'\n", "expected None or a list"),
    ("build_prompt", "def build_prompt(self, ctx):\n    return 'x' * 500_000\n", "more than"),
    ("accept", "def accept(self, ctx, metrics, best_metrics):\n    return 1\n", "expected a bool"),
    ("confirm_seeds", "def confirm_seeds(self, ctx, metric, best):\n    return 99\n", "[0, 8]"),
    ("select", "def select(self, ctx, candidates):\n    return {'changes': {}}\n", "not one of"),
    ("filter_candidates", "def filter_candidates(self, ctx, candidates):\n    return {1}\n",
     "not JSON data"),
])
def test_invalid_answers_are_faults(hook, code, words):
    source = apply_patches(TEMPLATE, [MechanismPatch("replace_method", "Bad", hook, code)])
    p = policy(source)
    args = {"focus": (), "build_prompt": (), "accept": ([0.9], [1.0]),
            "confirm_seeds": (0.9, 1.0), "select": ([{"changes": {"LR": 1}}],),
            "filter_candidates": ([{"changes": {"LR": 1}}],)}[hook]
    with pytest.raises(MechanismFault) as caught:
        getattr(p, hook)(ctx(), *args)
    assert caught.value.hook == hook and words in caught.value.error
    assert not p.worker.alive


def test_candidates_a_runner_makes_must_pass_the_space_and_are_counted_when_dropped():
    source = with_class("class M:\n    def filter_candidates(self, ctx, candidates):\n"
                        "        return candidates + [{'changes': {'LR': 50}}, "
                        "{'changes': {'NOPE': 1}}, {'changes': {'DEPTH': 3}}]\n")
    p = policy(source)
    try:
        given = [{"changes": {"LR": 99}, "hypothesis": "the proposer's own, left to the engine"}]
        kept = p.filter_candidates(ctx(), given)
        assert [c["changes"] for c in kept] == [{"LR": 99}, {"DEPTH": 3}]
        assert p.last_dropped == 2 and p.dropped(1) == {"dropped": 2}
    finally:
        p.close()


def test_n_candidates_is_capped_and_must_be_an_int():
    p = policy(with_class("class M:\n    pass\n", "self.n_candidates = 10**7\n"
                                                 "self.mechanisms.append(M())"))
    assert p.n_candidates == MAX_CANDIDATES
    p.close()
    with pytest.raises(MechanismFault, match="not an int"):
        policy(with_class("class M:\n    pass\n", "self.n_candidates = '4'"))


def test_a_runner_that_filters_everything_out_is_a_fault_after_some_iterations():
    source = with_class("class M:\n    def filter_candidates(self, ctx, candidates):\n"
                        "        return []\n")
    p = policy(source)
    for i in range(1, NO_PROGRESS):
        assert p.filter_candidates(ctx(i), [{"changes": {"LR": 1}}]) == []
        assert p.filter_candidates(ctx(i), [{"changes": {"LR": 2}}]) == []  # the re-ask
    with pytest.raises(MechanismFault) as caught:
        p.filter_candidates(ctx(NO_PROGRESS), [{"changes": {"LR": 1}}])
    assert (caught.value.kind, caught.value.mechanism) == ("no_progress", "M")


def test_the_worker_works_on_a_copy_of_the_context():
    source = with_class("class M:\n    def observe(self, ctx, record):\n"
                        "        ctx['history'].clear()\n        record.clear()\n")
    p = policy(source)
    try:
        c = ctx(history=[{"iteration": 0, "status": "baseline"}])
        record = {"iteration": 1, "status": "keep"}
        p.observe(c, record)
        assert c["history"] == [{"iteration": 0, "status": "baseline"}]
        assert record == {"iteration": 1, "status": "keep"}
    finally:
        p.close()


def test_the_history_is_sent_once_and_each_context_sees_all_of_it():
    """arx sends a context's history only from the records the worker does not hold (the
    history grows each iteration); the hooks still see all of it, and a hook that edits its
    copy changes nothing the next context shows."""
    source = with_class(
        "class M:\n    def build_prompt(self, ctx):\n"
        "        seen = [r['iteration'] for r in ctx['history']]\n"
        "        for r in ctx['history']:\n            r['iteration'] = -1\n"
        "        ctx['history'].clear()\n        return repr(seen)\n",
        init="self.mechanisms.append(M())\n"
             "self.build_prompt = self.mechanisms[-1].build_prompt")
    p = policy(source)
    sent = []
    request = p.worker.request

    def spy(message, hook):
        sent.append(message.get("ctx", {}))
        return request(message, hook)

    p.worker.request = spy
    try:
        history = [{"iteration": 0, "status": "baseline"}]
        for i in range(1, 5):
            c = ctx(i, history=[dict(r) for r in history])
            assert p.build_prompt(c) == repr(list(range(i)))
            history.append({"iteration": i, "status": "discard"})
        assert "history" in sent[0] and "history_tail" not in sent[0]
        later = [m for m in sent[1:] if m]
        assert later and all("history" not in m and len(m["history_tail"]) == 1
                             for m in later)
    finally:
        p.close()


def test_a_runner_that_does_not_construct_is_a_load_fault():
    source = with_class("class M:\n    def __init__(self, config):\n"
                        "        raise ValueError(config['group'])\n",
                        "self.mechanisms.append(M(config))")
    with pytest.raises(MechanismFault) as caught:
        policy(source, group="A")
    fault = caught.value
    assert (fault.kind, fault.hook) == ("load", "__init__")
    assert ["M.__init__"] == [f[0] for f in fault.frames if f[0].startswith("M.")]


# ---- blame -------------------------------------------------------------------------------------


def record(name, methods=None, position=0):
    event = {"mechanism": name, **({"methods": methods} if methods is not None else {})}
    return MechanismRecord(name, MechanismState.ACTIVE, "manual", "d", None, 1, f"sha-{name}",
                           event, position)


def test_blame_prefers_what_the_worker_saw_then_the_frames_then_the_owner_of_the_hook():
    older, newer = record("Older", ["__init__"], 0), record("Newer", ["__init__", "select"], 1)
    active = [older, newer]
    assert responsible(MechanismFault("observe", "e", mechanism="Older"), active) is older
    frames = (("Runner.observe", "hook(ctx, record)"), ("Older.observe", "raise X"))
    assert responsible(MechanismFault("observe", "e", frames=frames), active) is older
    line = (("Runner.__init__", "self.mechanisms.append(Older(config))"),)
    assert responsible(MechanismFault("__init__", "e", "load", frames=line), active) is older
    assert responsible(MechanismFault("select", "e", "invalid"), active) is newer
    assert responsible(MechanismFault("accept", "Older did it"), active) is older
    assert responsible(MechanismFault("accept", "?"), active) is newer
    legacy = [record("Old"), record("Older2")]  # level2 events before `methods` existed
    assert responsible(MechanismFault("select", "?"), legacy) is legacy[-1]


def test_patched_methods_of_the_catalog_and_of_patch_kinds():
    assert all(patched_methods(m.patches) == ["__init__"] for m in catalog())
    mech = Mechanism.from_json({"name": "X", "patches": [
        {"kind": "new_method", "name": "X", "target": None, "code": "def helper(self):\n    pass\n"},
        {"kind": "replace_method", "name": "X", "target": "select",
         "code": "def select(self, ctx, candidates):\n    return candidates[0]\n"}]})
    assert patched_methods(mech.patches) == ["helper", "select"]
