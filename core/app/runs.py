"""Read-only views of runs for `arx status` and `arx log`, straight from the branches.

A run's state is derived, never stored: ``running`` while a process holds its lock,
``finished`` when the branch ends with an ``end`` commit covering every iteration,
``interrupted`` otherwise (resume it with ``arx run --resume NAME``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arx.core.config import RunConfig
from arx.core.errors import RepoError
from arx.core.levels.mechanism_state import MechanismRecord, mechanism_records
from arx.core.levels.outcome import step_aside_line
from arx.core.loop.noise import latest_noise, reported
from arx.core.loop.trace import trace_events
from arx.core.repo.commits import Trailer, has_ended
from arx.core.repo.git import GitRepo
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import BRANCH_PREFIX, RunFiles, branch_of
from arx.core.states import FAILED, Event, Level, RunState, TrialKind, TrialState


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: RunState
    iterations_done: int
    iterations: int
    baseline: float | None
    best: float | None
    delta: float | None
    counts: Mapping[str, int]
    direction: str
    metric: str
    tokens: int
    cost_usd: float
    mechanisms: tuple[str, ...]
    #: the measured spread of the metric (None: not measured) and over how many runs
    noise_sd: float | None = None
    noise_n: int = 0
    #: trials recorded contended and run again
    reruns: int = 0
    #: the latest held-out verification (the trace's ``verify`` event), None: not verified
    verified: Mapping[str, Any] | None = None
    #: confirmation trainings that failed (``confirm_timeout``, ``confirm_crash``, ...)
    confirm_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


def run_names(repo: GitRepo) -> list[str]:
    return sorted(b[len(BRANCH_PREFIX):] for b in repo.branches(BRANCH_PREFIX + "*"))


def is_locked(repo: GitRepo, name: str) -> bool:
    return RunLock(repo.root, name).is_held()


def run_status(repo: GitRepo, name: str) -> RunStatus:
    branch = branch_of(name)
    if not repo.branch_exists(branch):
        raise RepoError(f"no run named {name!r}", hint="`arx status` lists the runs")
    stored = repo.show(branch, RunFiles(name).config_rel)
    config = RunConfig.from_json(stored) if stored else None
    records_all = trace_events(repo, name)
    records = [e for e in records_all if e.get("event") == Event.TRIAL]
    noise = latest_noise(records_all)
    trials = [r for r in records if r.get("kind") == TrialKind.TRIAL
              and r.get("status") not in (TrialState.INTERRUPTED, TrialState.CONTENDED)]
    counts: dict[str, int] = {}
    for r in trials:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done = len({r["iteration"] for r in trials})  # --parallel records several per iteration
    base, best = reported(records, noise)
    # the target a resume set (`--resume --iterations 45`), else the one the run started with
    iterations = next((int(e["iterations"]) for e in reversed(records_all)
                       if e.get("event") == Event.RESUME and e.get("iterations")),
                      config.iterations if config else 0)
    ended = has_ended(repo.log(branch, max_count=50))
    if is_locked(repo, name):
        state = RunState.RUNNING
    elif ended and done >= iterations:
        state = RunState.FINISHED
    else:
        state = RunState.INTERRUPTED
    tokens = sum(int((r.get("usage") or {}).get("prompt_tokens", 0))
                 + int((r.get("usage") or {}).get("completion_tokens", 0)) for r in records)
    cost = sum(float((r.get("usage") or {}).get("cost_usd", 0.0)) for r in records)
    return RunStatus(
        name=name, state=state, iterations_done=done, iterations=iterations,
        baseline=base, best=best,
        delta=(best - base) if best is not None and base is not None else None,
        counts=counts, direction=config.target.direction if config else "min",
        metric=config.target.metric if config else "metric", tokens=tokens, cost_usd=cost,
        mechanisms=tuple(m.name for m in mechanism_records(records_all) if m.active),
        noise_sd=noise.get("sd") if noise else None, noise_n=int(noise.get("n") or 0)
        if noise else 0,
        reruns=sum(1 for r in records if r.get("status") == TrialState.CONTENDED),
        verified=next((e for e in reversed(records_all) if e.get("event") == Event.VERIFY),
                      None),
        confirm_failed=sum(1 for r in records if r.get("kind") == TrialKind.CONFIRM
                           and r.get("status") in FAILED),
    )


def run_mechanisms(repo: GitRepo, name: str) -> list[MechanismRecord]:
    """Every Level-2 mechanism of a run with its state (see ``mechanism_state``)."""
    return mechanism_records(trace_events(repo, name))


def history(repo: GitRepo, name: str) -> list[CommitRecord]:
    """The run's own commits (those with its Arx-Run trailer), oldest first."""
    return [c for c in reversed(repo.log(branch_of(name))) if c.trailers.get(Trailer.RUN) == name]


def history_with_decisions(repo: GitRepo, name: str) -> list[CommitRecord]:
    """``history`` with the decisions that changed nothing and so made no commit (a Level-2
    cycle that stepped aside: trace ``step_aside`` events), each as a record without a sha,
    after the commits of the iterations before it."""
    rows = history(repo, name)
    for e in (e for e in trace_events(repo, name) if e.get("event") == Event.STEP_ASIDE):
        at = int(e.get("iteration") or 0)
        row = CommitRecord("", step_aside_line(e), "", {
            Trailer.RUN: name, Trailer.LEVEL: Level.L2.value, Trailer.CYCLE: str(e.get("cycle")),
            Trailer.ITERATION: str(at)})
        k = next((k for k, c in enumerate(rows) if _after(c, at)), len(rows))
        rows.insert(k, row)
    return rows


def _after(commit: CommitRecord, iteration: int) -> bool:
    """Whether ``commit`` belongs after a decision taken before iteration ``iteration + 1``:
    it is of a later iteration, or the end of the run."""
    if commit.trailers.get(Trailer.LEVEL) == Level.END.value:
        return True
    value = commit.trailers.get(Trailer.ITERATION, "")
    return value.isdigit() and int(value) > iteration
