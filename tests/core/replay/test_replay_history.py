"""Branches that real runs leave behind replay: killed with SIGKILL and resumed (mid-trial,
mid-Level-2, mid-batch), extended after they finished, given mechanisms by hand between two
resumes, with an LLM. Every run here is a real `arx` process on the toy target, killed for
real; every replay goes through the command line. A tampered trace or transcript is still found
at the step it changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.loop.trials import TrialKey

# serial: (pytest -m serial) SIGKILLs timed against live trials and the gate; not beside another test's load (README)
pytestmark = pytest.mark.serial

ARX = [sys.executable, "-m", "arx.cli.main"]
GOOD = {"name": "OnlyLR", "domain": "by hand", "patches": [
    {"kind": "new_helper_class", "name": "OnlyLR", "target": None,
     "code": "class OnlyLR:\n    def focus(self, ctx):\n        return ['LR']\n"},
    {"kind": "modify_init", "name": "OnlyLR", "target": None,
     "code": "self.mechanisms.append(OnlyLR())"}]}
BAD = {"kind": "new_helper_class", "name": "Nope", "target": None,
       "code": "class Nope:\n    def focus(self, ctx):\n        return missing\n"}


def start(repo, *args, env=None):
    return subprocess.Popen([*ARX, "-C", str(repo), "run", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(repo, *args, env=None):
    done = subprocess.run([*ARX, "-C", str(repo), "run", "--quiet", *args], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done


def kill_after_trials(proc, n, extra_s, within=60.0):
    """SIGKILL mid-trial: once ``n`` trial records were printed, the next trial's process runs
    (however slow the machine: a fixed delay once landed between two trials) and ``extra_s``
    more passed."""
    seen = 0
    for line in proc.stdout:
        if json.loads(line).get("event") == "trial":
            seen += 1
            if seen >= n:
                break
    deadline = time.monotonic() + within
    while not any("train.py" in c for c in children(proc.pid)):
        if time.monotonic() > deadline or proc.poll() is not None:
            break  # kill() says why
        time.sleep(0.003)
    time.sleep(extra_s)
    kill(proc)


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (  # it ended by itself: say why
        f"arx exited {proc.returncode} before it was killed: {proc.stderr.read()}")


def children(pid):
    """Command lines of the live child processes of ``pid`` (read from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if int(text[text.rfind(")") + 2:].split()[1]) == pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return out


def kill_in_gate(proc, within=90.0):
    """SIGKILL while the Level-2 gate runs one of its checks (ruff or the smoke test) in a child
    process: mid-Level-2, before the mechanism's commit."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any("ruff" in c or "test_smoke" in c or "smoke" in c for c in children(proc.pid)):
            kill(proc)
            return
        time.sleep(0.003)
    raise AssertionError("the run never reached the Level-2 gate")


def replay(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), "replay", *args], catch_exceptions=False)


def events(root, name, rev=None):
    text = git.Repo(root).git.show(f"{rev or 'arx/' + name}:runs/{name}/trace.jsonl")
    return [json.loads(line) for line in text.splitlines()]


def live_events(root, name):
    path = root / ".arx" / "worktrees" / name / "runs" / name / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def subjects(root, branch):
    return git.Repo(root).git.log("--format=%s", f"main..{branch}").splitlines()[::-1]


def commit_on(root, branch, edit, message):
    repo = git.Repo(root)
    repo.git.checkout(branch)
    edit(root)
    repo.git.commit("-am", message, "--no-verify")
    repo.git.checkout("main")


def bump_metric_after_a_resume(root, name):
    """Commit a trace whose first measured Level-1 trial after a resume has another metric;
    returns that record."""
    lines = events(root, name)
    first_resume = next(k for k, e in enumerate(lines) if e["event"] == "resume")
    target = next(e for e in lines[first_resume:] if e["event"] == "trial"
                  and e["status"] in ("keep", "discard") and e["kind"] == "trial")

    def edit(path):
        out = [{**e, "metric": e["metric"] + 0.5} if e is target else e for e in lines]
        (path / f"runs/{name}/trace.jsonl").write_text(
            "".join(json.dumps(e, sort_keys=True) + "\n" for e in out))

    commit_on(root, f"arx/{name}", edit, "polish a result")
    return target


def assert_replays(root, name, acts, **counts):
    result = replay(root, f"arx/{name}", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["result"] == "reproduced" and data["steps_checked"] == data["steps"]
    assert len(data["acts"]) == acts, data["acts"]
    assert {k: data["counts"][k] for k in counts} == counts
    assert subjects(root, f"arx/{name}") == subjects(root, f"arx-replay/{name}")
    return data


def assert_tamper_found(root, name):
    target = bump_metric_after_a_resume(root, name)
    result = replay(root, f"arx/{name}", "--json", "--force")
    assert result.exit_code == 1, result.output
    d = json.loads(result.output)["first_divergence"]
    key = TrialKey(target["iteration"], "trial", target.get("seq", 0))
    # the record itself differs: its delta, or its status when the served metric flips it
    assert d["step"] == key.describe() and d["field"] in ("delta", "status"), d


def test_a_run_killed_mid_trial_and_mid_level2_replays(toy_repo):
    env = {"ARX_K": "2", "ARX_M": "1", "ARX_STEP_ASIDE": "false"}
    proc = start(toy_repo, "--name", "kk", "--group", "C", "--iterations", "6", "--budget",
                 "0.3", env=env)
    kill_after_trials(proc, 2, 0.15)  # during iteration 2's trial
    pending = [e for e in live_events(toy_repo, "kk") if e["event"] == "start"][-1]
    assert pending["iteration"] == 2
    kill_in_gate(start(toy_repo, "--resume", "kk", env=env))  # Level 2 of cycle 1
    live = live_events(toy_repo, "kk")
    assert [e["cycle"] for e in live if e["event"] == "level15"] == [1]
    assert not [e for e in live if e["event"] == "level2"]
    assert subjects(toy_repo, "arx/kk")[-1].startswith("L1.5 cycle 1: ")
    finish(toy_repo, "--resume", "kk", env=env)
    trace = events(toy_repo, "kk")
    resumes = [e for e in trace if e["event"] == "resume"]
    assert [r["interrupted"] for r in resumes] == [
        [{"iteration": 2, "kind": "trial", "seq": 0}], []]
    # the Level-2 cycle the kill cut short ran on resume
    assert [(e["cycle"], e["verdict"]) for e in trace if e["event"] == "level2"][0] == (1, "pass")
    # rules 7: the mechanism's window (W = 4 for 6 iterations) ends with the run, which judges
    # it: a third level2 event, replayed too
    data = assert_replays(toy_repo, "kk", 3, resumes=2, level2=3)
    assert data["acts"][1].startswith("resume to iteration 6 after ")
    assert_tamper_found(toy_repo, "kk")


def test_an_extended_run_and_mechanisms_added_by_hand_between_resumes_replay(toy_repo, tmp_path):
    finish(toy_repo, "--name", "ex", "--iterations", "3", "--steps", "5")
    finish(toy_repo, "--resume", "ex", "--iterations", "5")  # extended after it finished
    assert sum(s.startswith("end of run ex") for s in subjects(toy_repo, "arx/ex")) == 2
    assert_replays(toy_repo, "ex", 2, resumes=1, trials=6)
    # the same run as an arx before resume events left it: the extension is derived from the
    # end commits, and the branch replays beside the first one
    repo = git.Repo(toy_repo)
    first_end = repo.git.log("--format=%H", "--grep=^end of run ex", "arx/ex").split()[-1]
    repo.git.branch("arx/ex-old", "arx/ex")
    repo.git.filter_branch("-f", "--tree-filter",
                           "sed -i '/\"event\": \"resume\"/d' runs/ex/trace.jsonl",
                           "--", f"{first_end}..arx/ex-old",
                           env={**os.environ, "FILTER_BRANCH_SQUELCH_WARNING": "1"})
    assert not [e for e in events(toy_repo, "ex", "arx/ex-old") if e["event"] == "resume"]
    old = replay(toy_repo, "arx/ex-old", "--json")
    assert old.exit_code == 0, old.output
    data = json.loads(old.output)
    assert data["replay_branch"] == "arx-replay/ex-old"
    assert data["acts"][1].startswith("resume to iteration 5 after 8 trace lines, ")  # 4 trials
    assert data["acts"][1].endswith("(derived from an end commit)")
    assert_tamper_found(toy_repo, "ex")
    # a run killed, resumed and killed again, given two mechanisms by hand, then resumed
    kill_after_trials(start(toy_repo, "--name", "mh", "--iterations", "7", "--budget", "0.3"),
                      2, 0.15)
    kill_after_trials(start(toy_repo, "--resume", "mh"), 2, 0.15)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(GOOD))
    bad.write_text(json.dumps(BAD))
    for patch, code in ((good, 0), (bad, 1)):
        added = CliRunner().invoke(cli, ["-C", str(toy_repo), "mechanism", "add", str(patch),
                                         "--run", "mh"])
        assert added.exit_code == code, added.output
    finish(toy_repo, "--resume", "mh")
    trace = events(toy_repo, "mh")
    manual = [e for e in trace if e["event"] == "level2"]
    assert [(e["mechanism"], e["verdict"], e["patch"]) for e in manual] == [
        ("OnlyLR", "pass", "runs/mh/mechanisms/01-OnlyLR.json"),
        ("Nope", "fail", "runs/mh/mechanisms/02-Nope.json")]
    stored = git.Repo(toy_repo).git.show("arx/mh:runs/mh/mechanisms/01-OnlyLR.json")
    assert json.loads(stored)["name"] == "OnlyLR"
    after = trace.index(manual[-1])
    assert all(e["focus"] == ["LR"] for e in trace[after:] if e["event"] == "trial"
               and e["kind"] == "trial" and e["status"] != "interrupted")
    data = assert_replays(toy_repo, "mh", 5, resumes=2)
    assert [a.split(" ")[0] for a in data["acts"]] == [
        "start", "resume", "mechanism", "mechanism", "resume"]
    assert_tamper_found(toy_repo, "mh")


def test_a_parallel_run_killed_mid_batch_replays(toy_repo):
    proc = start(toy_repo, "--name", "pb", "--iterations", "3", "--parallel", "2",
                 "--budget", "0.6")
    trace = toy_repo / ".arx" / "worktrees" / "pb" / "runs" / "pb" / "trace.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once the second batch is training
        lines = trace.read_text().splitlines() if trace.exists() else []
        if sum('"event": "start"' in x and '"iteration": 2' in x for x in lines) == 2:
            break
        time.sleep(0.02)
    time.sleep(0.2)
    kill(proc)
    finish(toy_repo, "--resume", "pb")
    interrupted = [e for e in events(toy_repo, "pb") if e.get("status") == "interrupted"]
    assert [(e["iteration"], e["seq"]) for e in interrupted] == [(2, 0), (2, 1)]
    assert_replays(toy_repo, "pb", 2, resumes=1)
    assert_tamper_found(toy_repo, "pb")


def test_an_llm_run_killed_and_resumed_replays_and_an_edited_transcript_is_found(
        toy_repo, llm_server):
    from support.scripted_model import responder

    llm_server.responder = responder([GOOD])
    env = {"ARX_API_KEY": "sk-test-not-a-key", "ARX_K": "2", "ARX_M": "1",
           "ARX_STEP_ASIDE": "false"}
    proc = start(toy_repo, "--name", "lk", "--group", "C", "--iterations", "5", "--budget",
                 "0.3", "--llm", llm_server.base_url, "--model", "test-model", env=env)
    kill_after_trials(proc, 3, 0.15)
    finish(toy_repo, "--resume", "lk", env=env)
    llm_server.stop()  # the replay needs no server
    data = assert_replays(toy_repo, "lk", 2, resumes=1)
    assert data["proposer"] == "llm" and data["counts"]["llm_requests"] > 8
    trace = events(toy_repo, "lk")
    resume = next(k for k, e in enumerate(trace) if e["event"] == "resume")
    victim = next(e["transcripts"][0] for e in trace[resume:] if e["event"] == "trial"
                  and e.get("transcripts"))

    def edit(path):
        data = json.loads((path / victim).read_text())
        answer = json.loads(data["response"])
        data["response"] = json.dumps({**answer, "hypothesis": "a different reason"})
        (path / victim).write_text(json.dumps(data, indent=2) + "\n")

    commit_on(toy_repo, "arx/lk", edit, "polish an answer")
    result = replay(toy_repo, "arx/lk", "--json", "--force")
    assert result.exit_code == 1, result.output
    d = json.loads(result.output)["first_divergence"]
    assert d["step"] == f"LLM request {victim.rsplit('/', 1)[-1]}" and d["field"] == "parsed"
