"""Issue #16's acceptance on the default GPT target: a group D run keeps at least one mechanism
and reverts one for no measured benefit, both readable in `git log` (tiny prepared data, steps
mode, real torch training in subprocess trials, k = 3, m = 1, judge window 3, 21 iterations:
Level 2 steps aside while the search gains, so it takes that long to add, keep and revert;
about a minute and a half on 2 CPU cores). The same run checks what a plain steps-mode run of
the target must show (the constant set in the baseline, the data fingerprinted)."""

from __future__ import annotations

import json

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli


@pytest.mark.slow
def test_group_d_on_the_gpt_target_keeps_one_mechanism_and_reverts_one(gpt_demo, monkeypatch):
    for key, value in {"ARX_K": "3", "ARX_M": "1", "ARX_JUDGE_WINDOW": "3"}.items():
        monkeypatch.setenv(key, value)
    runner, demo = CliRunner(), gpt_demo
    result = runner.invoke(cli, ["-C", str(demo), "run", "--name", "gptd", "--group", "D",
                                 "--iterations", "21", "--steps", "3", "--noise", "off",
                                 "--verify", "0", "--seed", "1", "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # steps mode on the real target: --steps set the constant in the baseline, and the data
    # it trained on is fingerprinted (this run also stands for a plain steps-mode run)
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    trials = [e for e in events if e["event"] == "trial" and e.get("kind", "trial") != "confirm"]
    assert [t["iteration"] for t in trials][:3] == [0, 1, 2]
    base = trials[0]
    assert base["status"] == "baseline" and base["num_steps"] == 3
    assert 0 < base["metric"] < 20 and len(base["data_fingerprint"]) == 12
    repo = git.Repo(demo)
    assert "TRAIN_STEPS = 3" in repo.git.show("arx/gptd:train.py")
    assert repo.git.show("arx/gptd:runs/gptd/config.json").count('"steps": 3') == 1
    log = git.Repo(demo).git.log("--format=%s", "arx/gptd").splitlines()
    kept = [s for s in log if s.startswith("L2 mechanism ") and s.endswith(" kept: measured benefit")]
    reverted = [s for s in log if s.startswith("Revert L2 mechanism ")
                and s.endswith(": no measured benefit")]
    assert kept and reverted, "\n".join(log)
