"""`arx apply`: a run's tuned values, and nothing else, as one commit on the user's branch.
Real runs on the toy target (constants style; the other styles: tests/cli/test_styles.py),
real git, the command through click."""

from __future__ import annotations

import json

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.app.apply import plan_apply
from arx.core.codemods.constants import discover_constants
from arx.core.errors import ConfigError, RepoError
from arx.core.loop.driver import run_to_end
from arx.core.proposers.base import Proposal, Proposer
from arx.core.repo.lock import RunLock
from arx.core.repo.workspace import open_run


class Scripted(Proposer):
    """A better LR and depth at iteration 1, then a worse batch size."""

    name = "scripted"

    def propose(self, request, feedback=None):
        changes = {"LR": 0.003, "DEPTH": 3} if request.iteration == 1 else {"BATCH_SIZE": 2**10}
        return [Proposal(changes=changes, hypothesis="h", source=self.name)]


@pytest.fixture(scope="module")
def steps_run(tmp_path_factory):
    """The toy target after a steps-mode run that kept LR and DEPTH (TRAIN_STEPS set to 7 in
    every trial, the seed and budget constants arx manages untouched by the search)."""
    from support.repos import make_toy_repo

    root = make_toy_repo(tmp_path_factory.mktemp("apply") / "project")
    ws = open_run(root, {"iterations": 2, "steps": 7}, name="s")
    run_to_end(ws, Scripted())
    assert "TRAIN_STEPS = 7" in git.Repo(root).git.show("arx/s:train.py")
    return root


def values(text):
    return {c.name: c.value for c in discover_constants(text)}


def test_apply_commits_only_the_tuned_values_on_the_current_branch(steps_run, tmp_path):
    root = tmp_path / "clone"
    git.Repo(steps_run).clone(root).git.branch("arx/s", "origin/arx/s")
    g = git.Repo(root)
    before = (root / "train.py").read_text()
    head = g.head.commit.hexsha

    dry = CliRunner().invoke(cli, ["-C", str(root), "apply", "s", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "-LR = 0.02" in dry.output and "+LR = 0.003" in dry.output
    assert "+DEPTH = 3" in dry.output and "TRAIN_STEPS" not in dry.output.split("would")[0]
    assert g.head.commit.hexsha == head and (root / "train.py").read_text() == before

    out = CliRunner().invoke(cli, ["-C", str(root), "apply", "arx/s"])
    assert out.exit_code == 0, out.output
    commit = g.head.commit
    assert commit.parents[0].hexsha == head and g.active_branch.name == "main"
    assert list(commit.stats.files) == ["train.py"]  # one file, nothing of arx's own
    after = (root / "train.py").read_text()
    assert values(after) == {**values(before), "LR": 0.003, "DEPTH": 3}
    assert "TRAIN_STEPS = 0" in after  # the step count arx set for its trials stays behind
    changed = [line for line in g.git.show("--format=", "HEAD").splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(changed) == sorted(["-LR = 0.02  # learning rate; best near 0.003",
                                      "+LR = 0.003  # learning rate; best near 0.003",
                                      "-DEPTH = 6  # layers; best 3", "+DEPTH = 3  # layers; best 3"])
    message = commit.message
    assert message.startswith("arx apply s: DEPTH 6->3, LR 0.02->0.003")
    assert "branch arx/s" in message and "not verified on held-out seeds" in message
    assert commit.trailers_dict["Arx-Applied"] == ["s"]
    assert json.loads(commit.trailers_dict["Arx-Changes"][0]) == {"LR": 0.003, "DEPTH": 3}
    assert "Arx-Run" not in commit.trailers_dict  # the user's commit: arx never reverts it
    assert git.Repo(root).git.status("--porcelain") == ""


def test_apply_refuses_a_dirty_tree_a_moved_target_and_other_branches(steps_run, tmp_path):
    root = tmp_path / "clone"
    git.Repo(steps_run).clone(root).git.branch("arx/s", "origin/arx/s")
    g = git.Repo(root)
    (root / "README.md").write_text("edited\n")
    with pytest.raises(RepoError, match="uncommitted changes in README.md") as exc:
        plan_apply(root, "s")
    assert "git stash" in exc.value.hint
    g.git.checkout("README.md")
    (root / "notes.txt").write_text("untracked files are fine\n")
    assert dict(plan_apply(root, "s").changes) == {"LR": (0.02, 0.003), "DEPTH": (6, 3)}

    (root / "train.py").write_text((root / "train.py").read_text().replace(
        "WEIGHT_DECAY = 0.1", "WEIGHT_DECAY = 0.3"))
    g.git.commit("-qam", "my own tuning since")
    with pytest.raises(RepoError, match="train.py changed since run s started") as exc:
        plan_apply(root, "s")
    assert "git diff" in exc.value.hint and "-- train.py" in exc.value.hint
    assert "(DEPTH 6->3, LR 0.02->0.003)" in exc.value.message  # what to set by hand
    out = CliRunner().invoke(cli, ["-C", str(root), "apply", "s"])
    assert out.exit_code == 1 and "changed since run s started" in out.output
    g.git.reset("--hard", "HEAD~1")

    g.git.checkout("arx/s")
    with pytest.raises(RepoError, match="arx/s is checked out"):
        plan_apply(root, "s")
    g.git.checkout("--detach", "main")
    with pytest.raises(RepoError, match="a detached HEAD is checked out"):
        plan_apply(root, "s")
    g.git.checkout("main")
    with RunLock(root, "s"):
        with pytest.raises(RepoError, match="run s is running"):
            plan_apply(root, "s")
    with pytest.raises(RepoError, match="no run named 'nope'"):
        plan_apply(root, "nope")


def test_a_run_that_kept_nothing_has_nothing_to_apply(tmp_path):
    from support.repos import make_toy_repo

    class Worse(Proposer):
        name = "scripted"

        def propose(self, request, feedback=None):
            return [Proposal(changes={"DEPTH": 12}, hypothesis="h", source=self.name)]

    root = make_toy_repo(tmp_path / "p")
    run_to_end(open_run(root, {"iterations": 1}, name="w"), Worse())
    with pytest.raises(ConfigError, match="run w kept no change"):
        plan_apply(root, "w")
