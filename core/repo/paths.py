"""Where things live: on a run branch, in a managed repository, and under its ``.arx/``.

The one place that spells a path. Paths on a branch are public surface (existing branches are
read with them); ``.arx/`` is arx's private, git-ignored working area on this machine.
"""

from __future__ import annotations

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


def check_worktree_path(root: Path) -> Path:
    """Where `arx check` runs the command once (removed when it ends)."""
    return Path(root) / LOCAL_DIR / "check"


def replay_worktree_path(root: Path, name: str) -> Path:
    return Path(root) / LOCAL_DIR / "replay" / name
