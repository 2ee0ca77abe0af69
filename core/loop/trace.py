"""The run trace: ``runs/<name>/trace.jsonl``, an append-only journal of every trial.

One JSON object per line. A ``start`` event is written before a trial runs and a trial record
after it finishes, so a run killed mid-trial leaves a start with no end: on resume that trial is
recorded as ``interrupted`` and run again (Optuna's stale-trial rule, not a guess). The trace is
the source of truth for resume, status, report and replay; git commits carry it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.core.errors import TraceError
from arx.core.llm.jsonextract import json_depth
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import RunFiles, branch_of, worktree_path
from arx.core.states import Event, TrialState

#: the deepest nesting of lists and objects a trace line or transcript may have: a branch may
#: be a stranger's, and ``json.loads`` raises RecursionError (or worse) on a deep enough one
MAX_DEPTH = 100


def load_line(text: str | bytes) -> dict[str, Any]:
    """One JSON object of a trace or transcript; ValueError for anything else, including a
    nesting deeper than ``MAX_DEPTH`` (checked in linear time before parsing)."""
    if json_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj

TRACE_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON-safe: tuples -> lists, non-finite floats -> strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TraceRecord:
    """One finished trial, as read back from the trace."""

    data: Mapping[str, Any]

    @property
    def iteration(self) -> int:
        return int(self.data["iteration"])

    @property
    def state(self) -> TrialState:
        return TrialState(self.data["status"])

    @property
    def kind(self) -> str:
        return self.data.get("kind", "trial")

    @property
    def metric(self) -> float | None:
        value = self.data.get("metric")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def changes(self) -> Mapping[str, Any]:
        return self.data.get("changes") or {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


class Trace:
    """Reads and appends ``trace.jsonl``. Each append is one line, flushed and fsynced.

    ``guard``, when given, is called before every line is written (a replay stops a session
    there, at the point where the recorded run was stopped)."""

    def __init__(self, path: Path, guard: Callable[[], None] | None = None):
        self.path = Path(path)
        self.guard = guard

    def exists(self) -> bool:
        return self.path.exists()

    def _append(self, obj: Mapping[str, Any]) -> None:
        if self.guard is not None:
            self.guard()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_clean({"v": TRACE_VERSION, **obj}), sort_keys=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def start(self, iteration: int, kind: str, changes: Mapping[str, Any], **extra: Any) -> None:
        self._append(
            {"event": Event.START, "iteration": iteration, "kind": kind, "changes": changes, **extra}
        )

    def record(self, record: Mapping[str, Any]) -> TraceRecord:
        data = {"event": Event.TRIAL, **record}
        if "status" in data and isinstance(data["status"], TrialState):
            data["status"] = data["status"].value
        self._append(data)
        return TraceRecord(_clean(data))

    def note(self, event: Event, data: Mapping[str, Any]) -> None:
        """An outer-loop decision (``level15``, ``level2``): read back by report and replay."""
        self._append({"event": event, **data})

    def notes(self, event: Event) -> list[Mapping[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def events(self) -> Iterator[Mapping[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = load_line(line)
                except ValueError:
                    # a torn last line from a killed process is expected; anything else is not
                    if not fh.readline():
                        return
                    raise TraceError(
                        f"{self.path}:{lineno} is not JSON",
                        hint="the trace is corrupt; restore it with `git checkout` on the branch",
                    ) from None
                if obj.get("v") != TRACE_VERSION:
                    raise TraceError(
                        f"{self.path}:{lineno} has trace version {obj.get('v')!r}; "
                        f"this arx reads version {TRACE_VERSION}",
                        hint="use the arx version that wrote this run",
                    )
                yield obj

    def records(self) -> list[TraceRecord]:
        return [TraceRecord(e) for e in self.events() if e.get("event") == Event.TRIAL]

    def pending(self) -> list[Mapping[str, Any]]:
        """Start events with no matching finished record: trials a killed run left behind."""
        open_starts: dict[tuple[int, str, int], Mapping[str, Any]] = {}
        for event in self.events():
            if event.get("event") not in (Event.START, Event.TRIAL):
                continue
            key = (event["iteration"], event.get("kind", "trial"), event.get("seq", 0))
            if event.get("event") == Event.START:
                open_starts[key] = event
            elif event.get("event") == Event.TRIAL:
                open_starts.pop(key, None)
        return list(open_starts.values())

    def line_count(self) -> int:
        """Lines in the file now (resume records it; replay stops a session at it)."""
        return len(self.path.read_bytes().splitlines()) if self.path.exists() else 0

    def repair_tail(self) -> None:
        """Drop a torn final line (a kill during a write), so appends start on a fresh line."""
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            self.path.write_bytes(raw[:cut])


def best_of(records: Iterable[TraceRecord]) -> TraceRecord | None:
    """The record whose config is the current best: the last baseline or keep."""
    best = None
    for rec in records:
        if rec.state in (TrialState.BASELINE, TrialState.KEEP):
            best = rec
    return best


def trace_events(repo: GitRepo, name: str, rev: str | None = None) -> list[dict[str, Any]]:
    """Every event of a run's trace, oldest first: from the live worktree while the run is in
    progress (lines not committed yet), else from the branch tip (or ``rev``)."""
    rel = RunFiles(name).trace_rel
    live = worktree_path(repo.root, name) / rel
    text = live.read_text() if rev is None and live.exists() else repo.show(
        rev or branch_of(name), rel)
    out = []
    for lineno, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = load_line(line)
        except ValueError:
            continue  # a torn line of a live run
        if obj.get("v") != TRACE_VERSION:
            raise TraceError(f"run {name}: trace line {lineno} has version {obj.get('v')!r}",
                             hint="use the arx version that wrote this run")
        out.append(obj)
    return out


def read_trace(repo: GitRepo, name: str, rev: str | None = None) -> list[dict[str, Any]]:
    """Finished-trial records of a run, oldest first (see ``trace_events``)."""
    return [e for e in trace_events(repo, name, rev) if e.get("event") == Event.TRIAL]
