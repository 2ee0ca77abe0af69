"""Level 2 and its outcome gate on the default GPT target, end to end: a group D run adds a
catalog mechanism and judges it, readable in `git log` (tiny prepared data, steps mode, real
torch training in subprocess trials, k = 3, m = 1, judge window 3, the paper's cadence so that
7 iterations add and judge one: under a minute on 2 CPU cores). Issue #16's "keeps one and
reverts one" on this target took a 21-iteration run (2.5 minutes of the suite, its log in
docs/ablation.md); the suite now checks it on the toy target (tests/core/levels/
test_outcome.py) and here that the real target goes through the same gate. The same run checks
what a plain steps-mode run of the target must show (the constant set in the baseline, the data
fingerprinted)."""

from __future__ import annotations

import json

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli


@pytest.mark.slow
def test_group_d_on_the_gpt_target_adds_a_mechanism_and_the_outcome_gate_judges_it(
        gpt_demo, monkeypatch):
    for key, value in {"ARX_K": "3", "ARX_M": "1", "ARX_JUDGE_WINDOW": "3",
                       "ARX_STEP_ASIDE": "false"}.items():
        monkeypatch.setenv(key, value)
    runner, demo = CliRunner(), gpt_demo
    result = runner.invoke(cli, ["-C", str(demo), "run", "--name", "gptd", "--group", "D",
                                 "--iterations", "7", "--steps", "3", "--noise", "off",
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
    log = git.Repo(demo).git.log("--format=%s%n%(trailers:key=Arx-Outcome,valueonly)",
                                  "arx/gptd").splitlines()
    added = [s for s in log if s.startswith("L2 mechanism ") and s.endswith(")")]
    judged = [s for s in log if s.endswith(" kept: measured benefit")
              or (s.startswith("Revert L2 mechanism ") and s.endswith(": no measured benefit"))]
    assert added and judged, "\n".join(log)
    name = added[-1].split()[2]
    assert name in judged[0], "\n".join(log)  # the mechanism added at cycle 1 was judged
    outcome = next(s for s in log if s.startswith(("kept:", "no_benefit:")))
    assert "(iterations 1-3 -> 4-6)" in outcome, outcome
