"""A resumed or extended run asks the same questions as an uninterrupted one (issue #16, defect
2): the baseline is in the engine's records from the start, as a resume reloads it, so the
offline proposer sees the same history either way. Runs stored before rules 3 keep their old
behaviour (tests/compat)."""

from __future__ import annotations

import pytest

from arx.core.errors import ArxError
from arx.core.loop.engine import Engine
from arx.core.loop.trace import read_trace, trace_events
from arx.core.proposers.offline import OptunaProposer, offline_proposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

T = 12


class StopAt(OptunaProposer):
    """The proposer goes away at iteration ``stop`` (an LLM endpoint gone): the run stops."""

    def __init__(self, seed, stop):
        super().__init__(seed=seed, crash_aware=True, fresh=True)  # as offline_proposer
        self.stop = stop

    def propose(self, request, feedback=None):
        if request.iteration == self.stop:
            raise ArxError("endpoint gone")
        return super().propose(request, feedback)


def run(root, flags=None, name=None, resume=None, proposer=None):
    ws = open_run(root, flags or {}, name=name, resume=resume)
    try:
        Engine(ws, proposer or offline_proposer(ws.config)).run()
    finally:
        ws.close(remove_worktree=False)


def asked(root, name):
    """Per iteration, the changes proposed (interrupted attempts left out)."""
    return {r["iteration"]: r["changes"] for r in read_trace(GitRepo(root), name)
            if r["kind"] == "trial" and r["status"] != "interrupted"}


@pytest.mark.parametrize("group,levels", [
    # group B's Level 1.5 is covered by D, which runs it and Level 2 (suite time)
    ("A", {"seed": 3, "k": 4}),
    # Level 2 every 3 iterations, judged after 3: seed 7 steps aside at cycle 1 (the search
    # gained), adds a mechanism at cycle 2 and judges it at iteration 9
    ("D", {"seed": 7, "k": 3, "m": 1, "judge_window": 3})])
def test_a_stopped_and_an_extended_run_propose_what_a_straight_run_proposes(toy_repo, group,
                                                                           levels):
    flags = {"group": group, **levels}
    run(toy_repo, {**flags, "iterations": T}, name="straight")
    # stopped at iteration 5 (nothing of it recorded), then resumed
    with pytest.raises(ArxError):
        run(toy_repo, {**flags, "iterations": T}, name="stopped",
            proposer=StopAt(flags["seed"], stop=5))
    run(toy_repo, {"iterations": T}, resume="stopped")
    # run to 4, then extended to T
    run(toy_repo, {**flags, "iterations": 4}, name="extended")
    run(toy_repo, {"iterations": T}, resume="extended")
    straight = asked(toy_repo, "straight")
    assert sorted(straight) == list(range(1, T + 1))
    assert asked(toy_repo, "stopped") == straight
    assert asked(toy_repo, "extended") == straight
    if group == "D":  # and the outer levels decided the same, Level 2's steps aside included
        decided = {n: [(e["cycle"], e["mechanism"], e["verdict"]) for e in
                       trace_events(GitRepo(toy_repo), n) if e.get("event") == "level2"]
                   for n in ("straight", "stopped", "extended")}
        assert decided["stopped"] == decided["straight"] == decided["extended"]
        cycles = {cycle for cycle, _, _ in decided["straight"]}
        assert cycles and cycles != {1, 2, 3, 4}  # it acted, and it stepped aside


def test_the_proposer_knows_the_baseline_on_a_fresh_run(toy_repo):
    """Its history starts with the baseline record, so it never proposes the baseline again."""
    seen = []

    class Spy(OptunaProposer):
        def propose(self, request, feedback=None):
            seen.append([r.get("status") for r in request.history])
            return super().propose(request, feedback)

    run(toy_repo, {"iterations": 2}, name="spy", proposer=Spy(seed=0))
    assert seen[0] == ["baseline"] and seen[1][0] == "baseline"
