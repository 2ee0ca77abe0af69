"""Pruning end to end on a target that prints its learning curve: real git, real subprocesses,
the runner's own ``prune`` rule in its sandboxed worker; the proposer is the boundary fake."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import git
import optuna
import pytest
import tomlkit

from arx.core.config import resolve
from arx.core.errors import ConfigError
from arx.core.loop.driver import run_to_end
from arx.core.loop.engine import Engine
from arx.core.loop.pruning import Pruner, curve_noise
from arx.core.loop.space import ParameterSpace
from arx.core.loop.trace import TraceRecord
from arx.core.proposers.base import ProposalRequest
from arx.core.proposers.offline import OptunaProposer, _Codec, offline_proposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.proposers import Scripted
from support.repos import edit_toml, make_script_repo

CURVE = Path(__file__).parents[2] / "support" / "curve_train.py"
TEMPLATE = files("arx.runner_repo").joinpath("runner.py").read_text(encoding="utf-8")




@pytest.fixture
def curve_repo(tmp_path):
    return make_script_repo(tmp_path / "user", CURVE, locked=["EVAL_SLEEP", "EVALS", "SEED"])


def run(root, script, name="p", **flags):
    ws = open_run(root, {"iterations": len(script), "noise": "off", "verify": 0, **flags},
                  name=name)
    engine = Engine(ws, Scripted(script))
    try:
        engine.run()
    finally:
        ws.close(remove_worktree=True)
    text = git.Repo(root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return engine, [json.loads(line) for line in text.splitlines()]


def trials(events):
    return [e for e in events if e["event"] == "trial" and e["kind"] == "trial"]


def test_a_trial_behind_the_best_curve_is_pruned_and_never_committed(curve_repo):
    # LR 0.03 is 50% worse at every step; LR 0.0031 is as good as the best (kept or discarded,
    # never pruned); DEPTH 2 is 3% worse: behind by more than the margin once the best has
    # little left to gain (from step 48 on: 2% + what the best gains from there < 3%)
    engine, events = run(curve_repo, [{"LR": 0.03}, {"LR": 0.0031}, {"DEPTH": 2}])
    base = next(e for e in events if e.get("status") == "baseline")
    assert base["curve_unit"] == "step" and len(base["curve"]) == 8
    first, second, third = trials(events)
    assert first["status"] == "pruned" and first["metric"] is None
    # the budget is the best's last step (96); from 15% of it on, stopped after 3 points in a
    # row behind by more than 2% plus half what the best still gained from there: steps 24,
    # 36, 48
    assert base["curve_end"] == 96 and [p for p, _ in first["curve"]] == [12, 24, 36, 48]
    assert first["pruned_at"] == first["curve"][-1] and "pruned at step 48" in first["reason"]
    assert first["wall_s"] < base["wall_s"]
    assert second["status"] in ("discard", "keep", "no_effect") and len(second["curve"]) == 8
    assert third["status"] == "pruned"
    log = GitRepo(curve_repo).log("arx/p")
    assert not any("pruned" in c.subject for c in log)  # a pruned trial is no commit
    assert "pruned 2" in log[0].body  # the run's end says how many were stopped
    assert engine.best.iteration in (0, 2)  # a pruned trial never becomes the best


def test_in_time_mode_a_trial_behind_the_best_curve_is_pruned_before_its_budget(curve_repo):
    """--budget: the target trains for TIME_BUDGET seconds, and a trial that trails the best's
    curve is stopped well before its budget is spent."""
    engine, events = run(curve_repo, [{"LR": 0.03}, {"DEPTH": 4}], name="t", budget=0.5)
    base = next(e for e in events if e.get("status") == "baseline")
    assert base["curve_unit"] == "step" and len(base["curve"]) >= 8
    first, second = trials(events)
    assert first["status"] == "pruned" and second["status"] == "pruned"
    assert len(first["curve"]) < len(base["curve"]) / 2 and first["wall_s"] < base["wall_s"]
    assert engine.best.iteration == 0


def test_prune_off_trains_every_trial_to_the_end(curve_repo):
    _, events = run(curve_repo, [{"LR": 0.03}], name="off", prune="off")
    (first,) = trials(events)
    assert first["status"] == "discard" and len(first["curve"]) == 8


def test_the_curve_noise_is_the_spread_of_the_noise_trainings_curves():
    def rec(kind, status, curve):
        return TraceRecord({"iteration": 0, "kind": kind, "status": status, "curve": curve,
                            "curve_unit": "step"})

    records = [rec("baseline", "baseline", [[10, 2.0], [20, 1.0]]),
               rec("noise", "noise", [[10, 2.2], [30, 0.8]]),  # at 20: 1.5 (interpolated)
               rec("trial", "discard", [[10, 9.0], [20, 9.0]])]  # not a noise training
    var_10, var_20 = 0.02, 0.125  # (2.0, 2.2) and (1.0, 1.5), ddof 1
    assert curve_noise(records, "step") == pytest.approx(((var_10 + var_20) / 2) ** 0.5)
    assert curve_noise(records, "s") is None and curve_noise(records[:1], "step") is None


@pytest.mark.parametrize("direction", ["min", "max"])
def test_the_template_rule_waits_while_the_best_still_had_more_to_gain(direction):
    """The runner template's ``prune``: behind by more than 2% of the best's value plus half
    what the best still gained from that share to its end, and behind the best's result by the
    2%, at 3 points in a row past 15% of the budget; with a measured curve noise, 2 of its sds
    instead of the 2%."""
    namespace: dict = {}
    exec(compile(TEMPLATE, "runner.py", "exec"), namespace)
    runner = namespace["Runner"]({"direction": direction})
    sign = 1.0 if direction == "min" else -1.0

    def prune(curve, sd=None, result=None):
        best = [[0.1, 2.0], [0.5, 1.2], [1.0, 1.0]]
        ctx = {} if result is None else {"best_metric": sign * result}
        return runner.prune(ctx, {"curve": [[x, sign * v] for x, v in curve], "sd": sd,
                                  "unit": "step", "best": [[x, sign * v] for x, v in best]})

    # early, 0.3 behind while the best still gained 0.9, 0.8, 0.7 from there (half: 0.45,
    # 0.4, 0.35): wait
    assert not prune([[0.15, 2.2], [0.2, 2.1], [0.25, 2.0]])
    # later, 0.5, 0.44 and 0.38 behind, the best gained only 0.2, 0.16, 0.12 more (half of it
    # + 2%: 0.124, 0.103, 0.082): stop
    assert prune([[0.1, 2.5], [0.5, 1.7], [0.6, 1.6], [0.7, 1.5]])
    assert prune([[0.5, 1.7], [0.6, 1.6], [0.7, 1.5]], result=1.0)  # far behind its result too
    # the best's result (1.6) came out worse than its curve (a noisy last measurement): the
    # trial at 1.5 is not behind it, so it may still beat the best
    assert not prune([[0.5, 1.7], [0.6, 1.6], [0.7, 1.5]], result=1.6)
    assert not prune([[0.1, 2.5], [0.6, 1.6], [0.7, 1.5]])  # 2 points past 15%: not 3
    assert not prune([[0.5, 1.7], [0.6, 1.6], [0.7, 1.2]])  # the last one close (0.08 behind)
    assert not prune([[0.5, 1.7], [0.6, 1.6], [0.7, 1.5]], sd=0.3)  # 2 sds (0.6) + half the gain: within
    assert not prune([[0.5, 1.7], [0.6, 1.6], [1.1, 1.5]])  # past the best's curve


def test_the_watch_asks_at_most_once_per_percent_of_the_budget():
    asked = []

    class Judge:
        def prune(self, ctx, curves):
            asked.append(curves["curve"][-1][0])
            return False

    class Curve:
        unit, points = "step", []

    pruner = Pruner(Judge(), {}, [[0, 2.0], [1000, 1.0]], "step", 1000.0, None)
    for step in range(1, 1001):
        Curve.points = [*Curve.points, (float(step), 1.0)]
        assert pruner(Curve) is False
    n = len(asked)
    assert 90 <= n <= 100 and asked[:2] == [0.001, 0.011]
    assert all(b - a >= 0.01 - 1e-9 for a, b in zip(asked, asked[1:]))
    Curve.unit = "s"
    assert pruner(Curve) is False and len(asked) == n  # another unit: nothing to compare


def test_the_offline_proposer_learns_a_pruned_trial_as_optuna_s_pruned():
    space = ParameterSpace.from_toml(
        {"LR": {"type": "float", "value": 0.003, "low": 1e-4, "high": 0.1, "log": True}})
    history = [{"iteration": 0, "kind": "baseline", "status": "baseline", "metric": 1.0,
                "config": {"LR": 0.003}, "changes": {}},
               {"iteration": 1, "kind": "trial", "status": "pruned", "metric": None,
                "config": {"LR": 0.05}, "changes": {"LR": 0.05}, "curve_unit": "step",
                "curve": [[12, 1.9], [24, 1.6], [36, 1.5]]}]
    request = ProposalRequest(iteration=2, prompt="", active=("LR",), best_config={"LR": 0.003},
                              space=space, history=tuple(history))
    study = OptunaProposer(seed=0)._study(request, {"LR": _Codec(space.specs["LR"])}, 0)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert study.trials[1].intermediate_values == {12: 1.9, 24: 1.6, 36: 1.5}


def test_prune_reads_on_or_off_from_flags_and_toml_and_refuses_the_rest():
    doc = tomlkit.parse('[target]\nfile = "train.py"\n[run]\nprune = false\n')
    assert resolve("r", doc, {}, {}).prune == "off"
    assert resolve("r", doc, {"prune": "on"}, {}).prune == "on"
    assert resolve("r", tomlkit.parse('[target]\nfile = "train.py"\n'), {}, {}).prune == "on"
    with pytest.raises(ConfigError, match="--prune must be on or off, not 'maybe'"):
        resolve("r", doc, {"prune": "maybe"}, {})


def test_batched_trials_are_not_pruned_by_default_and_prune_on_is_refused_with_them():
    """--parallel trains candidates as a batch through an executor, with no watch on a curve:
    pruning's default is off there, and asking for it says what to change."""
    doc = tomlkit.parse('[target]\nfile = "train.py"\n')
    assert resolve("r", doc, {"parallel": 2}, {}).prune == "off"
    assert resolve("r", doc, {"executor": "ray"}, {}).prune == "off"
    assert resolve("r", doc, {"parallel": 2, "prune": "off"}, {}).prune == "off"
    with pytest.raises(ConfigError, match=r"--prune on \(from flag\) cannot stop trials") as err:
        resolve("r", doc, {"parallel": 2, "prune": "on"}, {})
    assert "--parallel 1" in err.value.hint
    toml = tomlkit.parse('[target]\nfile = "train.py"\n[run]\nprune = "on"\nparallel = 3\n')
    with pytest.raises(ConfigError, match="--parallel 3"):
        resolve("r", toml, {}, {})


@pytest.mark.serial  # timed against live processes: not beside another test's load
def test_a_kill_during_a_trial_that_is_pruned_resumes(tmp_path):
    """Real arx processes: SIGKILL while a trial that will be pruned trains, then resume."""
    root = make_script_repo(tmp_path / "k", CURVE, replace={"EVAL_SLEEP = 0.02": "EVAL_SLEEP = 0.1"},
                            locked=["DEPTH", "EVALS", "EVAL_SLEEP", "SEED", "TRAIN_STEPS",
                                    "TIME_BUDGET"])
    edit_toml(root, params={"LR": {"low": 0.03, "high": 0.3, "log": True}},  # all far worse
              run={"noise": "off", "verify": 0})
    proc = subprocess.Popen([sys.executable, "-m", "arx.cli.main", "-C", str(root), "run",
                             "--iterations", "2", "--name", "k", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = root / ".arx" / "logs" / "k" / "0001-trial.log"
    deadline = time.monotonic() + 60
    while "step 00012" not in (log.read_text() if log.exists() else ""):  # trial 1's 1st point
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # before its 3rd point, where the rule stops it
    proc.wait(timeout=30)
    ws = open_run(root, {}, resume="k")
    run_to_end(ws, offline_proposer(ws.config))
    text = git.Repo(root).git.show("arx/k:runs/k/trace.jsonl")
    recs = [e for e in map(json.loads, text.splitlines()) if e["event"] == "trial"]
    firsts = [r for r in recs if r["kind"] == "trial" and r["iteration"] == 1]
    assert [r["status"] for r in firsts] == ["interrupted", "pruned"]
    assert firsts[0]["changes"] == firsts[1]["changes"]
    assert [r["status"] for r in recs if r["iteration"] == 2] == ["pruned"]
    assert not (root / ".arx" / "pids" / "k.pid").exists()
