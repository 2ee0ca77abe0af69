"""Where a run lives: its branch, its worktree, its lock, its files.

``open_run`` turns a repository root and a run name into a ``Workspace`` (new run or resume),
refusing anything unsafe before touching git: a missing or dirty arx.toml, an existing branch
for a new run, a missing branch for a resume, a second process on the same run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arx.core.config import CONFIG_FILE, RunConfig, load_toml, resolve
from arx.core.errors import ConfigError, RepoError
from arx.core.repo.git import GitRepo
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import LocalPaths, RunFiles, branch_of, worktree_path

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name or name.endswith(".lock"):
        raise ConfigError(
            f"run name {name!r} is not usable as a branch name",
            hint="use letters, digits, '.', '_' and '-' (up to 64 characters)",
        )
    return name


def default_name(repo: GitRepo, today: _dt.date | None = None) -> str:
    stamp = (today or _dt.date.today()).strftime("%Y%m%d")
    n = 1
    while repo.branch_exists(branch_of(f"{stamp}-{n}")):
        n += 1
    return f"{stamp}-{n}"


@dataclass
class Workspace(RunFiles):
    """A run's places. ``tree`` is the worktree's GitRepo; all run commits happen there."""

    root: Path
    repo: GitRepo
    tree: GitRepo
    name: str
    config: RunConfig
    lock: RunLock
    resumed: bool

    @property
    def path(self) -> Path:
        return self.tree.root

    def write_llm_settings(self, record: Mapping[str, Any]) -> None:
        """The endpoint and model used (never a key), beside the run's config."""
        path = self.path / self.llm_settings_rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(record), indent=2, sort_keys=True) + "\n")

    def run_files(self) -> list[str]:
        """Run files every commit carries: the trace, and transcripts, settings, provenance and
        hand-added mechanisms if any."""
        files = [self.trace_rel]
        for rel in (self.llm_rel, self.llm_settings_rel, self.provenance_rel, self.mechanisms_rel):
            if (self.path / rel).exists():
                files.append(rel)
        return files

    @property
    def local(self) -> LocalPaths:
        """The run's places under ``.arx/`` on this machine (logs, pid files, slots)."""
        return LocalPaths(self.root, self.name)

    @property
    def log_dir(self) -> Path:
        return self.local.log_dir

    @property
    def pid_path(self) -> Path:
        return self.local.pid_path

    def close(self, remove_worktree: bool) -> None:
        try:
            if remove_worktree:
                self.repo.remove_worktree(self.path)
        finally:
            self.lock.release()


def open_run(
    root: Path,
    flags: Mapping[str, Any],
    name: str | None = None,
    resume: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Workspace:
    """Start a new run (``name``) or resume one (``resume``), holding its lock."""
    env = os.environ if env is None else env
    repo = GitRepo(root)
    root = repo.root
    if repo.head_sha() is None:
        raise RepoError(f"{root} has no commits", hint="run `arx init` first")
    if resume:
        name = check_name(resume)
        if not repo.branch_exists(branch_of(name)):
            raise RepoError(
                f"no run named {name!r} (branch {branch_of(name)} does not exist)",
                hint="`arx status` lists the runs",
            )
    else:
        name = check_name(name) if name else default_name(repo)
        if repo.branch_exists(branch_of(name)):
            raise RepoError(
                f"run {name!r} already exists (branch {branch_of(name)})",
                hint=f"continue it with `arx run --resume {name}` or choose another --name",
            )
    lock = RunLock(root, name)
    lock.acquire()
    try:
        path = worktree_path(root, name)
        if resume:
            tree = repo.add_worktree(path, branch_of(name))
            stored = tree.root / RunFiles(name).config_rel
            if not stored.exists():
                raise RepoError(
                    f"run {name!r} has no stored config ({RunFiles(name).config_rel})",
                    hint="the branch was not made by `arx run`",
                )
            config = RunConfig.from_json(stored.read_text())
            overrides = {k: v for k, v in flags.items() if v is not None and k == "iterations"}
            if overrides:
                config = replace(config, **overrides)
        else:
            doc = load_toml(root)  # a clear error when arx.toml is missing or broken
            dirty = repo.dirty_paths([CONFIG_FILE])
            if dirty:
                raise RepoError(
                    "arx.toml has uncommitted changes; a run branches from HEAD and would not see them",
                    hint="commit arx.toml first",
                )
            target_dirty = repo.dirty_paths([doc["target"]["file"]])
            if target_dirty:
                raise RepoError(
                    f"{target_dirty[0]} has uncommitted changes; a run branches from HEAD",
                    hint="commit or stash them first",
                )
            config = resolve(name, doc, flags, env)
            tree = repo.add_worktree(path, branch_of(name), "HEAD")
            stored = tree.root / RunFiles(name).config_rel
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_text(config.to_json())
        return Workspace(root, repo, tree, name, config, lock, bool(resume))
    except BaseException:
        lock.release()
        raise
