"""Level 2 end to end: mechanisms are patched into the runner, gated, committed, and reverted
at the gate or at run time, while the run goes on.

Offline runs use the built-in catalog. LLM runs use the real openai client against the scripted
server on loopback; its ``responder`` plays the model by reading each prompt (the only fake).
"""

from __future__ import annotations

import json

import git
import pytest

from arx.core.levels.fence import find_bwrap
from arx.core.llm.client import ChatClient
from arx.core.llm.settings import resolve_llm
from arx.core.loop.engine import Engine
from arx.core.proposers.llm import LLMProposer
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run

from support.repos import edit_toml
from support.scripted_model import responder

CLEAN = {
    "name": "FocusLR", "domain": "design of experiments", "description": "always explore LR",
    "patches": [
        {"kind": "new_helper_class", "name": "FocusLR", "target": None,
         "code": "class FocusLR:\n    def focus(self, ctx):\n        return ['LR']\n"},
        {"kind": "modify_init", "name": "FocusLR", "target": None,
         "code": "self.mechanisms.append(FocusLR())"},
    ],
}


def mech(code, name="Bad", init=True, kind="new_helper_class", target=None):
    patches = [{"kind": kind, "name": name, "target": target, "code": code}]
    if init:
        patches.append({"kind": "modify_init", "name": name, "target": None,
                        "code": f"self.mechanisms.append({name}())"})
    return {"name": name, "domain": "testing", "patches": patches}


BAD = {
    "syntax": (mech("class Bad:\n    def focus(self, ctx)\n        return []\n"), "refused", "does not parse"),
    "undefined": (mech("class Bad:\n    def focus(self, ctx):\n        return undefined_name\n"),
                  "fail", "F821"),
    "sklearn": (mech("import sklearn\n\n\nclass Bad:\n    def focus(self, ctx):\n"
                     "        return []\n"), "fail", "sklearn"),
    "wrong_class": (mech("class Other:\n    def focus(self, ctx):\n        return []\n"),
                    "refused", "named"),
    "no_integration": (mech("class Bad:\n    def focus(self, ctx):\n        return []\n",
                            init=False), "fail", "no integration"),
    "missing_target": (mech("def nothing_here(self, ctx):\n    return None\n", init=False,
                            kind="replace_method", target="nothing_here"), "refused", "nothing_here"),
    "loop": (mech("class Bad:\n    def focus(self, ctx):\n        while True:\n"
                  "            pass\n"), "fail", "timed out"),
    "environ": (mech("import os\n\n\nclass Bad:\n    def focus(self, ctx):\n"
                     "        return [os.environ.get('ARX_API_KEY', '')]\n"), "fail", "os"),
    "writes": (mech("class Bad:\n    def observe(self, ctx, record):\n"
                    "        open('/tmp/arx-escape', 'w').write('x')\n"), "fail", "open"),
}


def llm_run(root, server, name, iterations, **flags):
    settings = resolve_llm(server.base_url, "test-model", env={})
    ws = open_run(root, {"iterations": iterations, "group": "C", "k": 2, "m": 1, "step_aside": False,
                        **flags},
                  name=name)
    client = ChatClient(settings, ws.path / ws.llm_rel, rel_root=ws.path)
    engine = Engine(ws, LLMProposer(client), llm=client)
    try:
        engine.run()
        engine.notes2 = engine.trace.notes("level2")
    finally:
        ws.close(remove_worktree=True)
    return engine


def test_offline_group_c_commits_l15_and_l2_and_the_mechanism_changes_proposals(toy_repo):
    # the outcome gate off: the mechanism steers to the end (test_outcome.py judges)
    ws = open_run(toy_repo, {"iterations": 20, "group": "C", "step_aside": False,
                             "judge_window": 0}, name="c")
    engine = Engine(ws, OptunaProposer(seed=1))
    try:
        engine.run()
        notes = engine.trace.notes("level2")
    finally:
        ws.close(remove_worktree=True)
    log = GitRepo(toy_repo).log("arx/c")
    assert any(c.trailers.get("Arx-Level") == "1.5" for c in log)
    l2 = [c for c in log if c.trailers.get("Arx-Level") == "2"]
    assert l2 and l2[0].subject.startswith("L2 mechanism ")
    assert l2[0].trailers["Arx-Gate"] == "pass"
    assert notes[0]["verdict"] == "pass" and notes[0]["source"] == "catalog"
    # the runner on the branch now holds the mechanism, with its smoke test
    runner = git.Repo(toy_repo).git.show("arx/c:runner/runner.py")
    assert f"class {notes[0]['mechanism']}" in runner
    assert "def test_" in git.Repo(toy_repo).git.show("arx/c:runner/test_smoke.py")
    # the mechanism steers proposals: trials after it carry its focus and obey it
    after = [r for r in engine.records if r.kind == "trial" and r.iteration > notes[0]["iteration"]
             and r.state.value != "invalid_proposal"]
    before = [r for r in engine.records if r.kind == "trial" and r.iteration <= notes[0]["iteration"]]
    assert all(not r.get("focus") for r in before)
    assert after and all(r.get("focus") for r in after)
    assert all(set(r.changes) <= set(r.get("focus")) for r in after)


def test_a_clean_generated_mechanism_passes_and_is_activated(toy_repo, llm_server):
    llm_server.responder = responder([CLEAN])
    engine = llm_run(toy_repo, llm_server, "gen", 4)
    note = engine.notes2[0]
    assert note["verdict"] == "pass" and note["mechanism"] == "FocusLR" and note["source"] == "llm"
    assert len(note["transcripts"]) == 4  # explore, critique, specify, generate
    assert [t.split("-")[-1] for t in note["transcripts"]] == [
        "explore.json", "critique.json", "specify.json", "generate.json"]
    it3 = next(r for r in engine.records if r.iteration == 3 and r.kind == "trial")
    assert it3.get("focus") == ["LR"]
    log = GitRepo(toy_repo).log("arx/gen")
    commit = next(c for c in log if c.trailers.get("Arx-Mechanism") == "FocusLR")
    assert commit.subject == "L2 mechanism FocusLR (design of experiments)"
    assert commit.trailers["Arx-Gate"] == "pass"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_mechanisms_are_refused_or_reverted_and_the_run_goes_on(toy_repo, llm_server, case):
    generate, verdict, reason = BAD[case]
    edit_toml(toy_repo, run={})
    doc = (toy_repo / "arx.toml").read_text()
    (toy_repo / "arx.toml").write_text(doc.replace("[run]\n", "[levels]\nrepair = 0\n"
                                                   "gate_timeout = 6\n\n[run]\n"))
    git.Repo(toy_repo).git.commit("-am", "no repair, short gate")
    llm_server.responder = responder([generate])
    engine = llm_run(toy_repo, llm_server, "bad", 3)
    note = engine.notes2[0]
    assert note["verdict"] == verdict, note
    assert reason in note["reason"], note["reason"]
    trials = [r for r in engine.records if r.kind == "trial"]
    assert [r.iteration for r in trials] == [1, 2, 3]  # the run went on
    log = GitRepo(toy_repo).log("arx/bad")
    l2 = [c for c in log if c.trailers.get("Arx-Level") == "2"]
    runner = git.Repo(toy_repo).git.show("arx/bad:runner/runner.py")
    assert "class Bad" not in runner and "class Other" not in runner
    if verdict == "fail":  # committed, then reverted with the gate's reason
        assert l2[0].subject.startswith("Revert L2 mechanism Bad: gate failed")
        assert l2[0].trailers["Arx-Gate"].startswith("fail: ")
        assert l2[1].subject.startswith("L2 mechanism Bad")
    else:  # refused before anything was written
        assert l2 == []


def test_a_repair_round_can_fix_a_refused_mechanism(toy_repo, llm_server):
    llm_server.responder = responder([BAD["undefined"][0], CLEAN])
    engine = llm_run(toy_repo, llm_server, "fix", 3)
    note = engine.notes2[-1]
    assert note["verdict"] == "pass" and note["mechanism"] == "FocusLR"
    assert any("repair" in t for t in note["transcripts"])
    subjects = [c.subject for c in GitRepo(toy_repo).log("arx/fix")]
    assert any(s.startswith("Revert L2 mechanism Bad") for s in subjects)
    assert any(s == "L2 mechanism FocusLR (design of experiments)" for s in subjects)


def test_a_hostile_generated_mechanism_is_contained_reverted_and_the_branch_replays(
        toy_repo, llm_server, tmp_path, monkeypatch):
    """An LLM's mechanism past the lint (its allow-list switched off, as for an escape it does
    not know) that, on its third real call, tries to open a file outside to everyone and to
    read a secret of the user's environment, then raises. Nothing outside changes, it is
    reverted, nothing measured runs again, and the branch replays (what CI does with it)."""
    from click.testing import CliRunner

    from arx.cli.main import cli
    from arx.core.levels import gate

    monkeypatch.setattr(gate, "check_safety", lambda source, template_source=None: [])
    monkeypatch.setenv("DATABASE_URL", "postgres://u:planted-password@db/x")
    outside = tmp_path / "private.txt"
    outside.write_text("mine")
    outside.chmod(0o600)
    flaky = mech("import os\n\n\nclass Flaky:\n    def __init__(self):\n        self.calls = 0\n\n"
                 "    def observe(self, ctx, record):\n"
                 "        if 'LEARNING_RATE' not in ctx['best_config']:\n"
                 "            self.calls += 1\n            if self.calls == 3:\n"
                 "                seen = 'changed'\n                try:\n"
                 f"                    os.chmod({str(outside)!r}, 0o666)\n"
                 "                except OSError as e:\n"
                 "                    seen = type(e).__name__\n"
                 "                raise ValueError('third call ' + seen + ' '\n"
                 "                                 + os.environ.get('DATABASE_URL', 'no-url'))\n",
                 name="Flaky")
    llm_server.responder = responder([flaky])
    engine = llm_run(toy_repo, llm_server, "flaky", 6)
    verdicts = [(n["mechanism"], n["verdict"]) for n in engine.notes2]
    assert verdicts[:2] == [("Flaky", "pass"), ("Flaky", "runtime_revert")]
    assert "third call" in engine.notes2[1]["error"] and "no-url" in engine.notes2[1]["error"]
    if find_bwrap() is not None:  # natively, as root, only Landlock-less layers stand
        assert "third call FileNotFoundError" in engine.notes2[1]["error"]  # not in its view
        assert oct(outside.stat().st_mode & 0o777) == oct(0o600)
    assert outside.read_text() == "mine"
    trials = [r for r in engine.records if r.kind == "trial"]
    assert [r.iteration for r in trials] == [1, 2, 3, 4, 5, 6]
    # nothing measured was run again: one trial start per iteration
    repo = git.Repo(toy_repo)
    lines = [json.loads(x) for x in repo.git.show("arx/flaky:runs/flaky/trace.jsonl").splitlines()]
    starts = [e["iteration"] for e in lines if e.get("event") == "start" and e["kind"] == "trial"]
    assert starts == [1, 2, 3, 4, 5, 6]
    subjects = [c.subject for c in GitRepo(toy_repo).log("arx/flaky")]
    assert any(s == "Revert L2 mechanism Flaky: observe failed at run time" for s in subjects)
    assert "class Flaky" not in repo.git.show("arx/flaky:runner/runner.py")
    assert "planted-password" not in repo.git.log("-p", "arx/flaky")
    replayed = CliRunner().invoke(cli, ["-C", str(toy_repo), "replay", "arx/flaky"],
                                  catch_exceptions=False)
    assert replayed.exit_code == 0 and "REPRODUCED" in replayed.output, replayed.output


def test_resume_reverts_a_gate_failed_mechanism_left_unreverted_by_a_kill(toy_repo):
    """arx killed between a failed gate's commit and its revert: resume completes the revert."""
    from arx.core.levels.mechanism import Mechanism, apply_patches

    ws = open_run(toy_repo, {"iterations": 1}, name="half")
    Engine(ws, OptunaProposer()).run()
    bad = Mechanism.from_json(BAD["undefined"][0])
    runner = ws.path / "runner" / "runner.py"
    runner.write_text(apply_patches(runner.read_text(), bad.patches))
    ws.tree.commit(["runner/runner.py"], "L2 mechanism Bad (testing)", trailers={
        "Arx-Run": "half", "Arx-Level": "2", "Arx-Mechanism": "Bad",
        "Arx-Gate": "fail: ruff: F821 Undefined name `undefined_name`", "Arx-Cycle": "1"})
    ws.close(remove_worktree=False)  # as a kill would leave it

    ws = open_run(toy_repo, {"iterations": 2}, resume="half")
    engine = Engine(ws, OptunaProposer())
    try:
        engine.run()
        notes = engine.trace.notes("level2")
    finally:
        ws.close(remove_worktree=True)
    subjects = [c.subject for c in GitRepo(toy_repo).log("arx/half")]
    assert any(s.startswith("Revert L2 mechanism Bad: gate failed") for s in subjects)
    assert "class Bad" not in git.Repo(toy_repo).git.show("arx/half:runner/runner.py")
    assert notes[-1]["note"] == "reverted on resume" and notes[-1]["reverted"] is True
