"""A cadence that fits the budget (rules >= 7, issue #26): the judge window follows
``--iterations`` unless it is set, a Level-2 cycle too late for its mechanism to be judged adds
none, and a window that ends with the run is judged at its end, so every mechanism installed is
judged within the run."""

from __future__ import annotations

import pytest

from arx.core.config import CURRENT_RULES, judge_window_for, resolve
from arx.core.levels.outcome import too_late
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run

from support.repos import make_toy_repo

DOC = {"target": {"file": "train.py", "command": "python train.py"}}


def test_the_judge_window_follows_the_iterations_unless_set():
    assert [judge_window_for(n) for n in (12, 24, 30, 45, 60, 200)] == [4, 4, 5, 7, 10, 10]
    thirty = resolve("r", DOC, {"iterations": 30}, env={})
    assert CURRENT_RULES >= 7  # a new run has the cadence of rules 7
    assert (thirty.rules, thirty.judge_window, thirty.sources["judge_window"]) == \
        (CURRENT_RULES, 5, "default")
    assert resolve("r", {**DOC, "levels": {"judge_window": 10}}, {"iterations": 30},
                   env={}).judge_window == 10  # set in arx.toml: kept
    assert resolve("r", DOC, {"iterations": 30, "judge_window": 0}, env={}).judge_window == 0
    assert resolve("r", DOC, {"iterations": 30}, env={"ARX_JUDGE_WINDOW": "8"}).judge_window == 8
    # with the default cadence (k = 5, m = 2) a 30-iteration run has Level-2 cycles after
    # iterations 10 and 20 (cycle c runs before iteration c k + 1 <= 30): both judgeable
    cycles = [c * thirty.k for c in range(1, 7) if c % thirty.m == 0 and c * thirty.k < 30]
    assert cycles == [10, 20]
    assert not any(too_late(t, thirty.judge_window, 30) for t in cycles)
    assert too_late(20, 10, 29) and not too_late(20, 10, 30)
    # the stall that calls for Level 2 is still measured over 10 iterations unless W is set
    assert (thirty.stall_window, resolve("r", DOC, {"iterations": 30, "judge_window": 3},
                                         env={}).stall_window) == (10, 3)


def run_d(root, seed):
    """Group D, 5 iterations, a Level-2 cycle every 2 (k = 2, m = 1), judged after 3, stepping
    aside while the search gains; its level2 and step_aside events."""
    ws = open_run(root, {"iterations": 5, "group": "D", "k": 2, "m": 1, "judge_window": 3,
                         "seed": seed}, name=f"s{seed}")
    try:
        engine = Engine(ws, offline_proposer(ws.config))
        engine.run()
        return engine.trace.notes("level2"), engine.trace.notes("step_aside")
    finally:
        ws.close(remove_worktree=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_repo(tmp_path_factory.mktemp("cadence") / "project")


def test_a_window_that_ends_with_the_run_is_judged_at_its_end(toy):
    """Seed 1: iterations 1-2 stall, a mechanism is added after 2; its window 3-5 ends with
    the run, which judges it (no iteration 6 asks)."""
    notes, _ = run_d(toy, 1)
    installed = [(n["iteration"], n["mechanism"]) for n in notes if n["verdict"] == "pass"]
    assert [at for at, _ in installed] == [2]
    judged = {n["mechanism"]: n["iteration"] for n in notes
              if n["verdict"] in ("kept", "no_benefit")}
    assert judged == {installed[0][1]: 5}


def test_a_cycle_too_late_for_its_mechanism_to_be_judged_steps_aside(toy):
    """Seed 6: iterations 2-4 stall, but a mechanism added after 4 could not run 3 iterations
    in a 5-iteration run: Level 2 steps aside and says why."""
    notes, asides = run_d(toy, 6)
    assert notes == []
    assert [(a["cycle"], a["iteration"]) for a in asides] == [(1, 2), (2, 4)]
    assert asides[0]["reason"].startswith("the search is progressing")
    assert asides[1]["reason"] == ("too late to judge a mechanism (its 3 iterations would end "
                                   "after the run's last iteration, 5)")
