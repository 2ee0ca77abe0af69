"""``arx verify NAME``: a finished run's result measured again on seeds no decision used.

A run verifies its best when it ends (``--verify K``); this is the same measurement on demand,
for a run that ended without one (``--verify 0``, or made before verification existed) or to
add seeds. It opens the run like a resume (its branch, worktree and lock), trains the baseline
and the best on ``k`` new held-out seeds, records a ``verify`` event with where the run stood
(so `arx replay` does it again at the same point) and commits it alone.
"""

from __future__ import annotations

from pathlib import Path

from arx.core.app.runs import run_status
from arx.core.errors import RunError
from arx.core.loop.engine import Engine
from arx.core.loop.progress import Reporter
from arx.core.loop.verify import Verified, verify_finished
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run
from arx.core.states import RunState

__all__ = ["verify_run"]


def verify_run(root: Path | str, name: str, k: int,
               reporter: Reporter | None = None) -> Verified | None:
    """Verify finished run ``name`` on ``k`` held-out seeds; None when it kept nothing."""
    if k < 1:
        raise RunError("--seeds must be at least 1")
    state = run_status(GitRepo(root), name).state
    if state is not RunState.FINISHED:
        raise RunError(f"run {name} is {state}: verify a finished run",
                       hint=f"finish it first with `arx run --resume {name}`"
                       if state is RunState.INTERRUPTED else "wait until it has finished")
    ws = open_run(Path(root), {}, resume=name)
    finished = False
    try:
        engine = Engine(ws, offline_proposer(ws.config), reporter)
        result = verify_finished(engine, k)
        finished = True
        return result
    finally:  # a verification stopped half-way keeps its worktree (and its trace lines)
        ws.close(remove_worktree=finished)
