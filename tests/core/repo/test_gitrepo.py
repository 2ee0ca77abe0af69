"""GitRepo against real temporary repositories and real processes."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from arx.core.errors import RepoError
from arx.core.repo.git import ARX_AUTHOR, GitRepo
from arx.core.repo.gittext import MAX_BODY, MAX_SUBJECT, MAX_TRAILER


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path, monkeypatch):
    """No test may see the machine's global or system git config (identity, hooks, signing)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("AUTHOR", "COMMITTER"):
        for part in ("NAME", "EMAIL", "DATE"):
            monkeypatch.delenv(f"GIT_{name}_{part}", raising=False)


def git(cwd: Path, *args: str, **kw) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, **kw
    ).stdout


def make_repo(path: Path, configured: bool = True) -> GitRepo:
    repo = GitRepo.init(path)
    if configured:
        git(path, "config", "user.name", "Test User")
        git(path, "config", "user.email", "test@example.com")
    return repo


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    repo = make_repo(tmp_path / "repo")
    (repo.root / "train.py").write_text("LR = 0.1\n")
    repo.commit(["train.py"], "baseline", trailers={"Arx-Run": "base"})
    return repo


def test_init_gives_unborn_main(tmp_path):
    repo = make_repo(tmp_path / "r")
    assert repo.root == (tmp_path / "r").resolve()
    assert repo.head_sha() is None
    assert repo.current_branch() == "main"
    assert repo.log() == []
    (repo.root / "a.txt").write_text("a")
    assert repo.dirty_paths() == ["a.txt"]


def test_not_a_repository(tmp_path):
    with pytest.raises(RepoError) as err:
        GitRepo(tmp_path)
    assert "not inside a git work tree" in str(err.value)
    assert "git init" in err.value.hint


def test_subdirectory_opens_its_repository(repo):
    (repo.root / "sub").mkdir()
    assert GitRepo(repo.root / "sub").root == repo.root


def test_trailers_round_trip(repo):
    (repo.root / "train.py").write_text("LR = 0.05\n")
    hypothesis = "lower LR: the loss\n  spikes early"
    sha = repo.commit(
        ["train.py"],
        "L1 #1 keep LR 0.1->0.05: val_bpb 1.10->1.09",
        body="First paragraph.\n\nSecond: paragraph.",
        trailers={"Arx-Run": "r1", "Arx-Hypothesis": hypothesis, "Arx-Metric": "1.09"},
    )
    assert sha == repo.head_sha()
    record = repo.log(max_count=1)[0]
    assert record.sha == sha
    assert record.subject == "L1 #1 keep LR 0.1->0.05: val_bpb 1.10->1.09"
    assert record.body == "First paragraph.\n\nSecond: paragraph."
    assert record.trailers == {
        "Arx-Run": "r1",
        "Arx-Hypothesis": "lower LR: the loss spikes early",
        "Arx-Metric": "1.09",
    }
    assert record.made_by_arx
    assert dt.datetime.fromisoformat(record.authored_at).tzinfo is not None
    # plain git reads the same trailer block
    value = git(repo.root, "log", "-1", "--format=%(trailers:key=Arx-Hypothesis,valueonly)")
    assert value.strip() == "lower LR: the loss spikes early"
    assert git(repo.root, "log", "-1", "--format=%an <%ae> / %cn <%ce>").strip() == (
        "Test User <test@example.com> / Test User <test@example.com>"
    )
    assert [r.subject for r in repo.log()] == [record.subject, "baseline"]
    assert [r.subject for r in repo.log(paths=["train.py"], max_count=5)][-1] == "baseline"


def test_log_without_body_or_trailers(repo):
    (repo.root / "b.txt").write_text("b")
    repo.commit(["b.txt"], "plain  subject\nwith newline", body="# not a comment")
    record = repo.log(max_count=1)[0]
    assert record.subject == "plain subject with newline"
    assert record.body == "# not a comment"
    assert record.trailers == {}
    assert not record.made_by_arx
    with pytest.raises(RepoError):
        repo.log("no-such-branch")


def test_a_huge_hypothesis_is_cut_to_a_stated_size_and_never_passed_on_argv(repo):
    (repo.root / "b.txt").write_text("b")
    huge = "x" * 200_000  # on argv: E2BIG (Argument list too long)
    sha = repo.commit(["b.txt"], "s" * 500 + "\x00", body=huge + "\x00\x1b[31m",
                      trailers={"Arx-Run": "r", "Arx-Hypothesis": huge})
    record = repo.log(max_count=1)[0]
    assert sha and record.sha == sha
    assert len(record.subject) <= MAX_SUBJECT and "characters cut" in record.subject
    assert len(record.body) <= MAX_BODY and record.body.endswith("characters cut]")
    assert len(record.trailers["Arx-Hypothesis"]) <= MAX_TRAILER and record.made_by_arx
    assert "\x00" not in record.body and "\x1b" not in record.body


def test_commit_returns_none_when_nothing_changed(repo):
    assert repo.commit(["train.py"], "again", trailers={"Arx-Run": "r"}) is None
    assert repo.commit([], "nothing") is None
    sha = repo.commit(["train.py"], "empty on purpose", allow_empty=True)
    assert sha is not None and repo.log(max_count=1)[0].subject == "empty on purpose"


def test_commit_stages_exactly_the_given_paths(repo):
    root = repo.root
    (root / "keep.txt").write_text("k")
    (root / "gone.txt").write_text("g")
    repo.commit(["keep.txt", "gone.txt"], "two files")
    (root / "train.py").write_text("LR = 0.2\n")
    (root / "new.txt").write_text("n")
    (root / "gone.txt").unlink()
    (root / "keep.txt").write_text("changed")
    (root / "user.txt").write_text("u")
    git(root, "add", "user.txt")  # staged by the user: must stay staged and out of our commit
    sha = repo.commit(["train.py", "new.txt", "gone.txt", "missing.txt"], "patch")
    changed = git(root, "show", "--name-status", "--format=", sha).split("\n")
    assert sorted(line for line in changed if line) == ["A\tnew.txt", "D\tgone.txt", "M\ttrain.py"]
    assert repo.dirty_paths() == ["keep.txt", "user.txt"]
    assert git(root, "diff", "--cached", "--name-only").split() == ["user.txt"]
    # a deletion the user already staged is still committed
    git(root, "rm", "-qf", "keep.txt")
    sha = repo.commit([str(root / "keep.txt")], "drop keep")
    assert git(root, "show", "--name-status", "--format=", sha).split() == ["D", "keep.txt"]


def test_commit_falls_back_to_arx_identity(tmp_path):
    repo = make_repo(tmp_path / "r", configured=False)
    (repo.root / "f").write_text("x")
    repo.commit(["f"], "first", trailers={"Arx-Run": "r"})
    who = git(repo.root, "log", "-1", "--format=%an|%ae|%cn|%ce").strip()
    assert who == "|".join([*ARX_AUTHOR, *ARX_AUTHOR])


def test_commit_rejects_bad_trailer_key(repo):
    with pytest.raises(ValueError):
        repo.commit(["train.py"], "x", trailers={"Bad Key": "v"}, allow_empty=True)


def test_dirty_paths(repo):
    root = repo.root
    (root / ".gitignore").write_text("*.log\n")
    repo.commit([".gitignore"], "ignore logs")
    assert repo.dirty_paths() == []
    (root / "train.py").write_text("LR = 0.3\n")
    (root / "staged.txt").write_text("s")
    git(root, "add", "staged.txt")
    (root / "runs" / "r").mkdir(parents=True)
    (root / "runs" / "r" / "trace.jsonl").write_text("{}\n")
    (root / "out.log").write_text("ignored")
    assert repo.dirty_paths() == ["runs/r/trace.jsonl", "staged.txt", "train.py"]
    assert repo.dirty_paths(["train.py", "out.log"]) == ["train.py"]
    assert repo.dirty_paths(["runs"]) == ["runs/r/trace.jsonl"]
    assert repo.dirty_paths([]) == []


def test_show(repo):
    first = repo.head_sha()
    (repo.root / "train.py").write_text("LR = 0.4\n")
    repo.commit(["train.py"], "lr", trailers={"Arx-Run": "r"})
    assert repo.show(first, "train.py") == "LR = 0.1\n"
    assert repo.show("HEAD", "train.py") == "LR = 0.4\n"
    assert repo.show("HEAD", "absent.py") is None
    with pytest.raises(RepoError):
        repo.show("nonexistent-rev", "train.py")


def test_branches_and_ancestry(repo):
    base = repo.head_sha()
    assert repo.branch_exists("main") and not repo.branch_exists("arx/x")
    git(repo.root, "branch", "arx/b")
    git(repo.root, "branch", "arx/a/nested")
    git(repo.root, "tag", "arx/tag-not-branch")
    assert repo.branches("arx/*") == ["arx/a/nested", "arx/b"]
    assert repo.branches() == ["arx/a/nested", "arx/b", "main"]
    (repo.root / "train.py").write_text("LR = 0.5\n")
    head = repo.commit(["train.py"], "lr")
    assert repo.is_ancestor(base, head) and not repo.is_ancestor(head, base)
    with pytest.raises(RepoError):
        repo.is_ancestor("nope", head)


def test_worktree_add_reopen_remove_leaves_main_checkout_alone(repo):
    main = repo.root
    (main / "scratch.txt").write_text("user's own untracked work")
    status_before = git(main, "status", "--porcelain")
    path = main / ".arx" / "worktrees" / "run1"

    wt = repo.add_worktree(path, "arx/run1")
    assert wt.root == path.resolve() and wt.current_branch() == "arx/run1"
    assert repo.branch_exists("arx/run1")
    (wt.root / "train.py").write_text("LR = 0.01\n")
    (wt.root / "runs").mkdir()
    (wt.root / "runs" / "trace.jsonl").write_text("{}\n")
    sha = wt.commit(["train.py", "runs/trace.jsonl"], "keep", trailers={"Arx-Run": "run1"})

    assert (main / "train.py").read_text() == "LR = 0.1\n"
    assert git(main, "status", "--porcelain") == status_before  # .arx/ never shows up
    assert repo.current_branch() == "main"
    assert repo.show("arx/run1", "train.py") == "LR = 0.01\n"

    again = repo.add_worktree(path, "arx/run1")  # reopen
    assert again.head_sha() == sha

    shutil.rmtree(path)  # a user deleted the worktree directory: re-add for the same branch
    revived = repo.add_worktree(path, "arx/run1")
    assert revived.head_sha() == sha and (path / "train.py").read_text() == "LR = 0.01\n"

    repo.remove_worktree(path)
    assert not path.exists() and repo.branch_exists("arx/run1")
    repo.remove_worktree(path)  # idempotent
    assert git(main, "status", "--porcelain") == status_before


def test_worktree_refusals(repo, tmp_path):
    other = tmp_path / "not-a-worktree"
    other.mkdir()
    git(repo.root, "branch", "arx/taken")
    with pytest.raises(RepoError, match="not a worktree"):
        repo.add_worktree(other, "arx/taken")
    with pytest.raises(RepoError) as err:
        repo.add_worktree(tmp_path / "wt", "main")  # checked out in the main checkout
    assert err.value.hint
    empty = make_repo(tmp_path / "empty")
    with pytest.raises(RepoError, match="no commit yet"):
        empty.add_worktree(tmp_path / "wt2", "arx/x")


def test_revert_arx_commit(repo):
    (repo.root / "runner.py").write_text("v1\n")
    repo.commit(["runner.py"], "runner v1", trailers={"Arx-Run": "r"})
    (repo.root / "runner.py").write_text("v2\n")
    bad = repo.commit(["runner.py"], "L2 mechanism", trailers={"Arx-Run": "r", "Arx-Level": "2"})
    sha = repo.revert(bad, "L2 revert: gate failed", body="ruff: F821 undefined name 'np'")
    assert (repo.root / "runner.py").read_text() == "v1\n"
    record = repo.log(max_count=1)[0]
    assert record.sha == sha and record.subject == "L2 revert: gate failed"
    assert "F821" in record.body and f"This reverts commit {bad}." in record.body
    assert record.trailers == {"Arx-Run": "r", "Arx-Reverts": bad}
    assert repo.dirty_paths() == []
    with pytest.raises(RepoError, match="already reverted"):
        repo.revert(bad, "again")
    assert repo.dirty_paths() == [] and not (Path(repo.root) / ".git" / "REVERT_HEAD").exists()


def test_revert_takes_out_its_own_lines_when_a_later_commit_changed_their_neighbours(repo):
    (repo.root / "runner.py").write_text("class Runner:\n    def __init__(self):\n"
                                         "        self.m = []\n")
    repo.commit(["runner.py"], "runner", trailers={"Arx-Run": "r"})
    (repo.root / "smoke.txt").write_text("for A\n")
    (repo.root / "runner.py").write_text("class A:\n    pass\n\n\nclass Runner:\n"
                                         "    def __init__(self):\n        self.m = []\n"
                                         "        self.m.append(A())\n")
    older = repo.commit(["runner.py", "smoke.txt"], "L2 mechanism A", trailers={"Arx-Run": "r"})
    (repo.root / "smoke.txt").write_text("for B\n")
    (repo.root / "runner.py").write_text("class A:\n    pass\n\n\nclass B:\n    pass\n\n\n"
                                         "class Runner:\n    def __init__(self):\n"
                                         "        self.m = []\n        self.m.append(A())\n"
                                         "        self.m.append(B())\n")
    newer = repo.commit(["runner.py", "smoke.txt"], "L2 mechanism B", trailers={"Arx-Run": "r"})
    without_a = ("class B:\n    pass\n\n\nclass Runner:\n    def __init__(self):\n"
                 "        self.m = []\n        self.m.append(B())\n")
    before = (repo.root / "runner.py").read_text()
    # what a revert would leave, made in a scratch index: the checkout does not change
    assert repo.file_without(older, "runner.py") == without_a
    assert repo.file_without(newer, "runner.py") == (
        "class A:\n    pass\n\n\nclass Runner:\n    def __init__(self):\n"
        "        self.m = []\n        self.m.append(A())\n")
    assert (repo.root / "runner.py").read_text() == before and repo.dirty_paths() == []
    assert repo.head_sha() == newer
    sha = repo.revert(older, "Revert L2 mechanism A: observe failed at run time")
    assert (repo.root / "runner.py").read_text() == without_a
    assert (repo.root / "smoke.txt").read_text() == "for B\n"  # later commits' version kept
    record = repo.log(max_count=1)[0]
    assert record.sha == sha and record.trailers["Arx-Reverts"] == older
    assert "left as later commits made them: smoke.txt" in record.body
    assert repo.dirty_paths() == []


def test_revert_refuses_commits_arx_did_not_make(repo):
    (repo.root / "train.py").write_text("LR = 9\n")
    git(repo.root, "commit", "-qam", "user's own change")
    with pytest.raises(RepoError, match="arx did not make it") as err:
        repo.revert("HEAD", "undo")
    assert "git revert" in err.value.hint
    assert (repo.root / "train.py").read_text() == "LR = 9\n"


def test_restore(repo):
    root = repo.root
    (root / "other.py").write_text("o\n")
    repo.commit(["other.py"], "other")
    (root / "train.py").write_text("LR = half-written")
    (root / "other.py").unlink()
    (root / "staged_new.txt").write_text("s")
    git(root, "add", "staged_new.txt")
    (root / "untracked.txt").write_text("u")
    repo.restore(["train.py", "other.py", "staged_new.txt", "untracked.txt"])
    assert (root / "train.py").read_text() == "LR = 0.1\n"
    assert (root / "other.py").read_text() == "o\n"
    assert (root / "staged_new.txt").read_text() == "s"
    assert (root / "untracked.txt").read_text() == "u"
    assert repo.dirty_paths() == ["staged_new.txt", "untracked.txt"]
    assert git(root, "diff", "--cached", "--name-only") == ""


def test_stale_index_lock_is_cleared(repo):
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 30
    os.utime(lock, (old, old))
    (repo.root / "train.py").write_text("LR = 0.6\n")
    assert repo.commit(["train.py"], "after a killed git", trailers={"Arx-Run": "r"})
    assert not lock.exists()


def test_index_lock_of_a_live_git_is_respected(repo):
    (repo.root / "x.txt").write_text("x")
    git(repo.root, "add", "x.txt")
    env = {**os.environ, "GIT_EDITOR": "sleep 20; :"}
    holder = subprocess.Popen(["git", "commit", "-a"], cwd=repo.root, env=env)  # in its editor
    lock = repo.root / ".git" / "index.lock"
    try:
        deadline = time.monotonic() + 5
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.exists()
        old = time.time() - 30  # old enough that only the live process keeps it from being stale
        os.utime(lock, (old, old))
        repo.lock_wait_s = 0.3
        (repo.root / "train.py").write_text("LR = 0.7\n")
        with pytest.raises(RepoError, match="held by another git process") as err:
            repo.commit(["train.py"], "blocked")
        assert str(holder.pid) in str(err.value)
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()
