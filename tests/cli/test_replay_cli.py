"""`arx replay` through click: the report, --json and --report, exit codes 0/1/2, and the CI
workflow that replays pushed run branches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.errors import ConfigError
from arx.core.loop.engine import Engine
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.workflow import (
    REPLAY_WORKFLOW_PATH,
    replay_workflow_text,
    write_replay_workflow,
)
from arx.core.repo.workspace import open_run

from support.repos import make_toy_repo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = make_toy_repo(tmp_path_factory.mktemp("cli") / "project")
    ws = open_run(root, {"iterations": 6, "group": "B", "k": 2}, name="r")
    try:
        Engine(ws, offline_proposer(ws.config)).run()
    finally:
        ws.close(remove_worktree=True)
    return root


@pytest.fixture
def repo(finished, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def arx(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), "replay", *args], catch_exceptions=False)


def rewrite_trace(root, change):
    """A commit on top of arx/r whose trace lines went through ``change``."""
    g = git.Repo(root)
    g.git.checkout("arx/r")
    path = root / "runs/r/trace.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in change(lines)))
    g.git.commit("-am", "rewrite the trace", "--no-verify")
    g.git.checkout("main")


def test_a_run_that_reproduces_exits_0_with_a_readable_report(repo, tmp_path):
    result = arx(repo, "arx/r")
    assert result.exit_code == 0, result.output
    assert "decisions and commits: IDENTICAL to the original" in result.output
    assert re.search(r"checked (\d+) of \1 steps", result.output)
    assert "result: REPRODUCED" in result.output
    again = arx(repo, "r")
    assert again.exit_code == 2 and "--force" in again.output
    out = tmp_path / "report.json"
    result = arx(repo, "r", "--force", "--json", "--report", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == json.loads(out.read_text())
    assert data["result"] == "reproduced" and data["first_divergence"] is None
    assert data["steps_checked"] == data["steps"] and data["counts"]["trials"] == 7
    assert data["replay_branch"] == "arx-replay/r" and "tree" in data["compared"]


def test_a_divergence_exits_1_and_shows_both_sides(repo):
    def bump(lines):
        for e in lines:
            if e.get("event") == "trial" and e.get("iteration") == 3:
                e = {**e, "metric": e["metric"] - 5.0}  # now it would have been a keep
            yield e

    rewrite_trace(repo, bump)
    result = arx(repo, "arx/r")
    assert result.exit_code == 1, result.output
    assert "DIVERGED at step" in result.output and ": iteration 3 (trial)" in result.output
    assert "original :" in result.output and "replay   :" in result.output
    assert "result: DIVERGED" in result.output


def test_an_older_trace_version_exits_2_with_a_clear_message(repo):
    rewrite_trace(repo, lambda lines: ({**e, "v": 0} for e in lines))
    result = arx(repo, "arx/r")
    assert result.exit_code == 2
    assert "trace version 0; this arx reads and replays trace version 1" in result.output
    assert "hint: replay the branch with the arx release that made the run" in result.output
    assert "Traceback" not in result.output
    as_json = arx(repo, "arx/r", "--json")
    assert as_json.exit_code == 2
    data = json.loads(as_json.output)
    assert data["result"] == "unusable" and "trace version 0" in data["error"]


def test_a_nesting_too_deep_to_parse_exits_2_and_status_still_reads(repo):
    """A stranger's branch whose trace holds a line nested 100,000 deep: json.loads would raise
    RecursionError in arx; the depth is checked first, in linear time."""
    trace = repo / "runs/r/trace.jsonl"
    g = git.Repo(repo)
    g.git.checkout("arx/r")
    with trace.open("a") as fh:
        fh.write('{"v": 1, "event": "note", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    g.git.commit("-qam", "a deep line")
    g.git.checkout("main")
    result = arx(repo, "arx/r")
    assert result.exit_code == 2 and "nested deeper than 100" in result.output, result.output
    assert "Traceback" not in result.output and "RecursionError" not in result.output
    status = CliRunner().invoke(cli, ["-C", str(repo), "status"], catch_exceptions=False)
    assert status.exit_code == 0 and "r " in status.output, status.output


def test_unusable_input_exits_2(repo):
    missing = arx(repo, "arx/nothing")
    assert missing.exit_code == 2 and "no branch 'arx/nothing'" in missing.output

    def stopped(lines):
        for e in lines:
            if e.get("event") == "trial" and e.get("iteration") == 2:
                yield {**e, "status": "interrupted", "reason": "arx was stopped"}
            yield e

    rewrite_trace(repo, stopped)
    resumed = arx(repo, "arx/r")
    assert resumed.exit_code == 2 and "stopped during iteration 2 and resumed" in resumed.output
    misuse = arx(repo, "arx/r", "--only-kept")
    assert misuse.exit_code == 2 and "go with --retrain" in misuse.output


def test_the_replay_workflow_replays_pushed_run_branches(tmp_path):
    path = write_replay_workflow(tmp_path)
    assert path == tmp_path / REPLAY_WORKFLOW_PATH
    text = path.read_text()
    flow = yaml.safe_load(text)
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["arx/**"]
    steps = flow["jobs"]["replay"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    assert any('arx replay "$BRANCH"' in s.get("run", "") for s in steps)
    assert "arx-autoresearch==" in text and "__ARX_PIP_SPEC__" not in text
    assert write_replay_workflow(tmp_path) == path  # the same content again is fine
    path.write_text(text + "# mine\n")
    with pytest.raises(ConfigError, match="--force"):
        write_replay_workflow(tmp_path)
    write_replay_workflow(tmp_path, force=True)
    assert path.read_text() == replay_workflow_text()
    # the copy in this repository is the template, with whatever version it was written for
    template = (ROOT / "runner_repo" / "replay.yml").read_text()
    ours = (ROOT / ".github" / "workflows" / "replay.yml").read_text()
    assert re.sub(r"'arx-autoresearch==[^']+'", "'__ARX_PIP_SPEC__'", ours) == template


def check_workflows(*paths):
    """check-jsonschema against its built-in GitHub workflow schema (shipped with it: offline)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_the_workflows_are_valid_github_workflows(tmp_path):
    ours = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert [p.name for p in ours] == ["ci.yml", "replay.yml"]
    written = write_replay_workflow(tmp_path / "managed")  # what `arx init --replay-ci` writes
    result = check_workflows(*ours, written)
    assert result.returncode == 0, result.stdout + result.stderr
    # the check can fail: a step that both runs a command and uses an action is refused
    broken = tmp_path / "broken.yml"
    flow = yaml.safe_load(written.read_text())
    flow["jobs"]["replay"]["steps"][0]["run"] = "echo both"
    broken.write_text(yaml.safe_dump(flow))
    refused = check_workflows(broken)
    assert refused.returncode == 1 and "broken.yml" in refused.stdout + refused.stderr


def _step_scripts(text):
    steps = yaml.safe_load(text)["jobs"]["replay"]["steps"]
    replay_step = next(s for s in steps if s.get("name", "").startswith("Replay "))
    summary_step = next(s for s in steps if s.get("name") == "Summary")
    return replay_step["run"], summary_step["run"]


def test_the_replay_workflow_s_commands_replay_a_real_branch(repo, tmp_path):
    """The Replay and Summary steps, run as GitHub runs a `shell: bash` step, on arx/r."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "arx"  # the console script `pip install` would put on PATH
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m arx.cli.main \"$@\"\n")
    wrapper.chmod(0o755)
    replay_script, summary_script = _step_scripts(replay_workflow_text())
    summary = tmp_path / "summary.md"

    def step(script, branch):
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "BRANCH": branch, "ARX_REPLAY_ARGS": "", "GITHUB_STEP_SUMMARY": str(summary)}
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    done = step(replay_script, "arx/r")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((repo / "arx-replay.json").read_text())["result"] == "reproduced"
    assert step(summary_script, "arx/r").returncode == 0
    assert "result: REPRODUCED" in summary.read_text()

    def bump(lines):
        for e in lines:
            if e.get("event") == "trial" and e.get("iteration") == 3:
                e = {**e, "metric": e["metric"] - 5.0}
            yield e

    rewrite_trace(repo, bump)
    (repo / "arx-replay.json").unlink()
    git.Repo(repo).git.branch("-D", "arx-replay/r")  # a CI checkout starts without it
    failed = step(replay_script, "arx/r")
    assert failed.returncode == 1, failed.stdout + failed.stderr  # the check fails
    assert json.loads((repo / "arx-replay.json").read_text())["result"] == "diverged"
