"""The command line as a user meets it: CliRunner for in-process checks, real git underneath."""

from __future__ import annotations

import json

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli

from support.repos import git_repo

COMMANDS = ["init", "run", "status", "log", "mechanism", "report", "ablate", "replay"]


def invoke(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("arx, version ")
    assert invoke("--help").exit_code == 0
    for command in COMMANDS:
        out = invoke(command, "--help")
        assert out.exit_code == 0 and "Usage: " in out.output, command


def test_init_default_target_commits_everything_and_leaves_a_clean_checkout(tmp_path):
    result = invoke("init", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    repo = git.Repo(tmp_path / "demo")
    assert not repo.is_dirty(untracked_files=True)
    assert repo.head.commit.summary == "arx init"
    tracked = set(repo.git.ls_files().split())
    assert {"train.py", "prepare.py", "arx.toml", "runner/runner.py", ".gitignore"} <= tracked
    toml = (tmp_path / "demo" / "arx.toml").read_text()
    assert 'setup = "python prepare.py"' in toml
    assert "[params.WINDOW_PATTERN]" in toml and "choices" in toml
    assert ".arx/" in (tmp_path / "demo" / ".gitignore").read_text()


def test_init_adopts_a_script_and_writes_its_constants(tmp_path):
    repo = git_repo(tmp_path)
    (tmp_path / "fit.py").write_text(
        "LR = 3e-4  # step\nBATCH: int = 2**19\nBETAS = (0.9, 0.95)\nNAME = 'x'\n"
        "def f():\n    LR = 1\n    return LR\n")
    repo.index.add(["fit.py"])
    repo.index.commit("mine")
    result = invoke("init", str(tmp_path), "--target", "fit.py", "--command", "python fit.py",
                    "--metric", "loss", "--direction", "max", "--lock", "NAME")
    assert result.exit_code == 0, result.output
    doc = (tmp_path / "arx.toml").read_text()
    assert 'metric = "loss"' in doc and 'direction = "max"' in doc
    assert "[params.LR]" in doc and "[params.BATCH]" in doc and "pow2 = true" in doc
    assert 'locked = ["NAME"]' in doc
    assert (tmp_path / "fit.py").read_text().count("LR") == 3  # untouched


@pytest.mark.parametrize("case", ["no_git", "dirty", "exists", "no_constants", "missing_file"])
def test_init_refusals_are_clear_and_write_nothing(tmp_path, case):
    args = ["init", str(tmp_path), "--target", "fit.py", "--command", "python fit.py",
            "--metric", "loss"]
    (tmp_path / "fit.py").write_text("LR = 0.1\n")
    if case == "no_git":
        args.append("--no-git-init")
        expect = "not a git repository"
    else:
        repo = git_repo(tmp_path)
        repo.index.add(["fit.py"])
        repo.index.commit("mine")
        if case == "dirty":
            (tmp_path / "fit.py").write_text("LR = 0.2\n")
            expect = "uncommitted changes"
        elif case == "exists":
            (tmp_path / "arx.toml").write_text("[target]\n")
            repo.index.add(["arx.toml"])
            repo.index.commit("toml")
            expect = "--force"
        elif case == "no_constants":
            (tmp_path / "fit.py").write_text("print('hi')\n")
            repo.index.add(["fit.py"])
            repo.index.commit("no constants")
            expect = "has nothing arx can tune"
        else:
            args[args.index("fit.py")] = "nope.py"
            expect = "does not exist"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert expect in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "Traceback" not in result.output


def test_broken_arx_toml_is_a_clear_error(toy_repo):
    (toy_repo / "arx.toml").write_text("[target\nfile = ")
    git.Repo(toy_repo).git.commit("-am", "break it")
    result = CliRunner().invoke(cli, ["-C", str(toy_repo), "run", "--iterations", "1"])
    assert result.exit_code != 0
    assert "not valid TOML" in result.output and "Traceback" not in result.output


def test_status_and_log_after_a_run(toy_repo):
    result = invoke("-C", str(toy_repo), "run", "--name", "r1", "--iterations", "4", "--quiet")
    assert result.exit_code == 0, result.output
    status = json.loads(invoke("-C", str(toy_repo), "status", "--json").output)
    assert [s["name"] for s in status] == ["r1"]
    row = status[0]
    assert row["state"] == "finished" and row["iterations_done"] == 4
    assert row["best"] <= row["baseline"]
    assert sum(row["counts"].values()) == 4
    table = invoke("-C", str(toy_repo), "status").output
    assert "r1" in table and "finished" in table
    log = json.loads(invoke("-C", str(toy_repo), "log", "r1", "--json").output)
    levels = [c["Arx-Level"] for c in log]
    assert levels[0] == "baseline" and levels[-1] == "end"
    assert levels.count("1") == row["counts"].get("keep", 0)
    text = invoke("-C", str(toy_repo), "log", "r1").output
    assert "baseline" in text
    # the run named as `git branch` shows it: the same run (was "bad revision 'arx/arx/r1'")
    assert json.loads(invoke("-C", str(toy_repo), "log", "arx/r1", "--json").output) == log
    assert json.loads(invoke("-C", str(toy_repo), "status", "arx/r1", "--json").output) == status


def test_unknown_run_is_a_clear_error(toy_repo):
    result = CliRunner().invoke(cli, ["-C", str(toy_repo), "run", "--resume", "nope"])
    assert result.exit_code != 0 and "no run named 'nope'" in result.output
    result = CliRunner().invoke(cli, ["-C", str(toy_repo), "status", "nope"])
    assert result.exit_code != 0 and "no run named" in result.output


def test_init_adopts_a_script_git_does_not_know_yet(tmp_path):
    git_repo(tmp_path)
    (tmp_path / "fit.py").write_text("LR = 0.1\n")
    result = invoke("init", str(tmp_path), "--target", "fit.py", "--command", "python fit.py",
                    "--metric", "loss")
    assert result.exit_code == 0, result.output
    repo = git.Repo(tmp_path)
    assert "fit.py" in repo.git.ls_files().split()
    assert not repo.is_dirty(untracked_files=True)


def test_mechanism_add_and_list(toy_repo, tmp_path):
    assert invoke("-C", str(toy_repo), "run", "--name", "m", "--iterations", "2",
                  "--quiet").exit_code == 0
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "OnlyLR", "domain": "by hand", "patches": [
        {"kind": "new_helper_class", "name": "OnlyLR", "target": None,
         "code": "class OnlyLR:\n    def focus(self, ctx):\n        return ['LR']\n"},
        {"kind": "modify_init", "name": "OnlyLR", "target": None,
         "code": "self.mechanisms.append(OnlyLR())"}]}))
    out = invoke("-C", str(toy_repo), "mechanism", "add", str(good), "--run", "m")
    assert out.exit_code == 0 and "passed the gate" in out.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "new_helper_class", "name": "Nope", "target": None,
                               "code": "class Nope:\n    def focus(self, ctx):\n"
                                       "        return missing\n"}))
    out = CliRunner().invoke(cli, ["-C", str(toy_repo), "mechanism", "add", str(bad), "--run", "m"])
    assert out.exit_code == 1 and "F821" in out.output and "reverted" in out.output
    rows = json.loads(invoke("-C", str(toy_repo), "mechanism", "list", "--json").output)
    assert [(r["mechanism"], r["verdict"], r["state"]) for r in rows] == [
        ("OnlyLR", "pass", "active"), ("Nope", "fail", "refused")]
    # the gate refused Nope: status must not count it as active (its trace commit names it too)
    status = json.loads(invoke("-C", str(toy_repo), "status", "m", "--json").output)
    assert status[0]["mechanisms"] == ["OnlyLR"]
    out = invoke("-C", str(toy_repo), "report", "m", "--out", str(tmp_path / "m.png"))
    assert out.exit_code == 0, out.output
    summary = (tmp_path / "m.md").read_text()
    assert "| OnlyLR | by hand | manual | pass | active | active |" in summary
    assert "| Nope | - | manual | fail: ruff: F821" in summary
    nope = next(line for line in summary.splitlines() if "| Nope |" in line)
    assert nope.endswith("| refused | refused |")
    log = json.loads(invoke("-C", str(toy_repo), "log", "m", "--level", "2", "--json").output)
    gates = [c["Arx-Gate"] for c in log if c["subject"].startswith(("L2", "Revert"))]
    assert gates[0] == "pass" and gates[1].startswith("fail: ruff") and len(gates) == 3
    # the run continues with the hand-written mechanism
    out = invoke("-C", str(toy_repo), "run", "--resume", "m", "--iterations", "4", "--json")
    trials = [json.loads(x) for x in out.output.splitlines() if '"event": "trial"' in x]
    assert trials and all(t["focus"] == ["LR"] for t in trials)


def test_init_can_write_the_replay_workflow(tmp_path):
    result = invoke("init", str(tmp_path / "d"), "--replay-ci")
    assert result.exit_code == 0, result.output
    repo = git.Repo(tmp_path / "d")
    workflow = ".github/workflows/arx-replay.yml"
    assert workflow in repo.git.ls_files().split()
    assert "arx replay" in (tmp_path / "d" / workflow).read_text()
    assert not repo.is_dirty(untracked_files=True)
