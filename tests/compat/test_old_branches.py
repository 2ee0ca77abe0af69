"""Run branches made by the arx before core/ was split into packages (cec9537) still read,
resume and replay on this one: the commands, trailers, trace fields and stored configs are the
public surface.

``tests/fixtures/old-main-runs.bundle`` is a managed repository that arx made on the toy target
(``tests/fixtures/README.md`` says what is in it; ``make_old_runs.sh`` remakes it). Each test
clones it and drives the real command line; the toy target trains in milliseconds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli

from support.repos import identify

BUNDLE = Path(__file__).resolve().parents[1] / "fixtures" / "old-main-runs.bundle"
#: the killed run's worktree files as arx left them (its live trace, the patched script)
LIVE_K = "refs/fixture/live/k"
BASELINE = 2.235125
C_LEVELS = ["baseline", "1", "1.5", "2", "1", "1.5", "2", "1", "1.5", "2", "1", "end"]
C_MECHANISMS = ("ParameterBandit", "OrthogonalExploration", "TabuList")


def invoke(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), *args], catch_exceptions=False)


def status(root):
    result = invoke(root, "status", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.output)}


def trials(root, name):
    text = git.Repo(root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return [e for e in map(json.loads, text.splitlines())
            if e.get("event") == "trial" and e.get("kind") == "trial"]


def subjects(root, name):
    return git.Repo(root).git.log("--format=%s", f"main..arx/{name}").splitlines()[::-1]


@pytest.fixture
def old(tmp_path, monkeypatch):
    """A clone of the bundle with all its refs, a committer (CI has none), and ``python`` on
    PATH: the runs' stored command is ``python train.py``."""
    root = tmp_path / "project"
    repo = identify(git.Repo.init(root, initial_branch="main"))
    repo.git.fetch("--quiet", "--update-head-ok", str(BUNDLE), "+refs/*:refs/*")
    repo.git.reset("--quiet", "--hard", "main")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return root


def restore_live_worktree(root):
    """Put the killed run's worktree back as the old arx left it (a bundle carries only refs)."""
    repo = git.Repo(root)
    wt = root / ".arx" / "worktrees" / "k"
    repo.git.worktree("add", "--quiet", str(wt), "arx/k")
    for path in repo.git.diff("--name-only", "arx/k", LIVE_K).splitlines():
        (wt / path).write_bytes(repo.git.show(f"{LIVE_K}:{path}", stdout_as_string=False,
                                              strip_newline_in_stdout=False))
    return wt


def test_the_bundle_was_made_by_the_arx_before_the_restructure(old):
    assert BUNDLE.stat().st_size < 300_000
    heads = git.Git().ls_remote("--refs", str(BUNDLE)).splitlines()
    names = sorted(line.split("\t")[1] for line in heads)
    assert names == ["refs/fixture/live/k", "refs/heads/arx/c", "refs/heads/arx/g",
                     "refs/heads/arx/k", "refs/heads/arx/m", "refs/heads/arx/p",
                     "refs/heads/main"]
    smoke = git.Repo(old).git.show("arx/c:runner/test_smoke.py")
    assert "\nfrom arx.core.runnerload import load_runner\n" in smoke  # the old module path


def test_status_reads_every_old_run_with_its_state(old):
    rows = status(old)
    assert {n: (r["state"], r["iterations_done"]) for n, r in rows.items()} == {
        "c": ("finished", 8), "g": ("finished", 5), "k": ("interrupted", 2),
        "m": ("finished", 4), "p": ("finished", 3)}
    assert all(r["baseline"] == BASELINE and r["metric"] == "val_bpb" for r in rows.values())
    assert rows["c"]["counts"] == {"keep": 4, "discard": 4} and rows["c"]["best"] == 1.66498
    assert rows["c"]["mechanisms"] == list(C_MECHANISMS)
    assert rows["g"]["counts"] == {"keep": 5} and rows["g"]["tokens"] > 0
    assert rows["g"]["mechanisms"] == ["FocusLR"]
    assert rows["p"]["counts"] == {"keep": 2, "discard": 4}  # two candidates an iteration
    table = invoke(old, "status").output
    assert "interrupted" in table and "TabuList" in table
    # the killed run's uncommitted lines count once its worktree is back where it was
    restore_live_worktree(old)
    k = status(old)["k"]
    assert (k["state"], k["iterations_done"], k["counts"]) == (
        "interrupted", 3, {"keep": 1, "discard": 2})


def test_log_reads_the_trailers_of_old_runs(old):
    result = invoke(old, "log", "c", "--json")
    assert result.exit_code == 0, result.output
    log = json.loads(result.output)
    assert [c["Arx-Level"] for c in log] == C_LEVELS
    assert log[-1]["subject"].startswith("end of run c: 8 iterations, best val_bpb 1.664980")
    level2 = json.loads(invoke(old, "log", "g", "--level", "2", "--json").output)
    assert [(c["subject"].split(":")[0], c["Arx-Gate"].split(":")[0]) for c in level2] == [
        ("L2 mechanism Bad (testing)", "fail"), ("Revert L2 mechanism Bad", "fail"),
        ("L2 mechanism FocusLR (design of experiments)", "pass")]
    assert level2[1]["Arx-Reverts"] == level2[0]["sha"]
    text = invoke(old, "log", "p").output
    assert "baseline" in text and "LR 0.02->0.00298, BATCH_SIZE 256->64" in text


def test_mechanism_list_and_report_read_old_runs(old, tmp_path):
    result = invoke(old, "mechanism", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = [(r["run"], r["mechanism"], r["source"], r["cycle"], r["verdict"])
            for r in json.loads(result.output)]
    assert rows == [
        ("c", "ParameterBandit", "catalog", 1, "pass"),
        ("c", "OrthogonalExploration", "catalog", 2, "pass"),
        ("c", "TabuList", "catalog", 3, "pass"),
        ("g", "FocusLR", "llm-repair", 1, "pass"),
        ("g", "FocusLR", "llm-repair", 2, "refused"),  # already in the runner
        ("m", "OnlyLR", "manual", None, "pass"),
        ("m", "Nope", "manual", None, "fail")]
    states = {(r["run"], r["mechanism"]): r["state"]
              for r in json.loads(invoke(old, "mechanism", "list", "--run", "m", "--json").output)}
    assert states == {("m", "OnlyLR"): "active", ("m", "Nope"): "refused"}
    # a refused second attempt under the same name leaves the active one active
    g_states = {r["state"] for r in json.loads(
        invoke(old, "mechanism", "list", "--run", "g", "--json").output)}
    assert g_states == {"active"}
    status = json.loads(invoke(old, "status", "m", "--json").output)
    assert status[0]["mechanisms"] == ["OnlyLR"]
    out = tmp_path / "old.png"
    result = invoke(old, "report", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "old.md").read_text()
    assert "| c | C | finished | 8/8 | 2.235125 | 1.664980 |" in summary
    assert "| k | B | interrupted | 2/8 |" in summary
    assert "| 6 | TabuList | combinatorial optimization | catalog | pass | active |" in summary


@pytest.mark.parametrize(("name", "counts"), [
    ("c", {"trials": 9, "level15": 3, "level2": 3, "commits": 12, "llm_requests": 0}),
    ("g", {"trials": 6, "level15": 2, "level2": 2, "commits": 12, "llm_requests": 17}),
    ("p", {"trials": 7, "level15": 0, "level2": 0, "commits": 4, "llm_requests": 0}),
])
def test_old_runs_replay_identically(old, name, counts):
    result = invoke(old, "replay", f"arx/{name}", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["result"] == "reproduced" and data["first_divergence"] is None
    assert data["steps_checked"] == data["steps"]
    assert {k: data["counts"][k] for k in counts} == counts
    assert data["counts"]["trials_served"] == counts["trials"]
    assert subjects(old, name) == git.Repo(old).git.log(
        "--format=%s", f"main..arx-replay/{name}").splitlines()[::-1]


def test_an_old_steps_mode_run_retrains_identically(old):
    result = invoke(old, "replay", "arx/c", "--retrain", "--json")
    assert result.exit_code == 0, result.output
    retrain = json.loads(result.output)["retrain"]
    assert retrain["mode"] == "steps" and retrain["ok"] and retrain["max_drift"] == 0.0
    assert len(retrain["rows"]) == 9 and all(r["retrained"] == r["recorded"]
                                             for r in retrain["rows"])


def test_old_runs_that_cannot_be_replayed_say_why(old):
    by_hand = invoke(old, "replay", "arx/m")  # the old arx did not store the patch it applied
    assert by_hand.exit_code == 2, by_hand.output
    assert "mechanism added by hand (OnlyLR" in by_hand.output
    assert "did not store its patch on the branch" in by_hand.output
    first = git.Repo(old).git.log("--format=%H", "--grep=L2 mechanism OnlyLR", "arx/m")
    before = git.Repo(old).git.rev_parse(f"{first}^")
    assert f"git branch arx/m-before {before[:12]}" in by_hand.output
    git.Repo(old).git.branch("arx/m-before", before)  # the part before it replays
    assert invoke(old, "replay", "arx/m-before").exit_code == 0
    killed = invoke(old, "replay", "arx/k")
    assert killed.exit_code == 2 and "not finished" in killed.output


def test_the_killed_run_resumes_where_the_old_arx_left_it(old):
    restore_live_worktree(old)
    result = invoke(old, "run", "--resume", "k", "--quiet")
    assert result.exit_code == 0, result.output
    row = status(old)["k"]
    assert (row["state"], row["iterations_done"], row["iterations"]) == ("finished", 8, 8)
    records = trials(old, "k")
    # the trial arx was killed in is recorded interrupted, then run again with its proposal
    assert [(r["iteration"], r["status"], r["changes"]) for r in records[3:5]] == [
        (4, "interrupted", {"LR": 0.113}), (4, "discard", {"LR": 0.113})]
    done = [r["iteration"] for r in records if r["status"] != "interrupted"]
    assert done == list(range(1, 9))  # nothing lost, nothing repeated
    assert subjects(old, "k")[-1].startswith("end of run k: ")
    assert not (old / ".arx" / "worktrees" / "k").exists()
    # this arx recorded where it resumed the old run, so the whole branch replays
    result = invoke(old, "replay", "arx/k", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["counts"]["resumes"] == 1 and len(data["acts"]) == 2
    assert any("records no provenance for its start" in n for n in data["provenance"]["notes"])


def test_the_killed_run_resumes_from_its_branch_alone(old):
    """A clone (or a pushed branch) has no worktree: the run goes on from its last commit."""
    before = subjects(old, "k")
    assert before[0] == "baseline: val_bpb 2.235125" and before[2].startswith("L1.5 cycle 1: ")
    result = invoke(old, "run", "--resume", "k", "--quiet")
    assert result.exit_code == 0, result.output
    row = status(old)["k"]
    assert (row["state"], row["iterations_done"]) == ("finished", 8)
    assert [r["iteration"] for r in trials(old, "k")] == list(range(1, 9))
    after = subjects(old, "k")
    assert after[:3] == before and after[-1].startswith("end of run k: 8 iterations")


def test_the_old_group_c_run_extends_by_two_iterations(old):
    before = subjects(old, "c")
    result = invoke(old, "run", "--resume", "c", "--iterations", "10", "--quiet")
    assert result.exit_code == 0, result.output
    row = status(old)["c"]
    assert (row["state"], row["iterations_done"]) == ("finished", 10)
    assert row["iterations"] == 10  # the target the resume set, not the 8 it started with
    assert row["mechanisms"] == list(C_MECHANISMS)  # the old runner's mechanisms still load
    after = subjects(old, "c")
    assert after[:len(before)] == before  # nothing rewritten
    assert after[-1].startswith("end of run c: 10 iterations")
    assert any(s.startswith("L1.5 cycle 4: ") for s in after[len(before):])
    assert [r["iteration"] for r in trials(old, "c")] == list(range(1, 11))
    replayed = invoke(old, "replay", "arx/c", "--json")  # the old part, then the extension
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output)["acts"][1].startswith("resume to iteration 10 after ")


def test_a_hand_written_mechanism_on_an_old_branch_still_steers_the_search(old):
    result = invoke(old, "run", "--resume", "m", "--iterations", "6", "--quiet")
    assert result.exit_code == 0, result.output
    records = trials(old, "m")
    assert [r["iteration"] for r in records] == list(range(1, 7))
    assert all(r["focus"] == ["LR"] and list(r["changes"]) == ["LR"] for r in records[2:])
    assert subjects(old, "m")[-1].startswith("end of run m: 6 iterations")
