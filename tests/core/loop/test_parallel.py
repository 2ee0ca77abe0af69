"""--parallel N: candidates of one iteration train at once through an executor (local slots here,
Ray in test_executor.py); the best that beats the current best is the one commit."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import git
import pytest

from arx.core.execution.local import LocalExecutor
from arx.core.loop.engine import Engine
from arx.core.loop.trials import default_executor
from arx.core.proposers.base import Proposal, Proposer
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

# serial: (pytest -m serial) a local Ray cluster, a worker killed mid-trial; not beside another test's load (README)
pytestmark = pytest.mark.serial


class Batches(Proposer):
    """Boundary fake: returns a fixed batch of candidates per call."""

    name = "scripted"

    def __init__(self, batches):
        self.batches = list(batches)

    def propose(self, request, feedback=None):
        return [Proposal(changes=c, hypothesis=f"try {c}") for c in self.batches.pop(0)]


def run(root, proposer, name, **flags):
    ws = open_run(root, {"iterations": 2, "parallel": 2, **flags}, name=name)
    engine = Engine(ws, proposer, executor=default_executor(ws))
    try:
        engine.run()
    finally:
        engine.executor.close()
        ws.close(remove_worktree=True)
    return engine


def test_two_candidates_train_at_once_and_the_best_is_the_one_commit(toy_repo):
    proposer = Batches([[{"LR": 0.01}, {"LR": 0.004}], [{"DEPTH": 8}, {"DEPTH": 9}]])
    engine = run(toy_repo, proposer, "par", budget=1.0)
    trials = [r for r in engine.records if r.kind == "trial"]
    first = [r for r in trials if r.iteration == 1]
    assert sorted(r.get("seq") for r in first) == [0, 1]
    (a0, a1, _), (b0, b1, _) = (r.get("interval") for r in first)
    assert a0 < b1 and b0 < a1, "the two trials did not overlap in time"
    by_lr = {r.changes["LR"]: r for r in first}
    assert by_lr[0.004].state.value == "keep" and by_lr[0.01].state.value == "discard"
    assert by_lr[0.01].get("note") == "not the best of its batch"
    # iteration 2: both worse than the best -> two discards, no commit
    assert {r.state.value for r in trials if r.iteration == 2} == {"discard"}
    keeps = [c for c in GitRepo(toy_repo).log("arx/par") if c.trailers.get("Arx-Status") == "keep"]
    assert [c.trailers["Arx-Iteration"] for c in keeps] == ["1"]
    assert "LR = 0.004" in git.Repo(toy_repo).git.show("arx/par:train.py")


def test_a_killed_worker_is_a_trial_status_and_the_run_goes_on(toy_repo):
    proposer = Batches([[{"LR": 0.01}, {"LR": 0.004}], [{"DEPTH": 4}, {"DEPTH": 5}]])
    pid_dir = toy_repo / ".arx" / "pids" / "kill"

    def killer():  # SIGKILL one slot's trial while both train
        deadline = time.time() + 30
        while time.time() < deadline:
            files = sorted(pid_dir.glob("slot-*.pid")) if pid_dir.exists() else []
            if len(files) == 2:
                time.sleep(0.3)
                os.killpg(json.loads(files[0].read_text())["pgid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    engine = run(toy_repo, proposer, "kill", budget=2.0)
    thread.join()
    first = [r for r in engine.records if r.kind == "trial" and r.iteration == 1]
    states = sorted(r.state.value for r in first)
    assert "crash" in states, states
    crashed = next(r for r in first if r.state.value == "crash")
    assert "SIGKILL" in crashed.get("reason")
    assert [r.iteration for r in engine.records if r.kind == "trial"].count(2) == 2


def test_offline_proposer_fills_a_batch_with_distinct_candidates(toy_repo):
    engine = run(toy_repo, OptunaProposer(seed=4), "opt", iterations=4)
    trials = [r for r in engine.records if r.kind == "trial"]
    assert len(trials) == 8
    for i in range(1, 5):
        batch = [r.changes for r in trials if r.iteration == i]
        assert len(batch) == 2 and batch[0] != batch[1]


def test_local_executor_is_the_default_for_parallel(toy_repo):
    ws = open_run(toy_repo, {"iterations": 0, "parallel": 3}, name="d")
    try:
        executor = default_executor(ws)
        assert isinstance(executor, LocalExecutor) and executor.slots == 3
        assert executor.pid_path(0) == toy_repo / ".arx" / "pids" / "d" / "slot-0.pid"
        executor.close()
        assert Engine(ws, OptunaProposer()).executor is None  # the engine is handed its parts
    finally:
        ws.close(remove_worktree=True)


def test_parallel_candidates_on_a_local_ray_cluster(toy_repo):
    ray = __import__("pytest").importorskip("ray")
    from arx.core.execution.ray import RayExecutor

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        proposer = Batches([[{"LR": 0.01}, {"LR": 0.004}]])
        ws = open_run(toy_repo, {"iterations": 1, "parallel": 2, "executor": "ray",
                                 "budget": 1.0}, name="ray")
        executor = RayExecutor(slots=2, log_dir=ws.log_dir)
        engine = Engine(ws, proposer, executor=executor)
        try:
            engine.run()
        finally:
            executor.close()
            ws.close(remove_worktree=True)
    finally:
        if started_here:
            ray.shutdown()
    first = [r for r in engine.records if r.kind == "trial"]
    (a0, a1, wa), (b0, b1, wb) = (r.get("interval") for r in first)
    assert a0 < b1 and b0 < a1 and wa.startswith("ray:") and wb.startswith("ray:")
    assert sorted(r.state.value for r in first) == ["discard", "keep"]
    assert "LR = 0.004" in git.Repo(toy_repo).git.show("arx/ray:train.py")
