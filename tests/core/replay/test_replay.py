"""Replay end to end: real runs on the toy target (offline and against the scripted LLM server),
replayed from their base commit; tampering with the branch is found at the right step.

Each finished run is made once per module and copied for every test that changes it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys

import git
import pytest

from arx.core.app.scaffold import init_repo
from arx.core.codemods.constants import apply_changes
from arx.core.errors import TraceError
from arx.core.llm.client import ChatClient
from arx.core.llm.settings import resolve_llm
from arx.core.loop.driver import run_to_end
from arx.core.loop.engine import Engine
from arx.core.proposers.llm import LLMProposer
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.retrain import judge
from arx.core.replay.run import ReplayError, replay
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.llm_server import LLMServer
from support.repos import edit_toml, identify, make_toy_repo
from support.scripted_model import responder


def finished_run(root, name, flags):
    ws = open_run(root, flags, name=name)
    run_to_end(ws, offline_proposer(ws.config))
    return root


def copy_of(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def trace_lines(root, name, rev=None):
    text = git.Repo(root).git.show(f"{rev or 'arx/' + name}:runs/{name}/trace.jsonl")
    return [json.loads(line) for line in text.splitlines()]


def commit_on_branch(root, branch, edit, message="hand edit", amend=False):
    """Check the branch out in the (copied) user checkout, change a file, commit."""
    repo = git.Repo(root)
    repo.git.checkout(branch)
    edit(root)
    repo.git.add("-A")
    if amend:
        repo.git.commit("--amend", "--no-edit", "--no-verify")
    else:
        repo.git.commit("-m", message, "--no-verify")
    repo.git.checkout("main")


@pytest.fixture(scope="module")
def offline_c(tmp_path_factory):
    """An offline group C run: 15 iterations, Level 1.5 every 3, Level 2 every 2 cycles."""
    root = make_toy_repo(tmp_path_factory.mktemp("offline") / "project")
    return finished_run(root, "c", {"iterations": 15, "group": "C", "seed": 1, "k": 3, "m": 2,
                                            "step_aside": False})


FOCUS_LR = {"name": "FocusLR", "domain": "design of experiments", "description": "explore LR",
            "patches": [
                {"kind": "new_helper_class", "name": "FocusLR", "target": None,
                 "code": "class FocusLR:\n    def focus(self, ctx):\n        return ['LR']\n"},
                {"kind": "modify_init", "name": "FocusLR", "target": None,
                 "code": "self.mechanisms.append(FocusLR())"}]}
UNDEFINED = {"name": "Bad", "domain": "testing", "patches": [
    {"kind": "new_helper_class", "name": "Bad", "target": None,
     "code": "class Bad:\n    def focus(self, ctx):\n        return undefined_name\n"},
    {"kind": "modify_init", "name": "Bad", "target": None,
     "code": "self.mechanisms.append(Bad())"}]}


def scripted_model():
    """Level 1 proposals, Level 1.5, and Level 2's four rounds: a mechanism the gate refuses,
    then its repair."""
    return responder([UNDEFINED, FOCUS_LR], l1_changes=(
        {"LR": 0.005}, {"DEPTH": 4}, {"BATCH_SIZE": 128}, {"WEIGHT_DECAY": 0.05},
        {"LR": 0.004}, {"USE_BIAS": False}))


@pytest.fixture(scope="module")
def llm_c(tmp_path_factory):
    """An LLM group C run against the scripted server (a refused mechanism repaired); the server
    is stopped before any test replays it."""
    server = LLMServer().start()
    server.responder = scripted_model()
    root = make_toy_repo(tmp_path_factory.mktemp("llm") / "project")
    settings = resolve_llm(server.base_url, "test-model", env={})
    ws = open_run(root, {"iterations": 5, "group": "C", "k": 2, "m": 1, "step_aside": False}, name="g")
    ws.write_llm_settings(settings.record())
    client = ChatClient(settings, ws.path / ws.llm_rel, rel_root=ws.path)
    try:
        Engine(ws, LLMProposer(client), llm=client).run()
    finally:
        ws.close(remove_worktree=True)
        server.stop()
    return root, server


def test_an_offline_group_c_run_replays_identically(offline_c, tmp_path):
    root = copy_of(offline_c, tmp_path)
    repo = git.Repo(root)
    head, branches = repo.head.commit.hexsha, {b.name for b in repo.branches}
    report = replay(root, "arx/c")
    assert report.reproduced, report.render()
    assert report.exit_code == 0 and report.divergence is None
    assert report.steps_checked == report.steps > 30
    assert report.counts["trials_served"] == report.counts["trials"] == 16
    # two mechanisms and (rules 7: a judge window of 4 for 15 iterations) the first one's
    # judgement after iteration 10
    assert report.counts["level2"] == 3 and report.counts["level15"] == 4
    # the replay branch holds the same history, commit for commit, from the same base
    original = GitRepo(root).log(f"{report.base}..arx/c")
    replayed = GitRepo(root).log(f"{report.base}..arx-replay/c")
    assert [c.subject for c in replayed] == [c.subject for c in original]
    assert any(c.trailers.get("Arx-Level") == "2" for c in replayed)
    assert repo.git.show("arx-replay/c:runner/runner.py") == repo.git.show("arx/c:runner/runner.py")
    # the worktree is gone, the branch stays; the user's checkout is untouched
    assert not (root / ".arx" / "replay" / "c").exists()
    assert {b.name for b in repo.branches} == branches | {"arx-replay/c"}
    assert repo.head.commit.hexsha == head and not repo.is_dirty(untracked_files=True)
    assert "IDENTICAL" in report.render() and "REPRODUCED" in report.render()
    # an existing replay branch is refused, then replaced with force
    with pytest.raises(ReplayError, match="--force"):  # (--force replaces it: the CLI tests)
        replay(root, "c")


def test_a_changed_trace_metric_diverges_at_that_iteration(offline_c, tmp_path):
    root = copy_of(offline_c, tmp_path)
    lines = trace_lines(root, "c")
    target = next(e for e in lines if e.get("event") == "trial" and e.get("status") == "discard"
                  and e["iteration"] >= 5)

    def edit(path):
        out = []
        for e in lines:
            if e is target:
                e = {**e, "metric": e["metric"] + 0.5}  # still a discard, so only the delta shows
            out.append(json.dumps(e, sort_keys=True))
        (path / "runs/c/trace.jsonl").write_text("\n".join(out) + "\n")

    commit_on_branch(root, "arx/c", edit, "make a result look different")
    report = replay(root, "arx/c")
    d = report.divergence
    assert not report.reproduced and report.exit_code == 1
    assert d.step == f"iteration {target['iteration']} (trial)", report.render()
    assert d.field == "delta"
    assert d.original == pytest.approx(target["delta"])
    assert d.replay == pytest.approx(target["delta"] + 0.5)
    assert f"DIVERGED at step {d.index}: iteration {target['iteration']}" in report.render()


def test_a_runner_edited_on_top_of_the_branch_is_the_divergent_commit(offline_c, tmp_path):
    root = copy_of(offline_c, tmp_path)

    def edit(path):
        with open(path / "runner/runner.py", "a") as fh:
            fh.write("\n# a quiet change\n")

    commit_on_branch(root, "arx/c", edit, "tweak the runner")
    report = replay(root, "arx/c")
    d = report.divergence
    n = report.counts["commits"]
    assert d.step.startswith(f"commit {n}/{n} ") and "tweak the runner" in d.step
    assert "runner/runner.py" in d.what
    assert d.index == report.steps  # the very last step: everything before it matched


def test_a_runner_amended_into_the_last_commit_is_a_tree_divergence(offline_c, tmp_path):
    root = copy_of(offline_c, tmp_path)

    def edit(path):
        source = (path / "runner/runner.py").read_text()
        (path / "runner/runner.py").write_text(source.replace("self.n_candidates = 1",
                                                              "self.n_candidates = 2"))

    commit_on_branch(root, "arx/c", edit, amend=True)
    report = replay(root, "arx/c")
    d = report.divergence
    assert "end of run c" in d.step and d.field == "tree:runner/runner.py"
    assert "n_candidates = 2" in d.original and "n_candidates = 1" in d.replay


def test_the_smoke_test_is_arx_s_own_and_not_compared_but_the_runner_is(offline_c, tmp_path):
    """runner/test_smoke.py is rendered from arx's template (its import moved when core/ was
    split into packages): another rendering still reproduces, another runner does not."""
    root = copy_of(offline_c, tmp_path)

    def older_template(path):
        smoke = path / "runner/test_smoke.py"
        text = smoke.read_text()
        assert "from arx.core.levels.policy import MechanismFault, RunnerPolicy" in text
        smoke.write_text(text.replace("arx.core.levels.policy", "arx.core.runnerload"))

    commit_on_branch(root, "arx/c", older_template, amend=True)
    report = replay(root, "arx/c")
    assert report.reproduced, report.render()
    assert "runner/test_smoke.py (rendered from arx's own template)" in report.as_dict()[
        "compared"]

    def tampered_runner(path):
        source = (path / "runner/runner.py").read_text()
        (path / "runner/runner.py").write_text(source.replace("self.n_candidates = 1",
                                                              "self.n_candidates = 2"))

    commit_on_branch(root, "arx/c", tampered_runner, amend=True)
    report = replay(root, "arx/c", force=True)
    d = report.divergence
    assert report.exit_code == 1 and "end of run c" in d.step
    assert d.field == "tree:runner/runner.py" and "n_candidates = 2" in d.original
    assert "test_smoke" not in d.what  # the runner alone differs: no "(and 1 more: ...)"


def test_unusable_branches_are_refused_with_what_to_do(offline_c, tmp_path):
    root = copy_of(offline_c, tmp_path)
    with pytest.raises(ReplayError, match="no branch 'nope'"):
        replay(root, "nope")
    lines = trace_lines(root, "c")

    def old_version(path):
        out = [json.dumps({**e, "v": 0}, sort_keys=True) for e in lines]
        (path / "runs/c/trace.jsonl").write_text("\n".join(out) + "\n")

    commit_on_branch(root, "arx/c", old_version, "as an older arx wrote it")
    with pytest.raises(TraceError, match="trace version 0; this arx reads and replays trace "
                                         "version 1") as info:
        replay(root, "arx/c")
    assert "pip install arx-autoresearch==" in info.value.hint
    repo = git.Repo(root)
    repo.git.branch("-f", "arx/c", "arx/c~2")  # drop the end commit too: an unfinished run
    with pytest.raises(ReplayError, match="not finished"):
        replay(root, "arx/c")


def test_an_llm_group_c_run_replays_without_a_server(llm_c, tmp_path):
    src, server = llm_c
    root = copy_of(src, tmp_path)
    asked = len(server.requests)
    report = replay(root, "arx/g")
    assert report.reproduced, report.render()
    assert report.proposer == "llm"
    # every request the original sent was served from its transcript
    assert report.counts["llm_requests"] == len(server.chat_requests) > 8
    assert len(server.requests) == asked  # nothing was sent (and the server is down anyway)
    subjects = [c.subject for c in GitRepo(root).log("arx-replay/g")]
    assert any(s.startswith("Revert L2 mechanism Bad: gate failed") for s in subjects)
    assert "L2 mechanism FocusLR (design of experiments)" in subjects


def test_an_edited_transcript_answer_diverges_at_that_request(llm_c, tmp_path):
    src, _server = llm_c
    root = copy_of(src, tmp_path)
    names = git.Repo(root).git.ls_tree("-r", "--name-only", "arx/g", "runs/g/llm").split()
    victim = [n for n in names if n.endswith("-propose.json")][3]

    def edit(path):
        data = json.loads((path / victim).read_text())
        answer = json.loads(data["response"])
        answer["hypothesis"] = "a different reason"
        data["response"] = json.dumps(answer)
        (path / victim).write_text(json.dumps(data, indent=2) + "\n")

    commit_on_branch(root, "arx/g", edit, "polish an answer")
    report = replay(root, "arx/g")
    d = report.divergence
    assert d.step == f"LLM request {victim.rsplit('/', 1)[-1]}", report.render()
    assert d.field == "parsed" and "a different reason" in d.replay
    assert "a different reason" not in d.original


def test_a_parallel_run_replays_identically(tmp_path):
    root = make_toy_repo(tmp_path / "project")
    finished_run(root, "p", {"iterations": 4, "parallel": 2, "seed": 2})
    report = replay(root, "arx/p")
    assert report.reproduced, report.render()
    batches = [e for e in trace_lines(root, "p") if e.get("event") == "trial" and e.get("batch")]
    assert len(batches) > 4  # several candidates per iteration, served from the trace
    assert report.counts["trials_served"] == report.counts["trials"]


def test_retrain_in_steps_mode_is_identical_and_only_kept_retrains_fewer(tmp_path):
    root = make_toy_repo(tmp_path / "project")
    finished_run(root, "s", {"iterations": 4, "steps": 3, "seed": 3})
    report = replay(root, "s", retrain=True)
    assert report.reproduced, report.render()
    rows = report.retrain.rows
    assert report.retrain.mode == "steps" and len(rows) == 5
    assert all(r.retrained == r.recorded and r.drift == 0 for r in rows)
    assert "steps mode: every metric must be identical" in report.render()
    kept = replay(root, "s", retrain=True, only_kept=True, force=True)
    statuses = [r.status for r in kept.retrain.rows]
    assert statuses == ["baseline"] + ["keep"] * sum(r.status == "keep" for r in rows)


def test_confirmation_seeds_and_rebaselines_replay_and_retrain(tmp_path):
    root = make_toy_repo(tmp_path / "project")
    finished_run(root, "k", {"iterations": 3, "confirm": 1, "rebaseline": 2, "seed": 5})
    kinds = {e["kind"] for e in trace_lines(root, "k") if e.get("event") == "trial"}
    assert {"confirm", "rebaseline"} <= kinds
    report = replay(root, "k", retrain=True)
    assert report.reproduced, report.render()
    # no measured noise: 1% of |baseline metric|
    base = next(e["metric"] for e in trace_lines(root, "k") if e.get("status") == "baseline")
    assert report.retrain.mode == "time"
    assert report.retrain.tolerance == pytest.approx(0.01 * base)
    assert "1% of |baseline metric|" in report.render()
    assert {r.kind for r in report.retrain.rows} == {"baseline", "trial", "confirm", "rebaseline"}
    assert all(r.drift == 0 for r in report.retrain.rows)  # the toy's metric has no noise


def test_retrain_refuses_other_data_than_recorded(tmp_path, monkeypatch):
    root = make_toy_repo(tmp_path / "project")
    train = root / "train.py"
    train.write_text(train.read_text().replace("import math\n", "import math\nimport os\n")
                     .replace('    print("depth:            " + str(DEPTH))\n',
                              '    print("depth:            " + str(DEPTH))\n'
                              '    print("data_fingerprint: " + os.environ["TOY_DATA"])\n'))
    git.Repo(root).git.commit("-am", "the toy reports its data")
    monkeypatch.setenv("TOY_DATA", "aaaa11112222")
    finished_run(root, "f", {"iterations": 2})
    assert trace_lines(root, "f")[1]["data_fingerprint"] == "aaaa11112222"
    monkeypatch.setenv("TOY_DATA", "bbbb33334444")
    with pytest.raises(ReplayError, match="data fingerprint bbbb33334444 here, aaaa11112222 "
                                          "recorded") as info:
        replay(root, "f", retrain=True)
    assert "prepare the data the run used" in info.value.hint
    # extended on other data: the decisions replay, the metrics cannot be retrained
    ws = open_run(root, {"iterations": 3}, resume="f")
    run_to_end(ws, offline_proposer(ws.config))
    assert replay(root, "f", force=True).reproduced
    with pytest.raises(ReplayError, match="data changed while it ran: data fingerprint "
                                          "aaaa11112222 from iteration 0, bbbb33334444 from "
                                          "iteration 3"):
        replay(root, "f", retrain=True, force=True)


def test_the_drift_rule_flags_flips_and_drift_beyond_the_tolerance():
    keep = {"iteration": 3, "kind": "trial", "status": "keep", "metric": 1.00, "best_before": 1.02}
    discard = {"iteration": 4, "kind": "trial", "status": "discard", "metric": 1.05,
               "best_before": 1.00}
    assert judge(keep, 1.01, "", "time", 0.02, "min").ok
    flipped = judge(keep, 1.03, "", "time", 0.05, "min")
    assert not flipped.ok and flipped.flip == "keep would now be a discard"
    assert judge(discard, 0.99, "", "time", 0.1, "min").flip == "discard would now be a keep"
    assert judge(discard, 0.99, "", "time", 0.1, "max").flip is None
    far = judge(discard, 1.09, "", "time", 0.02, "min")
    assert not far.ok and far.flip is None and far.drift == pytest.approx(0.04)
    assert not judge(keep, 1.0000001, "", "steps", None, "min").ok  # steps mode: identical
    assert judge(keep, 1.0000001, "", "steps", 1e-3, "min").ok
    crashed = judge(keep, None, "exit 1", "time", 0.02, "min")
    assert not crashed.ok and "failed: exit 1" in crashed.note


@pytest.mark.slow
def test_a_steps_mode_run_of_the_gpt_target_retrains_bit_identically(tmp_path, monkeypatch):
    from arx.train import prepare as prep

    texts = tmp_path / "texts"  # tiny data, as tests/train/conftest.py makes it
    texts.mkdir()
    rng = random.Random(0)
    words = ("the king queen night sword crown love death honour speak lord lady thou thee "
             "doth never gentle noble fair foul storm sea ship letter ghost father son").split()
    for i in range(40):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize()
                     + rng.choice(".!?") for _ in range(rng.randint(8, 20))]
        (texts / f"text_{i:02d}.txt").write_text(" ".join(sentences) + "\n")
    data = tmp_path / "data"
    prep.prepare("text", [texts], data, quiet=True)
    monkeypatch.setenv("ARX_DATA_DIR", str(data))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "demo"
    init_repo(root)
    tiny = {"DEPTH": 2, "ASPECT_RATIO": 16, "HEAD_DIM": 16, "WINDOW_PATTERN": "SL",
            "TOTAL_BATCH_SIZE": 2**10, "DEVICE_BATCH_SIZE": 8, "MAX_SEQ_LEN": 64}
    (root / "train.py").write_text(apply_changes((root / "train.py").read_text(), tiny))
    identify(git.Repo(root)).git.commit("-am", "test: a tiny model")
    edit_toml(root, target={"setup": f"{sys.executable} prepare.py --corpus text --text {texts}",
                            "command": f"{sys.executable} train.py"})
    finished_run(root, "gpt", {"iterations": 1, "steps": 2, "seed": 4, "noise": "off",
                               "verify": 0})
    records = [e for e in trace_lines(root, "gpt") if e.get("event") == "trial"]
    assert all(len(r.get("data_fingerprint", "")) == 12 for r in records if "metric" in r)
    report = replay(root, "gpt", retrain=True)
    assert report.reproduced, report.render()
    measured = [r for r in records
                if r["status"] in ("baseline", "noise", "keep", "discard", "no_effect")]
    assert [r.recorded for r in report.retrain.rows] == [r["metric"] for r in measured]
    assert all(r.retrained == r.recorded for r in report.retrain.rows)
    assert os.environ["ARX_DATA_DIR"] == str(data)
