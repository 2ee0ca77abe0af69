"""One small real run of arx on the default GPT target: `arx init`, then `arx run` in steps mode
on the tiny prepared data (real torch training in subprocess trials, real git)."""

from __future__ import annotations

import json

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli


@pytest.mark.slow
def test_arx_runs_the_default_target_in_steps_mode(gpt_demo):
    runner, demo = CliRunner(), gpt_demo
    result = runner.invoke(cli, ["-C", str(demo), "run", "--name", "gpt", "--iterations", "2",
                                 "--steps", "3", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    trials = [e for e in events if e["event"] == "trial"]
    assert [t["iteration"] for t in trials] == [0, 1, 2]
    base = trials[0]
    assert base["status"] == "baseline" and base["num_steps"] == 3
    assert 0 < base["metric"] < 20 and len(base["data_fingerprint"]) == 12
    repo = git.Repo(demo)
    source = repo.git.show("arx/gpt:train.py")
    assert "TRAIN_STEPS = 3" in source  # --steps set the target's constant in the baseline
    assert repo.git.show("arx/gpt:runs/gpt/config.json").count('"steps": 3') == 1
