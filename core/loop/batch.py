"""Several candidates per iteration (``--parallel N``): choosing them and picking the winner.

The engine validates up to N distinct candidates (``valid_batch``), hands them to its executor as
self-contained jobs carrying the files of the worktree (``job_files``; git stays on the driver),
records every one, and puts the best measured candidate (``best_index``) through the runner's
accept rule, so a batch makes at most one commit. These are plain functions of their arguments.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.core.codemods import bundle
from arx.core.codemods.constants import apply_changes
from arx.core.config import TargetConfig
from arx.core.errors import PatchError, ProposalError
from arx.core.execution.executor import Executor, TrialJob
from arx.core.execution.trial import ExecStatus, TrialResult
from arx.core.loop.space import ParameterSpace
from arx.core.loop.trials import TrialJournal, TrialKey
from arx.core.repo.git import GitRepo
from arx.core.states import TrialKind


@dataclass(frozen=True)
class Candidate:
    """A validated candidate: its changes, the patched target, its hypothesis."""

    changes: dict[str, Any]
    source: str
    hypothesis: str


def valid_batch(space: ParameterSpace, best_config: Mapping[str, Any], best_source: str,
                frozen: Sequence[str], candidates: Sequence[Mapping[str, Any]],
                chosen: Mapping[str, Any], limit: int,
                refusals: list[dict[str, str]], path: str | None = None) -> list[Candidate]:
    """Up to ``limit`` valid, distinct candidates, the runner's choice first; the refusal of any
    other candidate is appended to ``refusals`` (the chosen one's is already recorded)."""
    ordered = [chosen] + [c for c in candidates if c is not chosen]
    batch: list[Candidate] = []
    for cand in ordered:
        if len(batch) >= limit:
            break
        try:
            changes = space.validate(cand["changes"], best_config, frozen)
            source = apply_changes(best_source, changes, path)
        except (ProposalError, PatchError) as exc:
            if cand is not chosen:
                refusals.append({"reason": getattr(exc, "reason", "patch"),
                                 "message": exc.message})
            continue
        if any(changes == b.changes for b in batch):
            continue
        batch.append(Candidate(changes, source, cand.get("hypothesis", "")))
    return batch


def job_files(tree: GitRepo, worktree: Path) -> dict[str, str]:
    """The tracked files a job needs in its own directory (the run's records stay behind)."""
    return {rel: (worktree / rel).read_text() for rel in tree.tracked_files()
            if not rel.startswith("runs/") and (worktree / rel).is_file()}


def best_index(results: Sequence[TrialResult], direction: str) -> int | None:
    """The measured result with the best metric (the first of equals), or None."""
    ok = [k for k, r in enumerate(results) if r.status is ExecStatus.OK]
    sign = 1 if direction == "min" else -1
    return min(ok, key=lambda k: sign * results[k].metric) if ok else None


def jobs(iteration: int, batch: Sequence[Candidate], files: Mapping[str, str],
         target: TargetConfig, timeout_s: float, drop_env: Sequence[str],
         links: Mapping[str, str]) -> list[TrialJob]:
    """The executor jobs of one batch: every file of the worktree, the candidate's target, and
    links to the checkout's included untracked paths (``[target] include``)."""
    return [TrialJob(key=TrialKey(iteration, TrialKind.TRIAL, k).job_label(),
                     files={**files, **_target_files(target, cand.source)},
                     command=target.command,
                     timeout_s=timeout_s, metric=target.metric, metric_regex=target.metric_regex,
                     drop_env=tuple(drop_env), setup=target.setup, links=links,
                     progress_regex=target.progress_regex)
            for k, cand in enumerate(batch)]


def _target_files(target: TargetConfig, source: str) -> dict[str, str]:
    """path -> text of a candidate's target (one file, or each file of a bundle)."""
    return bundle.unpack(source) if bundle.is_bundle(source) else {target.file: source}


def run_jobs(executor: Executor, jobs: Sequence[TrialJob], batch: Sequence[Candidate],
             iteration: int, journal: TrialJournal) -> tuple[list[TrialResult], list[list]]:
    """Journal the candidates' starts, run the jobs at once (the driver alone writes git), and
    return their results and ``[started, finished, worker]`` intervals, in candidate order."""
    for k, cand in enumerate(batch):
        journal.trace.start(iteration, TrialKind.TRIAL, cand.changes,
                            hypothesis=cand.hypothesis, seq=k)
    started = time.monotonic()
    done = executor.run(jobs)
    journal.count(len(jobs), time.monotonic() - started)
    return ([jr.result for jr in done],
            [[round(jr.started_at, 3), round(jr.finished_at, 3), jr.worker] for jr in done])
