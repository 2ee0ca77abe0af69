"""Managed repositories for tests: real git, the toy target, `arx init` through the real code."""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

import git
import tomlkit

from arx.core.app.scaffold import init_repo

TOY = Path(__file__).with_name("toy_train.py")

#: toy checkouts already adopted in this test process, by their arguments: a test gets a copy
#: (git's own files are plain files with relative paths), not a second `arx init` (0.25 s each,
#: paid by some 200 tests)
_ADOPTED: dict[str, Path] = {}


def git_repo(path: Path) -> git.Repo:
    path.mkdir(parents=True, exist_ok=True)
    return identify(git.Repo.init(path, initial_branch="main"))


def identify(repo: git.Repo) -> git.Repo:
    """Give a test repository a committer: CI machines have no global git identity."""
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test User")
        cw.set_value("user", "email", "test@example.com")
    return repo


def make_toy_repo(path: Path, params: dict | None = None, target: dict | None = None,
                  run: dict | None = None) -> Path:
    """A user checkout holding the toy target, adopted by `arx init --target`.

    Its runs do not measure noise nor verify their result on held-out seeds unless ``run`` says
    so (``{"noise": "auto", "verify": 3}``): the toy's seeds barely move its metric, and these
    tests count trials exactly. The noise measurement and the verification have their own tests,
    on targets made of noise (tests/core/loop/test_noise.py, test_verify.py).

    The first call with given arguments adopts for real; later ones copy that checkout."""
    key = json.dumps([params, target, run], sort_keys=True, default=str)
    if key not in _ADOPTED:
        store = Path(tempfile.mkdtemp(prefix="arx-toy-"))
        atexit.register(shutil.rmtree, store, True)
        _ADOPTED[key] = _adopt_toy(store / "project", params, target, run)
    shutil.copytree(_ADOPTED[key], path, symlinks=True)
    return path


def _adopt_toy(path: Path, params: dict | None, target: dict | None,
               run: dict | None) -> Path:
    repo = git_repo(path)
    shutil.copy(TOY, path / "train.py")
    (path / "README.md").write_text("a user's project\n")
    repo.index.add(["train.py", "README.md"])
    repo.index.commit("user's first commit")
    init_repo(path, target_file="train.py", command=f"{sys.executable} train.py",
              metric="val_bpb", locked=["MODE"])
    edit_toml(path, params=params or {"ACTIVATION": {"choices": ["relu", "gelu"]}}, target=target,
              run={"noise": "off", "verify": 0, **(run or {})})
    return path


def edit_toml(path: Path, params: dict | None = None, target: dict | None = None,
              run: dict | None = None, locked: list | None = None) -> None:
    """Change arx.toml like a user would, and commit it."""
    doc = tomlkit.parse((path / "arx.toml").read_text())
    if locked is not None:
        doc["params"]["locked"] = locked
    for name, entry in (params or {}).items():
        table = doc["params"].setdefault(name, tomlkit.table())
        for k, v in entry.items():
            table[k] = v
    for k, v in (target or {}).items():
        doc["target"][k] = v
    for k, v in (run or {}).items():
        doc["run"][k] = v
    (path / "arx.toml").write_text(tomlkit.dumps(doc))
    repo = git.Repo(path)
    repo.index.add(["arx.toml"])
    repo.index.commit("test: tune arx.toml")


def make_script_repo(path: Path, script: Path, locked: list[str] | None = None,
                     replace: dict[str, str] | None = None) -> Path:
    """A user checkout holding ``script`` as train.py (its text edited by ``replace``), adopted
    by `arx init --target`."""
    repo = git_repo(path)
    text = script.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (path / "train.py").write_text(text)
    (path / ".gitignore").write_text(".draws\n")
    repo.index.add(["train.py", ".gitignore"])
    repo.index.commit("user's first commit")
    init_repo(path, target_file="train.py", command=f"{sys.executable} train.py",
              metric="val_bpb", locked=locked or [])
    return path
