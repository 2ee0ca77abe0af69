"""Where a run lives: its branch, its worktree, its lock, its files.

``open_run`` turns a repository root and a run name into a ``Workspace`` (new run or resume),
refusing anything unsafe before touching git: a missing or dirty arx.toml, an existing branch
for a new run, a missing branch for a resume, a second process on the same run. It links the
untracked files of ``[target] include`` into the worktree (``link_included``), and on resume
says when arx.toml's ``[target]`` differs from the run's (``--take-target`` takes it).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from arx.core.config import CONFIG_FILE, RunConfig, TargetConfig, load_toml, resolve, target_config
from arx.core.errors import ArxError, ConfigError, RepoError
from arx.core.repo.commits import target_message
from arx.core.repo.git import GitRepo
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import LOCAL_DIR, LocalPaths, RunFiles, branch_of, worktree_path

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
    #: untracked files of ``[target] include`` linked into the worktree: relative path -> the
    #: checkout's absolute path (parallel slots link the same)
    included: Mapping[str, str] = field(default_factory=dict)
    #: what the command line should tell the user (e.g. that arx.toml's [target] changed)
    notices: list[str] = field(default_factory=list)

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


def check_include(root: Path, include: Sequence[str]) -> None:
    """Refuse ``[target] include`` entries that leave the checkout, name arx's own folder, or
    do not exist."""
    for entry in include:
        rel = PurePosixPath(entry)
        if rel.is_absolute() or ".." in rel.parts:
            raise ConfigError(f"[target] include names {entry!r}, which is not inside the "
                              "repository", hint="give paths relative to the repository root")
        if rel.parts and rel.parts[0] == LOCAL_DIR:
            raise ConfigError(f"[target] include names {entry!r}: {LOCAL_DIR}/ is arx's own")
        if not (Path(root) / entry).exists():
            raise ConfigError(f"[target] include names {entry!r}, which does not exist in {root}",
                              hint="create it (e.g. run your data preparation) or fix the path")


def link_included(repo: GitRepo, tree: Path, include: Sequence[str]) -> dict[str, str]:
    """Symlink every untracked file or folder under the ``include`` paths of the checkout into
    the worktree ``tree`` (data stays where it is: nothing is copied); returns relative path ->
    the checkout's absolute path. Idempotent; a path the worktree already has is left alone."""
    if not include:
        return {}
    check_include(repo.root, include)
    links = {}
    for entry in repo.untracked(include):
        rel = entry.rstrip("/")
        if not rel or PurePosixPath(rel).parts[0] == LOCAL_DIR:
            continue
        source, dest = repo.root / rel, Path(tree) / rel
        links[rel] = str(source)
        if dest.is_symlink() and os.readlink(dest) == str(source):
            continue
        if dest.is_symlink():
            dest.unlink()
        elif dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, dest)
    return links


def _target_changes(old: TargetConfig, new: TargetConfig) -> dict[str, tuple[Any, Any]]:
    return {f.name: (getattr(old, f.name), getattr(new, f.name))
            for f in dataclasses.fields(TargetConfig) if getattr(old, f.name) != getattr(new, f.name)}


def _resumed_target(root: Path, tree: GitRepo, config: RunConfig, take: bool,
                    notices: list[str]) -> RunConfig:
    """The resumed run's config: with arx.toml's [target] when ``take``; either way, a notice
    when the two differ."""
    try:
        current = target_config(load_toml(root))
    except ArxError:
        return config
    changed = _target_changes(config.target, current)
    if not changed:
        return config
    keys = ", ".join(changed)
    if not take:
        notices.append(f"arx.toml's [target] differs from the run's ({keys}); the run keeps "
                       "the one it started with: pass --take-target to use arx.toml's")
        return config
    config = replace(config, target=current)
    stored = RunFiles(config.name).config_rel
    (tree.root / stored).write_text(config.to_json())
    tree.commit([stored], *target_message(config.name, changed))
    notices.append(f"took [target] from arx.toml ({keys})")
    return config


def open_run(
    root: Path,
    flags: Mapping[str, Any],
    name: str | None = None,
    resume: str | None = None,
    env: Mapping[str, str] | None = None,
    take_target: bool = False,
) -> Workspace:
    """Start a new run (``name``) or resume one (``resume``), holding its lock; with
    ``take_target`` a resumed run takes arx.toml's ``[target]``."""
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
    notices: list[str] = []
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
            config = _resumed_target(root, tree, config, take_target, notices)
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
            check_include(root, config.target.include)
            tree = repo.add_worktree(path, branch_of(name), "HEAD")
            stored = tree.root / RunFiles(name).config_rel
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_text(config.to_json())
        included = link_included(repo, tree.root, config.target.include)
        return Workspace(root, repo, tree, name, config, lock, bool(resume), included, notices)
    except BaseException:
        lock.release()
        raise
