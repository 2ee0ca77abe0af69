"""A run with pruned trials replays: the runner's prune rule is asked again at every recorded
point of each curve, and a recorded curve the rule would not have stopped is a divergence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import git
import pytest

from arx.core.loop.driver import run_to_end
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.run import replay
from arx.core.repo.workspace import open_run

from support.repos import edit_toml, make_script_repo

CURVE = Path(__file__).parents[2] / "support" / "curve_train.py"
LOCKED = ["DEPTH", "EVALS", "EVAL_SLEEP", "SEED", "TRAIN_STEPS", "TIME_BUDGET"]


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    root = make_script_repo(tmp_path_factory.mktemp("prune") / "project", CURVE, locked=LOCKED)
    edit_toml(root, params={"LR": {"low": 0.001, "high": 0.3, "log": True}},
              run={"noise": "off", "verify": 0})
    ws = open_run(root, {"iterations": 3, "seed": 0}, name="p")
    run_to_end(ws, offline_proposer(ws.config))
    return root


def trace(root, name="p"):
    text = git.Repo(root).git.show(f"arx/{name}:runs/{name}/trace.jsonl")
    return [json.loads(line) for line in text.splitlines()]


def copy_of(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_run_with_pruned_trials_replays_identically(pruned_run, tmp_path):
    statuses = [e["status"] for e in trace(pruned_run) if e["event"] == "trial"]
    assert statuses.count("pruned") >= 1, statuses
    report = replay(copy_of(pruned_run, tmp_path), "arx/p")
    assert report.reproduced, report.render()
    assert report.counts["trials_served"] == report.counts["trials"] == 4


def edit_pruned(root, lines, fields, message):
    """Commit the run's trace with its first pruned trial's ``fields`` changed."""
    pruned = next(e for e in lines if e.get("status") == "pruned")
    repo = git.Repo(root)
    repo.git.checkout("arx/p")
    out = [json.dumps({**e, **fields} if e is pruned else e, sort_keys=True) for e in lines]
    (root / "runs/p/trace.jsonl").write_text("\n".join(out) + "\n")
    repo.git.commit("-am", message, "--no-verify")
    repo.git.checkout("main")


def test_a_curve_the_rule_would_not_stop_is_a_divergence(pruned_run, tmp_path):
    root = copy_of(pruned_run, tmp_path)
    lines = trace(root)
    base = next(e for e in lines if e.get("status") == "baseline")
    pruned = next(e for e in lines if e.get("status") == "pruned")
    # its curve as good as the best's: the rule never stops it
    edit_pruned(root, lines, {"curve": base["curve"][:len(pruned["curve"])]},
                "a pruned trial's curve made to look good")
    report = replay(root, "arx/p")
    d = report.divergence
    assert not report.reproduced and d is not None, report.render()
    assert d.step == f"iteration {pruned['iteration']} (trial)"
    assert "does not stop the trial" in d.what and d.original == "pruned"


def test_a_changed_stopping_point_is_a_divergence(pruned_run, tmp_path):
    """``pruned_at`` is compared (a newer trial field, issue #24): the replay stops the trial
    where its curve says, and the branch says it stopped elsewhere."""
    root = copy_of(pruned_run, tmp_path)
    lines = trace(root)
    pruned = next(e for e in lines if e.get("status") == "pruned")
    edit_pruned(root, lines, {"pruned_at": [pruned["pruned_at"][0] + 1, pruned["pruned_at"][1]]},
                "a pruned trial's stopping point changed")
    report = replay(root, "arx/p")
    d = report.divergence
    assert not report.reproduced and d is not None, report.render()
    assert d.step == f"iteration {pruned['iteration']} (trial)" and d.field == "pruned_at"
    assert d.original == [pruned["pruned_at"][0] + 1, pruned["pruned_at"][1]]
    assert d.replay == pruned["pruned_at"]
