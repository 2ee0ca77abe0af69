"""The replayed loop: the real engine, with trial results and LLM answers served from the record.

A replay runs ``Engine`` itself, handed three recorded parts instead of live ones: ``ServedTrials``
(the ``TrialRunner``) serves the recorded ``TrialResult`` of trial (iteration, kind, seq) after
checking that the replay asks for exactly the trial the original ran (same changes, same
constants in the file it would train); ``RecordedClock`` serves the recorded ``finished_at``;
``ReplayExecutor`` serves the candidates of a ``--parallel`` iteration the same way. Everything
else runs for real: the runner and its mechanisms, the proposer (the seeded Optuna proposer
re-runs; an LLM proposer reads ``ReplayChatClient``), Level 1.5, the Level-2 patch, gate, commit
and revert, and every git commit.

``ReplayChatClient`` keeps the ``ChatClient`` contract and answers from the transcripts in
request order: a request whose purpose or messages differ from the recorded one is a divergence,
as is an answer that no longer parses to what the transcript recorded. Each served transcript is
copied byte for byte into the replay's worktree, so the commits can be compared tree for tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arx.core.codemods.bundle import read_files
from arx.core.codemods.constants import discover_constants
from arx.core.execution.curve import CurveReader
from arx.core.execution.executor import Executor, JobResult, TrialJob
from arx.core.execution.trial import ExecStatus, TrialResult
from arx.core.llm.client import ChatResult
from arx.core.loop.trace import Trace
from arx.core.loop.trials import SUMMARY_KEYS, Clock, TrialKey, TrialRequest, TrialRunner
from arx.core.replay.source import Divergence, DivergenceFound, Recording, norm
from arx.core.replay.stops import Cutter

_STATUS = {"crash": ExecStatus.CRASH, "fail": ExecStatus.FAIL, "nan": ExecStatus.NAN,
           "no_metric": ExecStatus.NO_METRIC, "timeout": ExecStatus.TIMEOUT,
           "interrupted": ExecStatus.INTERRUPTED, "pruned": ExecStatus.PRUNED}
TRIM = 160


def served_result(rec: Mapping[str, Any]) -> TrialResult:
    """The ``TrialResult`` a recorded trial record stands for."""
    status = _STATUS.get(str(rec.get("status")), ExecStatus.OK)
    metric = rec.get("metric") if status is ExecStatus.OK else None
    return TrialResult(
        status=status, metric=float(metric) if isinstance(metric, (int, float)) else None,
        returncode=rec.get("returncode"), wall_s=float(rec.get("wall_s") or 0.0),
        summary={k: rec[k] for k in SUMMARY_KEYS if k in rec}, log_tail=rec.get("log_tail") or "",
        reason=rec.get("reason") or "", usage=dict(rec.get("machine") or {}),
        digest=rec.get("output_digest"), metric_text=rec.get("metric_text"),
        curve=tuple((float(p), float(v)) for p, v in rec.get("curve") or ()),
        curve_unit=rec.get("curve_unit"), curve_stride=int(rec.get("curve_stride") or 1),
        curve_end=rec.get("curve_end"))


def trim(text: Any, at: int = 0, width: int = TRIM) -> str:
    """``text`` cut to about ``width`` characters around position ``at``."""
    text = text if isinstance(text, str) else repr(text)
    if len(text) <= width:
        return text
    start = max(0, min(at - width // 3, len(text) - width))
    return ("..." if start else "") + text[start:start + width] + (
        "..." if start + width < len(text) else "")


def first_difference(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


class ServedTrials(TrialRunner):
    """Serves the recorded result of each trial the replayed engine asks for. With a
    ``Cutter``, a trial at the point where the recorded session stopped is not served: the
    session stops there (``Stopped``), as the original's process did."""

    def __init__(self, recording: Recording, cutter: Cutter | None = None):
        self.recording = recording
        self.cutter = cutter
        self.served: set[TrialKey] = set()

    def run(self, request: TrialRequest) -> TrialResult:
        if self.cutter is not None:
            self.cutter.trial()
        rec = self.requested(request.key, request.changes, request.source)
        if request.watch is not None:
            rewatch(request.key, rec, request.watch)
        return served_result(rec)

    def forget_unrecorded(self, trace: Trace) -> None:
        """After a stopped session: a trial served but never recorded (the session stopped
        between the two) may be asked for again by the resumed one."""
        recorded = {TrialKey(int(r.iteration), r.kind, int(r.get("seq", 0) or 0))
                    for r in trace.records()}
        self.served &= recorded

    def requested(self, key: TrialKey, changes: Mapping[str, Any],
                  source: str) -> Mapping[str, Any]:
        """The recorded trial the replay asks for, after checking it is the same trial."""
        step = key.describe()
        rec = self.recording.trial(key.iteration, key.kind, key.seq, key.attempt)
        if rec is None:
            raise DivergenceFound(Divergence(
                step, "the replay trains a trial the original never ran", "changes",
                original=None, replay=norm(changes)))
        if key in self.served:
            raise DivergenceFound(Divergence(step, "the replay trains this trial a second time"))
        if norm(changes) != norm(rec.get("changes") or {}):
            raise DivergenceFound(Divergence(
                step, "the replay trains other changes than the original", "changes",
                original=norm(rec.get("changes") or {}), replay=norm(changes)))
        config = rec.get("config") or {}
        if config:
            values = {c.name: c.value for c in discover_constants(
                source, self.recording.config.target.file)}
            for name in sorted(config):
                if norm(values.get(name)) != norm(config[name]):
                    raise DivergenceFound(Divergence(
                        step, f"the file the replay would train sets {name} differently",
                        f"config.{name}", original=config[name], replay=norm(values.get(name))))
        self.served.add(key)
        return rec


def rewatch(key: TrialKey, rec: Mapping[str, Any], watch: Callable[[CurveReader], bool]) -> None:
    """Show the recorded curve to the trial's watch point by point, as the run did: a trial the
    original pruned must be stopped at its last point and not before, any other never. A curve
    thinned as it was read (``curve_stride``) lost points the run decided on: only its last
    point's decision is checked then."""
    points = [(float(p), float(v)) for p, v in rec.get("curve") or ()]
    if not points:
        return
    pruned = rec.get("status") == ExecStatus.PRUNED.value
    reader = CurveReader()
    reader.unit = rec.get("curve_unit")
    thinned = int(rec.get("curve_stride") or 1) > 1
    for k, point in enumerate(points):
        reader.points.append(point)
        last = k == len(points) - 1
        if thinned and not (last and pruned):
            continue
        if watch(reader) != (pruned and last):
            what = "stops the trial" if not (pruned and last) else "does not stop the trial"
            raise DivergenceFound(Divergence(
                key.describe(), f"the runner's prune rule {what} at {reader.unit} {point[0]:g} "
                "of the recorded curve", "status", original=rec.get("status"),
                replay="pruned" if not (pruned and last) else "not pruned"))


class RecordedClock(Clock):
    """Stamps a replayed record with the time the original recorded."""

    def __init__(self, recording: Recording):
        self.recording = recording

    def stamp(self, key: TrialKey) -> str:
        rec = self.recording.trial(key.iteration, key.kind, key.seq, key.attempt)
        return rec.get("finished_at", "") if rec is not None else super().stamp(key)


class ReplayExecutor(Executor):
    """Serves the recorded results of the candidates of a ``--parallel`` iteration. What each
    candidate changes is read from its ``start`` event in the replay's trace."""

    def __init__(self, slots: int, target_file: str | Sequence[str], trials: ServedTrials,
                 trace: Trace):
        self.slots = slots
        #: the target's files, the script first (``[target] files``)
        self.paths = (target_file,) if isinstance(target_file, str) else tuple(target_file)
        self.trials = trials
        self.trace = trace

    def run(self, jobs: Sequence[TrialJob]) -> list[JobResult]:
        if self.trials.cutter is not None:
            self.trials.cutter.trial()
        starts = {TrialKey(int(s["iteration"]), s.get("kind", "trial"), int(s.get("seq", 0))):
                  s.get("changes") or {} for s in self.trace.pending()}
        out = []
        for job in jobs:
            key = TrialKey.from_job_label(job.key)
            source = read_files(job.files.get, self.paths) or ""
            rec = self.trials.requested(key, starts.get(key, {}), source)
            started, finished, worker = (list(rec.get("interval") or []) + [0.0, 0.0, "replay"])[:3]
            out.append(JobResult(job.key, served_result(rec), started, finished, worker))
        return out


class ReplayChatClient:
    """The ``ChatClient`` contract, answered from a run's recorded transcripts, in order."""

    def __init__(self, recording: Recording, worktree: Path, cutter: Cutter | None = None):
        self.worktree = Path(worktree)
        self.cutter = cutter
        self.transcripts = list(recording.transcripts)
        self.by_path = {path: data for path, _raw, data in self.transcripts}
        self.position = 0
        self.served: list[str] = []
        self.settings = None
        self.totals: dict[str, float] = {"calls": 0}

    def _copy(self, path: str, raw: bytes) -> None:
        if self.cutter is not None:
            self.cutter.transcript()
        dest = self.worktree / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(raw)

    @property
    def unserved(self) -> list[str]:
        return [p for p, _r, _d in self.transcripts[self.position:]]

    def complete(self, messages: list[dict], purpose: str, json_mode: bool | None = None,
                 parsed_hook: Callable[[str], Any] | None = None) -> ChatResult:
        if self.cutter is not None:  # every request leaves a transcript
            self.cutter.transcript()
        sent = norm([dict(m) for m in messages])
        while self.position < len(self.transcripts):  # a failed attempt the original re-sent
            path, raw, data = self.transcripts[self.position]
            if "response" in data or data.get("messages") != sent:
                break
            self._copy(path, raw)
            self.position += 1
        step = f"LLM request {self.position + 1} ({purpose})"
        if self.position >= len(self.transcripts):
            raise DivergenceFound(Divergence(
                step, "the replay makes an LLM request the original did not make", "messages",
                original=None, replay=trim(sent[-1].get("content", "") if sent else "")))
        path, raw, data = self.transcripts[self.position]
        step = f"LLM request {path.rsplit('/', 1)[-1]}"
        if data.get("purpose") != purpose:
            raise DivergenceFound(Divergence(step, "the replay asks a different question here",
                                             "purpose", data.get("purpose"), purpose))
        recorded = data.get("messages") or []
        if recorded != sent:
            raise DivergenceFound(_message_divergence(step, recorded, sent))
        if "response" not in data:
            raise DivergenceFound(Divergence(step, "the recorded request has no answer",
                                             "response", data.get("error"), None))
        self._copy(path, raw)
        self.position += 1
        self.served.append(path)
        self.totals["calls"] += 1
        text = str(data["response"])
        if parsed_hook is not None:
            try:
                parsed: Any = parsed_hook(text)
            except (ValueError, TypeError, KeyError) as exc:
                self._check_parsed(path, {"error": str(exc)})
                raise
            self._check_parsed(path, parsed)
        return ChatResult(text=text, usage=dict(data.get("usage") or {}),
                          latency_s=float(data.get("latency_s") or 0.0), transcript=path,
                          attempts=len(data.get("attempts") or []) or 1,
                          model=str(data.get("model") or ""),
                          finish_reason=data.get("finish_reason"))

    def record_parsed(self, transcript: str | None, parsed: Any) -> None:
        if transcript:
            value = {"error": str(parsed)} if isinstance(parsed, BaseException) else parsed
            self._check_parsed(transcript, value)

    def _check_parsed(self, path: str, parsed: Any) -> None:
        data = self.by_path.get(path, {})
        if "parsed" in data and norm(parsed) != data["parsed"]:
            raise DivergenceFound(Divergence(
                f"LLM request {path.rsplit('/', 1)[-1]}",
                "the recorded answer no longer reads as the transcript says it did (the "
                "transcript's response or parsed result was edited, or the parser changed)",
                "parsed", original=trim(_dumps(data["parsed"])), replay=trim(_dumps(parsed))))


def _message_divergence(step: str, recorded: list, sent: list) -> Divergence:
    for k in range(max(len(recorded), len(sent))):
        a = recorded[k] if k < len(recorded) else None
        b = sent[k] if k < len(sent) else None
        if a == b:
            continue
        if a is None or b is None:
            return Divergence(step, f"the request has {len(sent)} messages, the recorded one "
                              f"{len(recorded)}", f"messages[{k}]",
                              trim(_content(a)), trim(_content(b)))
        ta, tb = _content(a), _content(b)
        at = first_difference(ta, tb)
        return Divergence(step, f"message {k} ({a.get('role')}) differs from the recorded request "
                          f"at character {at}", f"messages[{k}]", trim(ta, at), trim(tb, at))
    return Divergence(step, "the request differs from the recorded one", "messages")


def _content(message: Any) -> str:
    if message is None:
        return "(none)"
    return str(message.get("content", "")) if isinstance(message, Mapping) else str(message)


def _dumps(value: Any) -> str:
    return json.dumps(norm(value), ensure_ascii=False, sort_keys=True)
