"""Replay a run branch from its base commit and check that it reproduces (`arx replay`).

A run branch carries its trace and every LLM exchange, so the whole loop can be run again
without training and without an API key: ``replay`` checks the versions the branch records
(``versions.py``), branches ``arx-replay/<branch>`` (named after the branch replayed:
``replay_branch_of``) from the parent of the run's ``baseline`` commit, lays in the run's own
``config.json``, and runs the real engine under the same run name once per recorded start and
resume, with the mechanisms added by hand in between (``sessions.py``, ``acts.py``), handed
trial results served from the trace and LLM answers from the transcripts (the offline Optuna
proposer, seeded, simply runs again). Every decision and every commit is then compared with the
original (``compare``), and with ``retrain`` the recorded configurations are trained again.

    report = replay(root, "arx/my-run")           # ReplayReport; report.exit_code: 0 or 1
    report = replay(root, "my-run", retrain=True, only_kept=True, tolerance=0.01)

Unusable input (no such branch, a corrupt trace or one of another trace version, no baseline,
an unfinished run, a history that cannot be re-derived, other versions than the recorded ones
without ``allow_version_drift``, other data than the recorded fingerprint) raises
``ReplayError`` or ``TraceError``: the command exits 2. The replay's worktree
(``.arx/replay/<key>``) is removed at the end; its branch stays for inspection (``--force``
replaces an existing one).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.codemods.bundle import read_files
from arx.core.errors import RepoError
from arx.core.replay.acts import plan
from arx.core.replay.compare import COMPARED, EVENT_KINDS, Side, compare
from arx.core.replay.engine import ServedTrials
from arx.core.replay.report import render
from arx.core.replay.retrain import RetrainReport
from arx.core.replay.retrain import retrain as retrain_trials
from arx.core.replay.sessions import replay_acts
from arx.core.replay.source import (
    Divergence,
    Recording,
    ReplayError,
    ReplayGit,
    load_recording,
    parse_trace,
)
from arx.core.replay.versions import check_provenance
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import REPLAY_PREFIX, replay_branch_of, replay_worktree_path
from arx.core.states import Event

__all__ = ["replay", "ReplayReport", "ReplayError", "Divergence", "COMPARED", "REPLAY_PREFIX"]


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
    #: the acts replayed (start, resumes, mechanisms added by hand), in order
    acts: list[str] = field(default_factory=list)
    #: what the branch's provenance says against this machine (``provenance_report``)
    provenance: dict[str, Any] = field(default_factory=dict)

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
            "seconds": round(self.seconds, 2), "compared": COMPARED, "acts": self.acts,
            "provenance": self.provenance,
        }

    def render(self) -> str:
        return render(self)


def replay(root: Path | str, branch: str, *, retrain: bool = False,
           only_kept: bool = False, tolerance: float | None = None, force: bool = False,
           allow_version_drift: bool = False,
           on_line: Callable[[str], None] | None = None) -> ReplayReport:
    """Replay ``branch`` (``arx/NAME``, ``NAME``, ``origin/arx/NAME``, any ref of a run) of the
    repository at ``root`` on the branch ``replay_branch_of(<the ref>)``."""
    started = time.monotonic()
    say = on_line or (lambda _s: None)
    repo = ReplayGit(root)
    rec = load_recording(repo, branch)
    acts = plan(repo, rec)
    provenance = check_provenance(rec, allow_version_drift)
    for note in provenance["notes"]:
        say(note)
    rec_branch = replay_branch_of(rec.branch)
    key = rec_branch[len(REPLAY_PREFIX):]
    lock = RunLock(repo.root, f"replay-{key}")
    lock.acquire()
    path = replay_worktree_path(repo.root, key)
    try:
        _make_room(repo, path, rec_branch, force)
        tree = repo.add_worktree(path, rec_branch, rec.base)
        say(f"replaying {rec.branch} ({rec.name}) from {rec.base[:8]} on {rec_branch}"
            + (f": {len(acts)} acts" if len(acts) > 1 else ""))
        done = replay_acts(repo, tree.root, rec_branch, rec, acts, lock, key)
        engine = done.engine
        replay_trace = parse_trace(engine.trace.path.read_bytes(), str(engine.trace.path)) \
            if engine.trace.path.exists() else []
        replay_commits = list(reversed(repo.log(f"{rec.base}..{rec_branch}")))
        kinds = compared_kinds(rec.events)
        original = Side(repo, rec.commits, rec.events, rec.trace_rel, kinds)
        replayed = Side(repo, replay_commits, replay_trace, rec.trace_rel, kinds)
        divergence, checked = compare(repo, rec.name, original, replayed, rec.trace_bytes,
                                      done.raised)
        client = done.client
        if divergence is None and client is not None and client.unserved:
            divergence = Divergence(f"LLM request {client.unserved[0].rsplit('/', 1)[-1]}",
                                    "the original made this LLM request; the replay did not")
        retrained = None
        if retrain:
            baseline_source = read_files(
                lambda p: (repo.blob(rec.baseline, p) or b"").decode(),
                rec.config.target.paths()) or ""
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
    counts = _counts(rec, done.trials, client, len(rec.commits))
    return ReplayReport(
        run=rec.name, branch=rec.branch, replay_branch=rec_branch, base=rec.base,
        iterations=engine.config.iterations, group=rec.config.group, proposer=rec.proposer,
        steps=len(original.steps), steps_checked=checked, counts=counts,
        divergence=divergence, retrain=retrained, seconds=time.monotonic() - started,
        acts=done.done, provenance=provenance)


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


def _counts(rec: Recording, trials: ServedTrials, client: Any, commits: int) -> dict[str, int]:
    kinds = [e.get("event") for e in rec.events]
    return {"trials": len(rec.records()), "level15": kinds.count("level15"),
            "level2": kinds.count("level2"), "resumes": kinds.count("resume"),
            "commits": commits, "trials_served": len(trials.served),
            "llm_requests": len(client.served) if client is not None else 0}


def compared_kinds(events: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The events a replay compares: a branch from before ``resume`` or ``step_aside`` events
    existed has none, and its replay (which writes them) is not held to them. A step-aside
    changes nothing and is a function of the trial records, which are compared either way."""
    found = {e.get("event") for e in events}
    return tuple(k for k in EVENT_KINDS
                 if k not in (Event.RESUME, Event.STEP_ASIDE) or k in found)
