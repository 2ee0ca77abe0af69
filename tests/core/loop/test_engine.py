"""The Level 1 loop end to end on the toy target: real git, real subprocess trials, real libcst.

The only fake is ``ScriptedProposer`` (the proposer boundary), used where a test needs a specific
proposal; the offline Optuna proposer is used as-is elsewhere.
"""

from __future__ import annotations

import json
import subprocess

import git
import pytest

from arx.core.app.runs import run_status
from arx.core.codemods.constants import discover_constants
from arx.core.loop.engine import Engine, RunError
from arx.core.proposers.base import Proposal, Proposer
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.repos import edit_toml


class ScriptedProposer(Proposer):
    """Boundary fake: returns the given change dicts in order, one per call."""

    name = "scripted"

    def __init__(self, script):
        self.script = list(script)
        self.calls = []

    def propose(self, request, feedback=None):
        self.calls.append((request.iteration, feedback))
        changes = self.script.pop(0)
        return [Proposal(changes=changes, hypothesis=f"try {changes}", source=self.name)]


def run_engine(root, proposer, **flags):
    name = flags.pop("name", "t")
    ws = open_run(root, {"iterations": 5, **flags}, name=name)
    engine = Engine(ws, proposer)
    try:
        engine.run()
    finally:
        ws.close(remove_worktree=True)
    return engine


def trace_of(root, name):
    text = git.Repo(root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return [json.loads(line) for line in text.splitlines()]


def test_offline_run_improves_and_commits_keeps_with_trailers(toy_repo):
    before_head = git.Repo(toy_repo).head.commit.hexsha
    before_files = {p.name: p.read_bytes() for p in toy_repo.iterdir() if p.is_file()}
    engine = run_engine(toy_repo, OptunaProposer(seed=1), iterations=30, name="opt")

    records = [r for r in trace_of(toy_repo, "opt") if r["event"] == "trial"]
    trials = [r for r in records if r["kind"] == "trial"]
    assert [r["iteration"] for r in trials] == list(range(1, 31))
    base = records[0]
    assert base["status"] == "baseline" and base["metric"] == pytest.approx(2.235125)
    keeps = [r for r in trials if r["status"] == "keep"]
    assert keeps, "the offline search found no improvement on an easy analytic target"
    assert engine.best.metric < base["metric"] - 0.1
    # each keep is strictly better than the best before it
    for k in keeps:
        assert k["metric"] < k["best_before"]

    log = GitRepo(toy_repo).log("arx/opt")
    subjects = [c.subject for c in log]
    assert subjects[-1] == "user's first commit"
    assert any(s.startswith("baseline: val_bpb 2.235125") for s in subjects)
    keep_commits = [c for c in log if c.trailers.get("Arx-Status") == "keep"]
    assert len(keep_commits) == len(keeps)
    newest = keep_commits[0]
    assert newest.subject.startswith(f"L1 #{keeps[-1]['iteration']} keep ")
    assert newest.trailers["Arx-Run"] == "opt"
    assert float(newest.trailers["Arx-Metric"]) == pytest.approx(keeps[-1]["metric"], abs=1e-6)
    assert json.loads(newest.trailers["Arx-Changes"]) == keeps[-1]["changes"]
    assert log[0].trailers["Arx-Level"] == "end"
    # the branch's train.py holds the best config, comments intact
    final = git.Repo(toy_repo).git.show("arx/opt:train.py")
    values = {c.name: c.value for c in discover_constants(final)}
    for name, value in keeps[-1]["config"].items():
        assert values[name] == (tuple(value) if isinstance(value, list) else value), name
    assert "# learning rate; best near 0.003" in final

    # the user's checkout is untouched
    repo = git.Repo(toy_repo)
    assert repo.head.commit.hexsha == before_head
    assert not repo.is_dirty(untracked_files=True)
    assert {p.name: p.read_bytes() for p in toy_repo.iterdir() if p.is_file()} == before_files
    assert run_status(GitRepo(toy_repo), "opt").state == "finished"


def test_same_seed_gives_same_proposals(toy_repo):
    a = run_engine(toy_repo, OptunaProposer(seed=3), iterations=6, name="s1")
    b = run_engine(toy_repo, OptunaProposer(seed=3), iterations=6, name="s2")
    changes = lambda eng: [r.changes for r in eng.records if r.kind == "trial"]  # noqa: E731
    assert changes(a) == changes(b)
    assert a.best.metric == b.best.metric


def test_failed_trials_are_recorded_and_the_loop_goes_on(toy_repo):
    edit_toml(toy_repo, params={"MODE": {"choices": ["ok", "crash", "hang", "nan", "nometric",
                                                     "fail"]}},
              target={"timeout_margin": 1.5}, locked=["SEED", "TIME_BUDGET", "TRAIN_STEPS"])
    script = [{"MODE": m} for m in ("crash", "hang", "nan", "nometric", "fail")]
    script.append({"LR": 0.005})
    engine = run_engine(toy_repo, ScriptedProposer(script), iterations=6, name="bad")
    statuses = [(r.iteration, r.state.value) for r in engine.records if r.kind == "trial"]
    assert statuses == [(1, "crash"), (2, "timeout"), (3, "nan"), (4, "no_metric"),
                        (5, "fail"), (6, "keep")]
    crash = engine.records[1]
    assert "toy crash on purpose" in crash.get("log_tail")
    assert "timed out" in engine.records[2].get("reason")
    # failed configs never reach the branch: only the LR keep is committed
    final = git.Repo(toy_repo).git.show("arx/bad:train.py")
    assert 'MODE = "ok"' in final and "LR = 0.005" in final


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"NOPE": 1}, "unknown"),
        ({"MODE": "crash"}, "locked"),
        ({"DEPTH": "deep"}, "type"),
        ({"LR": 50.0}, "range"),
        ({"DEPTH": 6}, "noop"),
        ({}, "empty"),
    ],
)
def test_bad_proposals_are_refused_reasked_once_and_recorded(toy_repo, changes, reason):
    proposer = ScriptedProposer([changes, changes])
    engine = run_engine(toy_repo, proposer, iterations=1, name="refuse")
    rec = engine.records[-1]
    assert rec.state.value == "invalid_proposal"
    assert [r["reason"] for r in rec.get("refusals")] == [reason, reason]
    # the re-ask carried the reason
    assert proposer.calls[0][1] is None and reason in proposer.calls[1][1]
    # nothing was applied: the branch's train.py is the baseline's
    repo = git.Repo(toy_repo)
    base = repo.git.show("arx/refuse~1:train.py")
    assert repo.git.show("arx/refuse:train.py") == base


def test_reask_recovers_when_the_second_answer_is_valid(toy_repo):
    proposer = ScriptedProposer([{"LR": 99.0}, {"LR": 0.004}])
    engine = run_engine(toy_repo, proposer, iterations=1, name="reask")
    rec = engine.records[-1]
    assert rec.state.value == "keep"
    assert rec.get("refusals")[0]["reason"] == "range"


def test_baseline_failure_stops_with_a_clear_error(toy_repo):
    edit_toml(toy_repo, target={"command": "python -c 'import sys; sys.exit(3)'"})
    with pytest.raises(RunError, match="baseline trial failed"):
        run_engine(toy_repo, OptunaProposer(), iterations=2, name="nobase")


def test_budget_flag_sets_the_budget_constant_in_the_baseline_commit(toy_repo):
    run_engine(toy_repo, OptunaProposer(), iterations=1, budget=0.02, name="budget")
    repo = git.Repo(toy_repo)
    baseline = next(c for c in repo.iter_commits("arx/budget") if c.summary.startswith("baseline"))
    source = repo.git.show(f"{baseline.hexsha}:train.py")
    assert "TIME_BUDGET = 0.02" in source and "TRAIN_STEPS = 0" in source


def test_confirm_reruns_a_would_be_keep_with_more_seeds(toy_repo):
    proposer = ScriptedProposer([{"LR": 0.01}, {"DEPTH": 5}])
    engine = run_engine(toy_repo, proposer, iterations=2, confirm=2, name="conf")
    confirms = [r for r in engine.records if r.kind == "confirm"]
    # iteration 1: 2 seeds for the candidate and 2 for the best; iteration 2: the new best's
    # seeds again (new best), candidate's 2
    assert len(confirms) == 8
    assert {r.get("seed") for r in confirms} == {1, 2}
    kept = [r for r in engine.records if r.state.value == "keep"]
    assert len(kept[0].get("confirm_metrics")) == 2


def test_a_second_process_on_the_same_run_is_refused(toy_repo):
    from arx.core.errors import RunLockedError

    ws = open_run(toy_repo, {"iterations": 1}, name="locked")
    try:
        proc = subprocess.run(["arx", "-C", str(toy_repo), "run", "--resume", "locked"],
                              capture_output=True, text=True)
        assert proc.returncode != 0
        assert "already in use" in proc.stderr
        with pytest.raises(RunLockedError):
            open_run(toy_repo, {}, resume="locked")
    finally:
        ws.close(remove_worktree=True)


def test_rebaseline_remeasures_the_best_and_records_the_drift(toy_repo):
    proposer = ScriptedProposer([{"LR": 0.01}, {"DEPTH": 5}, {"DEPTH": 9}, {"DEPTH": 8}])
    engine = run_engine(toy_repo, proposer, iterations=4, rebaseline=2, budget=0.01,
                        name="reb")
    rebases = [r for r in engine.records if r.kind == "rebaseline"]
    assert [r.iteration for r in rebases] == [3]  # before iteration 3 (every 2 iterations)
    rec = rebases[0]
    assert rec.state.value == "rebaseline" and rec.metric is not None
    assert rec.get("best_before") == pytest.approx(rec.metric, abs=1e-9)  # toy is deterministic
    # the re-measured config is the best at that time
    best_at_3 = [r for r in engine.records if r.state.value in ("baseline", "keep")
                 and r.iteration < 3][-1]
    assert rec.get("config") == best_at_3.get("config")
