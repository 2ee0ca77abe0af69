"""A trial that did not get the machine its baseline got is recorded contended and run again.

The target (tests/support/busy_train.py) counts how much work fits in its wall-clock budget, so
a busy machine makes its metric worse whatever its constants say. The test starts real CPU hogs
(more busy processes than cores) while one trial runs, and stops them a few seconds later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import git
import pytest

from arx.core.loop import noise
from arx.core.loop.engine import Engine
from arx.core.proposers.base import Proposal, Proposer
from arx.core.repo.workspace import open_run
from arx.core.states import TrialState

from support.repos import make_script_repo

# serial: (pytest -m serial) it loads every core on purpose and measures contention; not beside another test's load (README)
pytestmark = pytest.mark.serial

BUSY = Path(__file__).parents[2] / "support" / "busy_train.py"


class Scripted(Proposer):
    """Boundary fake: changes of a constant with no effect, one per iteration."""

    name = "scripted"

    def __init__(self):
        self.n = 0

    def propose(self, request, feedback=None):
        self.n += 1
        return [Proposal(changes={"SCALE": 1.0 + self.n / 10}, hypothesis="no effect",
                         source=self.name)]


def hog_during(trace: Path, iteration: int, seconds: float, stop: threading.Event) -> None:
    """When iteration ``iteration``'s trial starts, keep every core busy for ``seconds``."""
    while not stop.is_set():
        if trace.exists() and any(
                '"event": "start"' in line and f'"iteration": {iteration},' in line
                and '"kind": "trial"' in line for line in trace.read_text().splitlines()):
            break
        time.sleep(0.02)
    # each in its own session, like other users' jobs: the kernel shares CPU between sessions
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(2 * (os.cpu_count() or 1) + 1)]
    try:
        stop.wait(seconds)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_trials_under_a_cpu_hog_are_contended_and_run_again(tmp_path):
    root = make_script_repo(tmp_path / "p", BUSY)
    ws = open_run(root, {"iterations": 4}, name="c")
    assert ws.config.time_mode
    engine = Engine(ws, Scripted())
    stop = threading.Event()
    hog = threading.Thread(target=hog_during, args=(ws.path / ws.trace_rel, 2, 3.0, stop))
    hog.start()
    try:
        engine.run()
    finally:
        stop.set()
        hog.join()
        ws.close(remove_worktree=True)
    records = [json.loads(line) for line in git.Repo(root).git.show(
        "arx/c:runs/c/trace.jsonl").splitlines()]
    trials = [r for r in records if r.get("event") == "trial"]
    reference = noise.reference_usage(trials)
    assert reference is not None and reference["cpu_share"] > 0.5  # the target is CPU-bound
    contended = [r for r in trials if r["status"] == TrialState.CONTENDED]
    assert contended, "the hog made no trial contended"
    assert {r["iteration"] for r in contended} <= {2, 3}
    for r in contended:
        assert noise.contended(r["machine"], reference)
        assert "margin_sd" not in r and r["reason"].startswith("contended: others kept")
    # every contended trial ran again, and what was decided came from an uncontended attempt
    decided = [r for r in trials if r.get("kind") == "trial"
               and r["status"] in (TrialState.KEEP, TrialState.DISCARD)]
    assert sorted(r["iteration"] for r in decided) == [1, 2, 3, 4]
    for r in decided:
        assert not noise.contended(r["machine"], reference)
    again = [r for r in decided if r["iteration"] == contended[0]["iteration"]]
    assert again[0]["attempt"] == max(c.get("attempt", 0) for c in contended
                                      if c["iteration"] == again[0]["iteration"]) + 1
    # the machine may have changed: the best was measured again before the next iteration
    first = min(r["iteration"] for r in contended if r["kind"] == "trial")
    assert any(r["kind"] == "rebaseline" and r["iteration"] == first + 1
               and r["status"] in ("rebaseline", "contended") for r in trials)
