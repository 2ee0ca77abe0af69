"""Kill arx for real (SIGKILL, mid-run) and resume: nothing lost, nothing repeated.

Also: two runs in one repository at once do not collide. Everything here is a real `arx`
process on the toy target; nothing is faked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.app.runs import run_status
from arx.core.codemods.constants import discover_constants
from arx.core.repo.git import GitRepo

from support.repos import git_repo
from support.styles import FILES

# serial: (pytest -m serial) SIGKILLs timed against live trials; not beside another test's load (README)
pytestmark = pytest.mark.serial

ARX = [sys.executable, "-m", "arx.cli.main"]


def start_run(repo, *args):
    return subprocess.Popen([*ARX, "-C", str(repo), "run", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after(proc, n_trials, extra_s):
    """Read JSON progress until n_trials trial records appeared, then SIGKILL mid-next-trial."""
    seen = 0
    for line in proc.stdout:
        if json.loads(line).get("event") == "trial":
            seen += 1
            if seen >= n_trials:
                break
    time.sleep(extra_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def records(repo, name):
    text = git.Repo(repo).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return [r for r in map(json.loads, text.splitlines()) if r["event"] == "trial"]


@pytest.mark.parametrize("kills", [[(3, 0.15), (6, 0.0)]])
def test_sigkill_then_resume_loses_and_repeats_nothing(toy_repo, kills):
    T = 10
    for n_trials, extra in kills:
        proc = start_run(toy_repo, "--iterations", str(T), "--budget", "0.3",
                         *(["--name", "k"] if n_trials == kills[0][0] else ["--resume", "k"]))
        kill_after(proc, n_trials, extra)
        assert proc.returncode == -signal.SIGKILL
        assert run_status(GitRepo(toy_repo), "k").state == "interrupted"
    done = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--resume", "k", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    recs = records(toy_repo, "k")
    finished = [r for r in recs if r["kind"] == "trial" and r["status"] != "interrupted"]
    assert sorted(r["iteration"] for r in finished) == list(range(1, T + 1))
    assert len([r for r in recs if r["status"] == "baseline"]) == 1
    # an interrupted trial is re-run with the same proposal
    for r in recs:
        if r["status"] == "interrupted" and r["kind"] == "trial":
            rerun = next(f for f in finished if f["iteration"] == r["iteration"])
            assert rerun["changes"] == r["changes"]
    # every keep in the trace is exactly one commit, and the branch holds the best config
    log = GitRepo(toy_repo).log("arx/k")
    committed = sorted(int(c.trailers["Arx-Iteration"]) for c in log
                       if c.trailers.get("Arx-Status") == "keep")
    assert committed == sorted(r["iteration"] for r in finished if r["status"] == "keep")
    best = [r for r in recs if r["status"] in ("baseline", "keep")][-1]
    source = git.Repo(toy_repo).git.show("arx/k:train.py")
    values = {c.name: c.value for c in discover_constants(source)}
    assert {k: values[k] for k in best["config"]} == best["config"]
    assert run_status(GitRepo(toy_repo), "k").state == "finished"
    # no trial was left running by the killed processes
    pid_file = toy_repo / ".arx" / "pids" / "k.pid"
    assert not pid_file.exists()
    assert not git.Repo(toy_repo).is_dirty(untracked_files=True)


def test_two_runs_in_one_repo_do_not_collide(toy_repo):
    a = start_run(toy_repo, "--name", "one", "--iterations", "6")
    b = start_run(toy_repo, "--name", "two", "--iterations", "6", "--seed", "7")
    for proc in (a, b):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    repo = GitRepo(toy_repo)
    assert repo.branch_exists("arx/one") and repo.branch_exists("arx/two")
    for name in ("one", "two"):
        assert run_status(repo, name).state == "finished"
        assert len([r for r in records(toy_repo, name) if r["kind"] == "trial"]) == 6
    assert not git.Repo(toy_repo).is_dirty(untracked_files=True)
    assert git.Repo(toy_repo).active_branch.name == "main"


def test_a_run_name_cannot_be_started_twice(toy_repo):
    first = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--name", "x", "--iterations", "1",
                            "--quiet"], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--name", "x", "--iterations", "1"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0
    assert "already exists" in again.stderr and "--resume x" in again.stderr


def test_no_orphan_trial_survives_a_killed_arx(toy_repo):
    proc = start_run(toy_repo, "--name", "orphan", "--iterations", "3", "--budget", "2.5")
    kill_after(proc, 1, 0.8)  # killed while the first trial sleeps its 2.5 s
    pid_file = toy_repo / ".arx" / "pids" / "orphan.pid"
    pgid = json.loads(pid_file.read_text())["pgid"]
    os.killpg(pgid, 0)  # the orphaned trial is still running after arx died
    done = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--resume", "orphan", "--iterations",
                           "1", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not pid_file.exists()
    # the orphaned trial's process group was killed on resume
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_a_killed_parallel_batch_resumes_with_the_same_candidates(toy_repo):
    proc = start_run(toy_repo, "--name", "pb", "--iterations", "3", "--parallel", "2",
                     "--budget", "1.5")
    trace = toy_repo / ".arx" / "worktrees" / "pb" / "runs" / "pb" / "trace.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once the second batch is training
        lines = trace.read_text().splitlines() if trace.exists() else []
        if sum('"event": "start"' in x and '"iteration": 2' in x for x in lines) == 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run([*ARX, "-C", str(toy_repo), "run", "--resume", "pb", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    recs = records(toy_repo, "pb")
    finished = [r for r in recs if r["kind"] == "trial" and r["status"] != "interrupted"]
    assert sorted({r["iteration"] for r in finished}) == [1, 2, 3]
    per_iteration = {i: sorted(r["seq"] for r in finished if r["iteration"] == i) for i in (1, 2, 3)}
    assert all(seqs in ([0, 1], [0]) for seqs in per_iteration.values()), per_iteration
    interrupted = [r for r in recs if r["status"] == "interrupted"]
    assert interrupted, "the kill did not land inside a batch"
    for r in interrupted:
        rerun = [f["changes"] for f in finished if f["iteration"] == r["iteration"]]
        assert r["changes"] in rerun
    assert run_status(GitRepo(toy_repo), "pb").state == "finished"


def test_a_killed_run_of_several_files_resumes_commits_each_and_replays(tmp_path):
    """train.py + config.py (``[target] files``): a SIGKILL mid-run, a resume, then every
    keep's config.py holds its config and the branch replays."""
    root = tmp_path / "p"
    repo = git_repo(root)
    for path, text in FILES["module"].items():
        (root / path).write_text(text)
    repo.git.add(A=True)
    repo.index.commit("mine")
    init = CliRunner().invoke(cli, ["-C", str(root), "init", str(root), "--target", "train.py",
                                    "--command", f"{sys.executable} train.py", "--metric",
                                    "loss"])
    assert init.exit_code == 0, init.output
    proc = start_run(root, "--iterations", "4", "--name", "m", "--verify", "0", "--noise", "off")
    kill_after(proc, 2, 0.05)
    done = subprocess.run([*ARX, "-C", str(root), "run", "--resume", "m", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    recs = records(root, "m")
    finished = [r for r in recs if r["kind"] == "trial" and r["status"] != "interrupted"]
    assert sorted(r["iteration"] for r in finished) == list(range(1, 5))
    g = git.Repo(root)
    keeps = [c for c in g.iter_commits("arx/m") if c.trailers_dict.get("Arx-Status") == ["keep"]]
    assert len(keeps) == len([r for r in finished if r["status"] == "keep"])
    for commit in keeps:
        assert commit.trailers_dict["Arx-Files"] == ["config.py"]
        assert {p for p in commit.stats.files if not p.startswith("runs/")} == {"config.py"}
        rec = next(r for r in finished if r["iteration"] == int(
            commit.trailers_dict["Arx-Iteration"][0]))
        values = {c.name: c.value for c in discover_constants(
            commit.tree["config.py"].data_stream.read().decode(), "config.py")}
        assert {f"config.py:{k}": v for k, v in values.items()} == rec["config"]
        assert rec["files"] == ["config.py"]
    assert not g.is_dirty(untracked_files=True)
    replay = CliRunner().invoke(cli, ["-C", str(root), "replay", "arx/m"])
    assert replay.exit_code == 0 and "REPRODUCED" in replay.output, replay.output
