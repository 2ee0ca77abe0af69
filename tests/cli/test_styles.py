"""Bring your own script: one small script per config style, adopted by `arx init`, searched by
a short offline run, the kept commit checked line by line, and the branch replayed."""

from __future__ import annotations

import difflib
import json
import sys

import git
import pytest
import tomllib
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.codemods import bundle
from arx.core.codemods.constants import discover_constants
from arx.core.repo.commits import Trailer
from arx.core.states import Level

from support.repos import git_repo
from support.styles import EXPECTED, FILES, JOINED, STYLES, TARGETS


def arx(root, *args):
    return CliRunner().invoke(cli, ["-C", str(root), *args],
                                catch_exceptions=False)


def adopt(tmp_path, style):
    root = tmp_path / style
    repo = git_repo(root)
    for path, text in FILES.get(style, {"train.py": STYLES[style]}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    if style == "data":
        (root / "data" / "toy").mkdir(parents=True)
        (root / "data" / "toy" / "train.txt").write_text("1.5\n")
        (root / ".gitignore").write_text("data/\n")
    repo.git.add(A=True)
    repo.index.commit("my script")
    out = arx(root, "init", str(root), "--target", TARGETS.get(style, "train.py"), "--command",
              f"{sys.executable} train.py", "--metric", "loss")
    assert out.exit_code == 0, out.output + out.stderr
    return root, out.output


def changed_lines(before, after):
    """The lines of ``after`` that differ from ``before``, file by file (path -> lines)."""
    return {p: [line for line in difflib.unified_diff(before[p].splitlines(),
                                                      after[p].splitlines(), n=0, lineterm="")
                if line.startswith("+") and not line.startswith("+++")] for p in before}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_init_run_keep_and_replay(tmp_path, style):
    root, printed = adopt(tmp_path, style)
    target = TARGETS.get(style, "train.py")
    paths = [target, *JOINED.get(style, [])]
    doc = tomllib.loads((root / "arx.toml").read_text())
    assert doc["target"]["file"] == target
    assert doc["target"].get("files", []) == JOINED.get(style, [])
    for path in JOINED.get(style, []):  # init says which file joined and with which settings
        assert f"settings of {path} (" in printed and f"{path}:" in printed

    def source(read):  # the target's source: the file, or a bundle of the target's files
        return bundle.read_files(read, paths)

    def settings(text):
        return {c.name: c.value for c in discover_constants(text, target)}

    def places(text):  # name -> (its file, its line there)
        return {c.name: (bundle.file_of(c.name, paths)[0], c.line)
                for c in discover_constants(text, target)}

    def files(text):
        return bundle.unpack(text) if bundle.is_bundle(text) else {target: text}

    def tree_source(commit):
        return source(lambda p: commit.tree[p].data_stream.read().decode())
    params = doc["params"]
    tunable, locked = EXPECTED[style]
    assert set(params["locked"]) == locked
    room = {n for n, e in params.items() if n != "locked" and n not in locked
            and ("low" in e or len(e.get("choices", ())) > 1)}
    assert room == tunable  # every parameter written under its own name, with a range
    assert f"tunable ({len(tunable)})" in printed
    if style == "data":
        assert tomllib.loads((root / "arx.toml").read_text())["target"]["include"] == ["data/"]
        assert "linked into every trial" in printed

    steps = tomllib.loads((root / "arx.toml").read_text())["target"].get("steps_constant")
    out = arx(root, "run", "--iterations", "4", "--name", "t", "--quiet",
              *(["--steps", "2"] if steps else []))
    assert out.exit_code == 0, out.output + out.stderr
    g = git.Repo(root)
    keeps = [c for c in g.iter_commits("arx/t")
             if c.trailers_dict.get(Trailer.LEVEL) == [Level.L1.value]]
    assert keeps, f"{style}: no change was kept"
    for commit in keeps:  # a keep edits exactly the default(s) it names, nothing else
        changes = json.loads(commit.trailers_dict[Trailer.CHANGES][0])
        before, after = tree_source(commit.parents[0]), tree_source(commit)
        changed = changed_lines(files(before), files(after))
        where = places(before)
        assert sum(map(len, changed.values())) == len({where[n] for n in changes}), changed
        assert {p for p, lines in changed.items() if lines} == {where[n][0] for n in changes}
        assert {p for p in commit.stats.files if not p.startswith("runs/")} \
            == {where[n][0] for n in changes}  # the keep's diff touches only those files
        assert settings(after) == {**settings(before), **changes}
        assert set(changes) <= tunable
        for path, text in files(before).items():  # comments kept byte for byte, edited lines'
            comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
            assert all(c in files(after)[path] for c in comments), path

    out = arx(root, "replay", "arx/t")
    assert out.exit_code == 0, out.output + out.stderr
    assert "REPRODUCED" in out.output

    # arx apply: the best's tuned values, and only them, as one commit on main
    before = source(lambda p: (root / p).read_text())
    out = arx(root, "apply", "t")
    assert out.exit_code == 0, out.output
    head = g.head.commit
    applied = json.loads(head.trailers_dict[Trailer.CHANGES][0])
    where = places(before)
    assert g.active_branch.name == "main"
    assert set(head.stats.files) == {where[n][0] for n in applied}  # every file it changed
    best = [json.loads(c.trailers_dict[Trailer.CHANGES][0]) for c in reversed(keeps)]
    assert applied == {k: v for change in best for k, v in change.items()
                       if v != settings(before)[k]}
    after = source(lambda p: (root / p).read_text())
    assert settings(after) == {**settings(before), **applied}
    changed = changed_lines(files(before), files(after))
    assert sum(map(len, changed.values())) == len({where[n] for n in applied}), changed
    for path, text in files(before).items():  # comments kept byte for byte after apply too
        comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
        assert all(c in files(after)[path] for c in comments), path
    assert not steps or steps not in applied  # the step count arx set stays on the branch
    verified = g.git.show("arx/t", "-s", "--format=%(trailers:key=Arx-Verified,valueonly)")
    assert head.trailers_dict["Arx-Verified"] == [verified.strip()]  # the run's own verdict
    assert "loss: held-out delta" in head.message
    for path in JOINED.get(style, []):  # applied: the joined file moved on since the base
        out = arx(root, "apply", "t")
        assert out.exit_code != 0 and f"{path} changed since run t started" in out.output


def test_included_data_reaches_parallel_slots_and_check(tmp_path):
    root, _ = adopt(tmp_path, "data")
    out = arx(root, "check")
    assert out.exit_code == 0, out.output
    assert "1 untracked path(s) linked" in out.output and "loss = " in out.output
    out = arx(root, "run", "--iterations", "2", "--parallel", "2", "--name", "p", "--quiet")
    assert out.exit_code == 0, out.output + out.stderr
    trace = git.Repo(root).git.show("arx/p:runs/p/trace.jsonl")
    assert '"status": "crash"' not in trace
    assert (root / "data" / "toy" / "train.txt").read_text() == "1.5\n"  # never copied, kept


def test_missing_untracked_file_gets_a_hint_naming_include(tmp_path):
    root, _ = adopt(tmp_path, "data")
    doc = (root / "arx.toml").read_text().replace('include = ["data/"]\n', "")
    (root / "arx.toml").write_text(doc)
    g = git.Repo(root)
    g.index.add(["arx.toml"])
    g.index.commit("forget the data")
    out = arx(root, "check")
    assert out.exit_code == 1
    assert "FileNotFoundError" in out.output
    assert 'add `include = ["data/"]` to [target] in arx.toml' in out.output
    out = arx(root, "run", "--iterations", "2", "--name", "x")
    assert out.exit_code != 0
    assert 'include = ["data/"]' in out.stderr
    assert "removed run x" in out.stderr  # a failed start leaves nothing behind
    assert "arx/x" not in [b.name for b in g.branches]
