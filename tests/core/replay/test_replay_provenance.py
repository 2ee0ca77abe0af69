"""What a branch records of the machine and versions that made it, and what replay does with
it: other deciding versions exit 2 naming each (unless --allow-version-drift), replay branches
are named after the branch replayed, and --retrain's tolerance follows the metric's noise."""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.repo.paths import replay_branch_of

from support.repos import make_toy_repo

OPTUNA = metadata.version("optuna")


def arx(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = make_toy_repo(tmp_path_factory.mktemp("prov") / "project")
    result = arx(root, "run", "--name", "v", "--iterations", "3", "--budget", "0.01", "--quiet")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def root(made, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(made, dst, symlinks=True)
    return dst


def amend(root, path, change):
    """Rewrite ``path`` in the last commit of arx/v (as another machine would have made it)."""
    repo = git.Repo(root)
    repo.git.checkout("arx/v")
    target = root / path
    target.write_text(change(target.read_text()))
    repo.git.commit("-a", "--amend", "--no-edit", "--no-verify")
    repo.git.checkout("main")


def with_optuna(version):
    def change(text):
        lines = [json.loads(line) for line in text.splitlines()]
        for line in lines:
            line["versions"]["optuna"] = version
        return "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    return change


def test_a_run_records_its_versions_machine_and_command(made):
    text = git.Repo(made).git.show("arx/v:runs/v/provenance.jsonl")
    (line,) = [json.loads(x) for x in text.splitlines()]
    assert line["event"] == "start" and line["iterations"] == 3
    assert line["versions"]["optuna"] == OPTUNA
    assert line["versions"]["python"] == platform.python_version()
    assert {"arx", "ruff", "libcst"} <= set(line["versions"])
    assert "torch" not in line["versions"]  # the toy target does not import it
    assert line["machine"]["cpu"] and isinstance(line["machine"]["gpu"], list)
    assert line["command"].endswith("train.py") and "--budget" in line["argv"]
    # the baseline commit carries it (the first commit of the run)
    first = git.Repo(made).git.log("--format=%H", "main..arx/v").split()[-1]
    assert "runs/v/provenance.jsonl" in git.Repo(made).git.show("--name-only", first)


def test_another_optuna_version_exits_2_naming_both_unless_drift_is_allowed(root):
    amend(root, "runs/v/provenance.jsonl", with_optuna("4.5.0"))
    refused = arx(root, "replay", "arx/v")
    assert refused.exit_code == 2, refused.output
    assert f"optuna 4.5.0 on the branch, {OPTUNA} here" in refused.output
    assert "pip install optuna==4.5.0" in refused.output and "--allow-version-drift" in \
        refused.output
    allowed = arx(root, "replay", "arx/v", "--allow-version-drift")
    assert allowed.exit_code == 0, allowed.output
    assert f"version drift allowed: optuna 4.5.0 on the branch, {OPTUNA} here" in allowed.output
    # a divergence is then put down to the recorded difference

    def bump(text):
        lines = [json.loads(x) for x in text.splitlines()]
        for e in lines:
            if e.get("event") == "trial" and e.get("iteration") == 2:
                e["metric"] -= 5.0
        return "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines)

    amend(root, "runs/v/trace.jsonl", bump)
    diverged = arx(root, "replay", "arx/v", "--allow-version-drift", "--force", "--json")
    assert diverged.exit_code == 1, diverged.output
    data = json.loads(diverged.output)
    assert data["provenance"]["decisive"] == [f"optuna 4.5.0 on the branch, {OPTUNA} here"]
    text = arx(root, "replay", "arx/v", "--allow-version-drift", "--force").output
    assert "likely cause: the versions differ from the run's: optuna 4.5.0" in text


def test_replay_branches_are_named_after_the_branch_replayed(root):
    repo = git.Repo(root)
    repo.git.update_ref("refs/remotes/origin/arx/v", "arx/v")
    repo.git.branch("arx/v-copy", "arx/v")
    names = {}
    for ref in ("arx/v", "origin/arx/v", "arx/v-copy"):
        result = arx(root, "replay", ref, "--json")
        assert result.exit_code == 0, result.output
        names[ref] = json.loads(result.output)["replay_branch"]
    assert names["arx/v"] == "arx-replay/v" and names["arx/v-copy"] == "arx-replay/v-copy"
    assert names["origin/arx/v"] == replay_branch_of("origin/arx/v")
    assert names["origin/arx/v"].startswith("arx-replay/origin-arx-v-")
    assert all(repo.git.rev_parse("--verify", b) for b in names.values())  # side by side
    again = arx(root, "replay", "v")
    assert again.exit_code == 2 and "arx-replay/v already exists" in again.output
    assert arx(root, "replay", "v", "--force").exit_code == 0


def test_retrain_tolerance_follows_the_measured_noise_else_the_baseline(root):
    plain = arx(root, "replay", "arx/v", "--retrain", "--json")
    assert plain.exit_code == 0, plain.output
    retrain = json.loads(plain.output)["retrain"]
    baseline = retrain["rows"][0]["recorded"]
    assert retrain["tolerance"] == pytest.approx(0.01 * abs(baseline))
    assert "1% of |baseline metric|" in retrain["rule"]
    noise = {"event": "noise", "run": "v", "iteration": 0, "method": "seeds", "n": 4,
             "metrics": [1.0, 1.1, 1.2, 1.3], "mean": 1.15, "sd": 0.0125, "v": 1}
    amend(root, "runs/v/trace.jsonl",
          lambda text: text + json.dumps(noise, sort_keys=True) + "\n")
    noisy = arx(root, "replay", "arx/v", "--retrain", "--force")
    assert noisy.exit_code == 0, noisy.output
    assert "every |drift| <= 0.0375 (3 x the metric's measured sd 0.0125, seeds, n=4)" in \
        noisy.output
    given = json.loads(arx(root, "replay", "arx/v", "--retrain", "--force", "--tolerance",
                           "0.5", "--json").output)["retrain"]
    assert given["tolerance"] == 0.5 and given["tolerance_source"] == "--tolerance"
