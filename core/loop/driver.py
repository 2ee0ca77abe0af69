"""Running a workspace's engine to its end and releasing the workspace, whatever happens."""

from __future__ import annotations

from arx.core.execution.executor import Executor
from arx.core.loop.engine import Engine
from arx.core.loop.progress import Reporter
from arx.core.loop.trials import default_executor
from arx.core.proposers.base import Proposer
from arx.core.repo.workspace import Workspace

__all__ = ["run_to_end"]


def run_to_end(ws: Workspace, proposer: Proposer, reporter: Reporter | None = None,
               executor: Executor | None = None) -> Engine:
    """Run (or resume) ``ws`` to its last iteration, then release it: the worktree is removed
    only when the run finished, so an interrupted one resumes from where it stopped. Without an
    ``executor``, the one the run's settings ask for (``default_executor``)."""
    finished = False
    try:
        try:
            if executor is None:
                executor = default_executor(ws)
            engine = Engine(ws, proposer, reporter, llm=getattr(proposer, "client", None),
                            executor=executor)
            engine.run()
        finally:
            if executor is not None:
                executor.close()
        finished = True
        return engine
    finally:
        ws.close(remove_worktree=finished)
