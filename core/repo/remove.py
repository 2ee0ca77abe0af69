"""``arx rm NAME``: remove a run (its branch, its worktree, its logs and slots under ``.arx/``).

A running run is refused unless ``force``: then the arx process holding its lock is asked to
stop (SIGTERM: it kills its trial first) and the run is removed once the lock is free. Only
``arx/<name>`` branches are touched; the run's lock file stays (lock files are never deleted).
"""

from __future__ import annotations

import shutil
import time

from arx.core.errors import RepoError, RunLockedError
from arx.core.execution.process import kill_stale, terminate
from arx.core.repo.git import GitRepo
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import LocalPaths, branch_of, worktree_path

__all__ = ["remove_run"]

#: how long ``remove_run(force=True)`` waits for a stopped arx to release the run
STOP_WAIT_S = 30.0


def _stop_holder(lock: RunLock, name: str) -> None:
    try:
        pid = int(lock.path.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid:
        terminate(pid)
    deadline = time.monotonic() + STOP_WAIT_S
    while lock.is_held():
        if time.monotonic() > deadline:
            raise RunLockedError(f"run {name!r} is still held by pid {pid or 'unknown'} after "
                                 f"{STOP_WAIT_S:.0f} s", hint=f"stop it yourself (`kill {pid}`)")
        time.sleep(0.1)


def remove_run(repo: GitRepo, name: str, force: bool = False) -> list[str]:
    """Remove run ``name``; returns what was removed, in words."""
    branch = branch_of(name)
    if not repo.branch_exists(branch):
        raise RepoError(f"no run named {name!r} (branch {branch} does not exist)",
                        hint="`arx status` lists the runs")
    lock = RunLock(repo.root, name)
    if lock.is_held():
        if not force:
            raise RunLockedError(f"run {name!r} is running",
                                 hint=f"stop it first, or `arx rm --force {name}` stops it")
        _stop_holder(lock, name)
    lock.acquire()
    removed = []
    try:
        local = LocalPaths(repo.root, name)
        for pid_file in [local.pid_path, *local.slot_pid_dir.glob("*.pid")]:
            kill_stale(pid_file)  # trials a killed arx left behind
        path = worktree_path(repo.root, name)
        if path.exists():
            repo.remove_worktree(path)
            removed.append(f"worktree {path}")
        repo.delete_branch(branch)
        removed.append(f"branch {branch}")
        for folder in (local.log_dir, local.slots_dir, local.slot_pid_dir):
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(f"{folder.relative_to(repo.root)}/")
        local.pid_path.unlink(missing_ok=True)
    finally:
        lock.release()
    return removed
