"""Replay a run branch from its base commit and check that it reproduces (`arx replay`).

A run branch carries its trace and every LLM exchange, so the whole loop can be run again
without training and without an API key: ``replay`` branches ``arx-replay/<name>`` from the
parent of the run's ``baseline`` commit, lays in the run's own ``config.json``, and runs the
real engine under the same run name, handed trial results served from the trace (``ServedTrials``)
and LLM answers from the transcripts (the offline Optuna proposer, seeded, simply runs again).
Every decision and every commit is then compared with the original (``replay_compare``), and
with ``retrain`` the recorded configurations are trained again (``replay_retrain``).

    report = replay(root, "arx/my-run")           # ReplayReport; report.exit_code: 0 or 1
    report = replay(root, "my-run", retrain=True, only_kept=True, tolerance=0.01)

Unusable input (no such branch, a corrupt trace or one of another trace version, no baseline,
an unfinished or resumed run, other data than the recorded fingerprint) raises ``ReplayError``
or ``TraceError``: the command exits 2. The replay's worktree (``.arx/replay/<name>``) is
removed at the end; its branch stays for inspection (``--force`` replaces an existing one).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arx.core.errors import ArxError, RepoError
from arx.core.loop.engine import Engine
from arx.core.loop.trace import Trace
from arx.core.proposers.llm import LLMProposer
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.compare import COMPARED, Side, compare
from arx.core.replay.engine import (
    RecordedClock,
    ReplayChatClient,
    ReplayExecutor,
    ServedTrials,
)
from arx.core.replay.report import render
from arx.core.replay.retrain import DEFAULT_TOLERANCE, RetrainReport
from arx.core.replay.retrain import retrain as retrain_trials
from arx.core.replay.source import (
    Divergence,
    DivergenceFound,
    Recording,
    ReplayError,
    ReplayGit,
    load_recording,
    parse_trace,
)
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import REPLAY_PREFIX, LocalPaths, replay_worktree_path
from arx.core.repo.workspace import Workspace
from arx.core.states import TrialKind

__all__ = ["replay", "ReplayReport", "ReplayError", "Divergence", "COMPARED",
           "DEFAULT_TOLERANCE", "REPLAY_PREFIX"]


class ReplayWorkspace(Workspace):
    """A run's workspace for its replay: same run name, its own logs and pid file."""

    @property
    def local(self) -> LocalPaths:
        return LocalPaths(self.root, f"replay-{self.name}")


@dataclass
class ReplayReport:
    """What a replay found. ``divergence`` is the first step that differs (None: none)."""

    run: str
    branch: str
    replay_branch: str
    base: str
    iterations: int
    group: str
    proposer: str
    steps: int  # steps of the original's timeline
    steps_checked: int  # equal before the first divergence (all of them when identical)
    counts: dict[str, int]
    divergence: Divergence | None
    retrain: RetrainReport | None
    seconds: float

    @property
    def reproduced(self) -> bool:
        return self.divergence is None and (self.retrain is None or self.retrain.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.reproduced else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "reproduced" if self.reproduced else "diverged", "run": self.run,
            "branch": self.branch, "replay_branch": self.replay_branch, "base": self.base,
            "iterations": self.iterations, "group": self.group, "proposer": self.proposer,
            "steps": self.steps, "steps_checked": self.steps_checked, "counts": self.counts,
            "first_divergence": self.divergence.as_dict() if self.divergence else None,
            "retrain": self.retrain.as_dict() if self.retrain else None,
            "seconds": round(self.seconds, 2), "compared": COMPARED,
        }

    def render(self) -> str:
        return render(self)


def replay(root: Path | str, branch: str, *, retrain: bool = False,
           only_kept: bool = False, tolerance: float | None = None, force: bool = False,
           on_line: Callable[[str], None] | None = None) -> ReplayReport:
    """Replay ``branch`` (``arx/NAME`` or ``NAME``) of the repository at ``root``."""
    started = time.monotonic()
    say = on_line or (lambda _s: None)
    repo = ReplayGit(root)
    rec = load_recording(repo, branch)
    rec_branch = REPLAY_PREFIX + rec.name
    lock = RunLock(repo.root, f"replay-{rec.name}")
    lock.acquire()
    path = replay_worktree_path(repo.root, rec.name)
    try:
        _make_room(repo, path, rec_branch, force)
        tree = repo.add_worktree(path, rec_branch, rec.base)
        say(f"replaying {rec.branch} ({rec.name}) from {rec.base[:8]} on {rec_branch}")
        engine, client, raised = _run_loop(repo, tree, rec, lock)
        replay_trace = parse_trace(engine.trace.path.read_bytes(), str(engine.trace.path)) \
            if engine.trace.path.exists() else []
        replay_commits = list(reversed(repo.log(f"{rec.base}..{rec_branch}")))
        original = Side(repo, rec.commits, rec.events, rec.trace_rel)
        replayed = Side(repo, replay_commits, replay_trace, rec.trace_rel)
        divergence, checked = compare(repo, rec.name, original, replayed, rec.trace_bytes, raised)
        if divergence is None and client is not None and client.unserved:
            divergence = Divergence(f"LLM request {client.unserved[0].rsplit('/', 1)[-1]}",
                                    "the original made this LLM request; the replay did not")
        retrained = None
        if retrain:
            baseline_source = (repo.blob(rec.baseline, rec.config.target.file) or b"").decode()
            retrained = retrain_trials(
                rec, tree.root, rec.config, baseline_source, only_kept=only_kept,
                tolerance=tolerance, log_dir=engine.ws.log_dir, pid_path=engine.ws.pid_path,
                on_line=say)
    finally:
        try:
            repo.remove_worktree(path)
        except RepoError:
            pass
        lock.release()
    counts = _counts(rec, engine, client, len(rec.commits))
    return ReplayReport(
        run=rec.name, branch=rec.branch, replay_branch=rec_branch, base=rec.base,
        iterations=engine.config.iterations, group=rec.config.group, proposer=rec.proposer,
        steps=len(original.steps), steps_checked=checked, counts=counts,
        divergence=divergence, retrain=retrained, seconds=time.monotonic() - started)


def _make_room(repo: ReplayGit, path: Path, branch: str, force: bool) -> None:
    if not repo.branch_exists(branch) and not path.exists():
        return
    if not force:
        raise ReplayError(f"{branch} already exists (an earlier replay)",
                          hint=f"pass --force to replace it, or `git branch -D {branch}`")
    try:
        repo.remove_worktree(path)
    except RepoError:
        shutil.rmtree(path, ignore_errors=True)
    if repo.branch_exists(branch):
        repo.delete_branch(branch)


def _run_loop(repo: ReplayGit, tree: Any, rec: Recording, lock: RunLock):
    """Run the engine on the replay branch; returns (engine, client, divergence raised)."""
    run_dir = tree.root / rec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_bytes(rec.config_bytes)
    if rec.settings_bytes is not None:
        (tree.root / rec.llm_settings_rel).write_bytes(rec.settings_bytes)
    done = max((int(r.get("iteration", 0)) for r in rec.records()
                if r.get("kind", "trial") == TrialKind.TRIAL), default=0)
    config = replace(rec.config, iterations=max(rec.config.iterations, done))
    ws = ReplayWorkspace(repo.root, repo, tree, rec.name, config, lock, False)
    client = ReplayChatClient(rec, tree.root) if rec.uses_llm else None
    proposer: Any = LLMProposer(client) if client is not None else \
        offline_proposer(config)
    trials = ServedTrials(rec)
    executor = ReplayExecutor(config.parallel, config.target.file, trials,
                              Trace(tree.root / rec.trace_rel)) if config.parallel > 1 else None
    engine = Engine(ws, proposer, llm=client, executor=executor, trials=trials,
                    clock=RecordedClock(rec))
    raised = None
    try:
        engine.run()
    except DivergenceFound as exc:
        raised = exc.divergence
    except ArxError as exc:
        raised = Divergence("the replayed loop", "the replay stopped with an error the original "
                            f"run did not have: {exc.message}", "error")
    return engine, client, raised


def _counts(rec: Recording, engine: Engine, client: Any, commits: int) -> dict[str, int]:
    kinds = [e.get("event") for e in rec.events]
    return {"trials": len(rec.records()), "level15": kinds.count("level15"),
            "level2": kinds.count("level2"), "commits": commits,
            "trials_served": len(engine.trials.served),
            "llm_requests": len(client.served) if client is not None else 0}
