"""Watching real processes from tests: has it exited, has a file it writes appeared."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int, within: float = 2.0) -> bool:
    """Whether ``pid`` has exited (a zombie counts as exited) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat[stat.rfind(")") + 2] in "ZX":
            return True
        time.sleep(0.02)
    return False


def wait_for(path: Path, within: float = 5.0) -> str:
    """The stripped text of ``path`` once it is there and not empty."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")
