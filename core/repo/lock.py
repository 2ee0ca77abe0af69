"""The locks arx deals with: its own ``RunLock`` on a run, and git's ``index.lock``.

``RunLock`` keeps two ``arx run`` processes off one run branch. ``clear_stale_index_lock`` deletes
an ``index.lock`` that a killed git left behind (git writes no pid into it, so a stale one would
block every later write), and waits for one that a live git still holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from arx.core.errors import RepoError, RunLockedError

if TYPE_CHECKING:  # git.py imports this module; RunLock only reads a GitRepo's root
    from arx.core.repo.git import GitRepo

__all__ = ["STALE_LOCK_AGE_S", "RunLock", "clear_stale_index_lock"]

#: without /proc (macOS) a lock we cannot attribute to a live git is stale only after this long
STALE_LOCK_AGE_S = 60.0


class RunLock:
    """Exclusive, non-blocking lock on one run: ``<repo>/.arx/locks/<name>.lock``.

    Uses ``fcntl.flock``, which the kernel drops when the holder dies (even by ``kill -9``), so
    a stale lock can never block a new run. The holder's pid is written into the file so that
    ``RunLockedError`` can name it. The file itself is never deleted (deleting a lock file races
    with a process that has just opened it).
    """

    def __init__(self, root: str | os.PathLike[str] | GitRepo, name: str):
        base = Path(root) if isinstance(root, (str, os.PathLike)) else root.root
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
        self.name = name
        self.path = base / ".arx" / "locks" / f"{safe}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def is_held(self) -> bool:
        """Whether anyone (another process, or this object) holds the lock right now."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we just took
        return False

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RunLockedError(f"run {self.name!r} is already locked by this RunLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RepoError(f"cannot lock {self.path}: {exc}") from None
            raise RunLockedError(
                f"run {self.name!r} is already in use by another arx process (pid {holder})",
                hint=f"wait for it to finish or stop it (`kill {holder}`); lock file: {self.path}",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def clear_stale_index_lock(lock: Path, root: Path, wait_s: float) -> None:
    """Delete git's ``lock`` (the path of ``index.lock``) of the repository at ``root`` if no live
    git process holds it.

    git writes no pid into its lock files, so a lock left by a killed process (``kill -9``
    of arx while it ran ``git add``) blocks every later write forever. On Linux we look for a
    running ``git`` whose working directory is in this repository: none (and the lock at
    least a second old, so we never race a git that is just starting) means stale. Without
    /proc we only trust age (``STALE_LOCK_AGE_S``). A held lock is waited for up to ``wait_s``
    (a user's ``git status`` takes it briefly), then RepoError.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        holders = _git_processes_in(root, lock.parent)
        stale = age >= STALE_LOCK_AGE_S if holders is None else (not holders and age >= 1.0)
        if stale:
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            return
        if time.monotonic() >= deadline:
            who = f" (git pid {', '.join(map(str, holders))})" if holders else ""
            raise RepoError(
                f"{lock} is held by another git process{who}",
                hint=f"wait for it to finish; if no git is running, delete {lock}",
            )
        time.sleep(0.1)


def _git_processes_in(*dirs: Path) -> list[int] | None:
    """Pids of running ``git`` processes whose cwd lies in ``dirs``; None where /proc is absent."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    prefixes = [str(d.resolve()) for d in dirs]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "comm").read_text().strip() != "git":
                continue
            cwd = os.readlink(entry / "cwd")
        except OSError:  # exited meanwhile, or another user's process
            continue
        if any(cwd == p or cwd.startswith(p + os.sep) for p in prefixes):
            found.append(int(entry.name))
    return found
