"""arx.core.repo.lock: RunLock with real processes, and the stale index.lock rule on plain files.

GitRepo's use of the index.lock rule (a killed git's lock cleared, a live git's lock respected) is
tested with real git in test_gitrepo.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from arx.core.errors import RepoError, RunLockedError
from arx.core.repo.lock import RunLock, clear_stale_index_lock


def test_index_lock_rule_on_plain_files(tmp_path):
    lock = tmp_path / "index.lock"
    clear_stale_index_lock(lock, tmp_path, wait_s=0.1)  # no lock: nothing to do
    lock.write_text("")
    with pytest.raises(RepoError, match="held by another git process"):  # too fresh to be stale
        clear_stale_index_lock(lock, tmp_path, wait_s=0.2)
    assert lock.exists()
    old = time.time() - 120  # older than STALE_LOCK_AGE_S too, for systems without /proc
    os.utime(lock, (old, old))
    clear_stale_index_lock(lock, tmp_path, wait_s=0.1)  # old, and no git runs here
    assert not lock.exists()


_HOLD_LOCK = """
import sys, time
from arx.core.repo.lock import RunLock
lock = RunLock(sys.argv[1], "run1").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert RunLock(tmp_path, "run1").is_held()
        assert not RunLock(tmp_path, "never-run").is_held()
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path, "run1").acquire()
        assert f"pid {holder.pid}" in str(err.value)
        with RunLock(tmp_path, "run2"):  # other runs are unaffected
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert not RunLock(tmp_path, "run1").is_held()
        with RunLock(tmp_path, "run1") as lock:  # the kernel dropped the dead holder's lock
            assert lock.held
            assert lock.path.read_text().strip() == str(os.getpid())
            with pytest.raises(RunLockedError):  # a second lock in the same process too
                RunLock(tmp_path, "run1").acquire()
        assert not lock.held
        RunLock(tmp_path, "run1").acquire().release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
