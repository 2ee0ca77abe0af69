"""Where things live: on a run branch, in a managed repository, and under its ``.arx/``.

The one place that spells a path. Paths on a branch are public surface (existing branches are
read with them); ``.arx/`` is arx's private, git-ignored working area on this machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

#: branches of runs, and of their replays
BRANCH_PREFIX = "arx/"
REPLAY_PREFIX = "arx-replay/"
#: the throwaway branch of `arx check` (deleted when the check ends)
CHECK_BRANCH = "arx-check/HEAD"
#: the name `arx check` uses for its lock, logs and pid file under .arx/
CHECK_KEY = "check"

#: files of the managed repository (tracked)
RUNNER_PATH = "runner/runner.py"  # the search policy Level 2 patches
SMOKE_PATH = "runner/test_smoke.py"  # the gate's smoke test, rendered for the current runner
STATE_PATH = "runner/search_state.json"  # Level 1.5's frozen parameters and guidance

#: arx's machine-local working area, ignored by git
LOCAL_DIR = ".arx"


def branch_of(name: str) -> str:
    return BRANCH_PREFIX + name


def run_name_of(arg: str) -> str:
    """The run a command-line argument names: ``foo`` or its branch ``arx/foo`` (a run's name
    never holds a ``/``, so the branch's prefix is never part of a name)."""
    return arg[len(BRANCH_PREFIX):] if arg.startswith(BRANCH_PREFIX) else arg


def replay_branch_of(rev: str) -> str:
    """The branch a replay of ``rev`` makes, named after the branch replayed: ``arx/foo`` ->
    ``arx-replay/foo``; any other ref (``origin/arx/foo``, a tag, a hash) -> a sanitised name
    with a short hash of the ref, so two refs never share a replay branch."""
    rest = rev[len(BRANCH_PREFIX):] if rev.startswith(BRANCH_PREFIX) else None
    if rest and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", rest) and ".." not in rest \
            and not rest.endswith((".lock", ".")):
        return REPLAY_PREFIX + rest
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", rev).strip("-")[:60] or "ref"
    return f"{REPLAY_PREFIX}{clean}-{hashlib.sha1(rev.encode()).hexdigest()[:6]}"


class RunFiles:
    """A run's files on its branch, relative to the tree (a base of ``Workspace`` too)."""

    name: str

    def __init__(self, name: str):
        self.name = name

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}"

    @property
    def trace_rel(self) -> str:
        return f"{self.run_dir}/trace.jsonl"

    @property
    def config_rel(self) -> str:
        return f"{self.run_dir}/config.json"

    @property
    def llm_rel(self) -> str:
        """LLM transcripts: ``NNNN-<purpose>.json``, one per request."""
        return f"{self.run_dir}/llm"

    @property
    def llm_settings_rel(self) -> str:
        return f"{self.run_dir}/llm-settings.json"

    @property
    def provenance_rel(self) -> str:
        """One JSON line per start and resume: the versions and machine that ran the run."""
        return f"{self.run_dir}/provenance.jsonl"

    @property
    def mechanisms_rel(self) -> str:
        """Mechanisms added by hand (`arx mechanism add`): ``NN-<Name>.json``, the patch as
        applied, for replay to apply it again."""
        return f"{self.run_dir}/mechanisms"


@dataclass(frozen=True)
class LocalPaths:
    """A run's places under ``<root>/.arx`` (``key`` is the run name, or ``replay-<name>``)."""

    root: Path
    key: str

    @property
    def base(self) -> Path:
        return Path(self.root) / LOCAL_DIR

    @property
    def log_dir(self) -> Path:
        return self.base / "logs" / self.key

    @property
    def pid_path(self) -> Path:
        """The running trial's process group, for ``kill_stale`` after a kill of arx."""
        return self.base / "pids" / f"{self.key}.pid"

    @property
    def slot_pid_dir(self) -> Path:
        return self.base / "pids" / self.key

    @property
    def slots_dir(self) -> Path:
        """The directories of ``--parallel`` slots."""
        return self.base / "slots" / self.key


def worktree_path(root: Path, name: str) -> Path:
    """The worktree of run ``name`` while it runs."""
    return Path(root) / LOCAL_DIR / "worktrees" / name


def replay_worktree_path(root: Path, key: str) -> Path:
    """The worktree of a replay; ``key`` is its branch without the ``arx-replay/`` prefix."""
    return Path(root) / LOCAL_DIR / "replay" / key
def check_worktree_path(root: Path) -> Path:
    """Where `arx check` runs the command once (removed when it ends)."""
    return Path(root) / LOCAL_DIR / "check"

