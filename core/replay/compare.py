"""Comparing a replay with the original, step by step, and saying where they first differ.

Each side is laid out as one **timeline**: the decision events of its trace (``trial`` records,
``level15`` and ``level2`` notes, ``resume`` events; ``start`` events only position things; a
branch made before ``resume`` events were written is compared without the replay's) with every commit
placed after the trace lines it carries. The two timelines are walked in step; the first step
that differs is the divergence. What is compared (``COMPARED`` says the same in words):

- trace records, field by field, on the decision fields below, and on the trial fields arx
  wrote later (``NEWER_TRIAL_FIELDS``: where a pruned trial stopped, its curve's number of
  points, confirmation failures and seeds, refused candidates) where the original has them.
  Not compared: timings and
  machine facts (``wall_s``, ``finished_at``, ``interval``, ``training_seconds``,
  ``total_seconds``, ``peak_*``, ``num_params_M``, ``data_fingerprint``, ``log_tail``), a
  Level-2 note's ``gate`` (step timings) and ``error`` (a traceback with paths), and any field
  not listed. Commit hashes (``commit``, ``revert``) are compared by position on the branch.
- every commit: its subject, its trailers (``Arx-Reverts`` by position), and its tree, every
  path except ``runs/<name>/trace.jsonl`` (compared as above), ``runs/<name>/llm-settings.json``
  (copied from the baseline), ``runs/<name>/provenance.jsonl`` (the machine and versions of each
  start and resume: a replay writes none, it checks them first) and ``runner/test_smoke.py``: the Level-2 gate renders that file
  from arx's own template (``runner_repo/test_smoke.py.tmpl``) after the patch is applied, so
  it records which arx ran the gate, not a decision of the run; what it is rendered with (the
  mechanism, its methods) is in the runner, the subject and the trailers, which are compared.
  An arx whose template changed (its import of ``runnerload`` moved when core/ was split into
  packages) still reproduces the branches of the one before. Commit bodies are not compared
  (gate timings, reverted hashes).
- the original's own integrity: the trace each commit carries must be the start of the trace at
  the branch tip (the trace is append-only), else the trace was rewritten after that commit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arx.core.loop.trials import TrialKey
from arx.core.replay.engine import first_difference, trim
from arx.core.replay.source import Divergence, ReplayGit, norm
from arx.core.repo.gittext import CommitRecord
from arx.core.repo.paths import SMOKE_PATH, RunFiles
from arx.core.states import Event

TRIAL_FIELDS = ("iteration", "kind", "seq", "status", "changes", "before", "config", "metric",
                "best_before", "delta", "hypothesis", "proposer", "focus", "candidates",
                "refusals", "reason", "returncode", "num_steps", "of", "seed",
                "confirm_metrics", "best_confirm_metrics", "proposal", "raw", "batch", "note",
                "transcripts", "usage", "attempt", "margin_sd", "reference")
LEVEL15_FIELDS = ("iteration", "cycle", "freeze", "unfreeze", "frozen", "guidance", "source",
                  "note", "transcripts")
LEVEL2_FIELDS = ("iteration", "cycle", "mechanism", "domain", "source", "verdict", "reason",
                 "reverted", "commit", "revert", "hook", "transcripts", "patch", "at")
#: trial fields arx wrote later (pruning, learning curves, confirmation outcomes, refused
#: candidates): compared where the original record has them (``curve_points``: where it has a
#: ``curve``, the number of its points); a record made before a field existed is not compared
#: on it, so old branches still replay
NEWER_TRIAL_FIELDS = ("pruned_at", "curve_points", "curve_unit", "dropped", "overruled",
                      "confirm_failed", "confirm_seeds", "best_first_metric")
RESUME_FIELDS = ("iteration", "iterations", "changed", "at", "interrupted", "committed", "reverted")
STEP_ASIDE_FIELDS = ("iteration", "cycle", "reason", "window")
_FIELDS = {Event.TRIAL: TRIAL_FIELDS, Event.LEVEL15: LEVEL15_FIELDS, Event.LEVEL2: LEVEL2_FIELDS,
           Event.RESUME: RESUME_FIELDS, Event.STEP_ASIDE: STEP_ASIDE_FIELDS}
#: the events a timeline holds
EVENT_KINDS = tuple(_FIELDS)
#: defaults the engine leaves out of a record (absent and default compare equal)
_DEFAULTS = {"seq": 0}

COMPARED = (
    "trace records field by field on the decision fields (trial: " + ", ".join(TRIAL_FIELDS)
    + "; and where the original has them: " + ", ".join(NEWER_TRIAL_FIELDS)
    + "; level15: " + ", ".join(LEVEL15_FIELDS) + "; level2: " + ", ".join(LEVEL2_FIELDS)
    + "; resume: " + ", ".join(RESUME_FIELDS)
    + "; step_aside: " + ", ".join(STEP_ASIDE_FIELDS)
    + ", with the reason's first line and commit hashes by position); every commit's subject, "
    "trailers (Arx-Reverts by position) and tree, all paths except runs/<name>/trace.jsonl, "
    "runs/<name>/llm-settings.json, runs/<name>/provenance.jsonl (this machine's versions) "
    f"and {SMOKE_PATH} (rendered from arx's own template); "
    "every LLM request's purpose and messages, and the parsed "
    "answer; the trace at each original commit is a prefix of the tip's. Not compared: timings "
    "(wall_s, finished_at, interval, gate step times, training_seconds, total_seconds), machine "
    "facts (peak memory, data_fingerprint, log_tail), commit bodies and commit hashes")


@dataclass(frozen=True)
class Step:
    label: str
    event: Mapping[str, Any] | None = None
    commit: CommitRecord | None = None
    position: int = 0  # the commit's index on its side
    trace_count: int | None = None  # lines of the trace this commit carries


def event_label(e: Mapping[str, Any]) -> str:
    kind = e.get("event")
    if kind == Event.TRIAL:
        return TrialKey(int(e.get("iteration", -1)), e.get("kind", "trial"),
                        int(e.get("seq", 0) or 0)).describe()
    if kind == Event.LEVEL15:
        return f"L1.5 cycle {e.get('cycle')} (after iteration {e.get('iteration')})"
    if kind == Event.RESUME:
        return f"resume after iteration {e.get('iteration')} (to iteration {e.get('iterations')})"
    if kind == Event.STEP_ASIDE:
        return f"L2 cycle {e.get('cycle')}: steps aside (at iteration {e.get('iteration')})"
    if e.get("cycle") is None:
        return f"L2 by hand: mechanism {e.get('mechanism')}"
    return f"L2 cycle {e.get('cycle')}: mechanism {e.get('mechanism')}"


def timeline(events: Sequence[Mapping[str, Any]], commits: Sequence[CommitRecord],
             counts: Sequence[int | None], kinds: Collection[str] = tuple(_FIELDS)) -> list[Step]:
    """Decision events (of ``kinds``) with each commit placed after the trace lines it
    carries."""
    steps: list[Step] = []
    j = 0
    for k, (commit, count) in enumerate(zip(commits, counts)):
        upto = j if count is None else min(count, len(events))
        while j < upto:
            if events[j].get("event") in kinds:
                steps.append(Step(event_label(events[j]), event=events[j]))
            j += 1
        label = f"commit {k + 1}/{len(commits)} {commit.sha[:8]} {commit.subject[:72]!r}"
        steps.append(Step(label, commit=commit, position=k, trace_count=count))
    for e in events[j:]:
        if e.get("event") in kinds:
            steps.append(Step(event_label(e), event=e))
    return steps


class Side:
    """One side of the comparison: its commits, its trace and its timeline."""

    def __init__(self, git: ReplayGit, commits: Sequence[CommitRecord],
                 events: Sequence[Mapping[str, Any]], trace_rel: str,
                 kinds: Collection[str] = tuple(_FIELDS)):
        self.commits = list(commits)
        self.index = {c.sha: k for k, c in enumerate(self.commits)}
        self.traces = [git.blob(c.sha, trace_rel) for c in self.commits]
        counts = [None if t is None else len(t.splitlines()) for t in self.traces]
        self.steps = timeline(events, self.commits, counts, kinds)

    def where(self, sha: Any) -> Any:
        """A commit hash as its position on this side ("#k"), else unchanged."""
        return f"commit #{self.index[sha] + 1}" if isinstance(sha, str) and sha in self.index \
            else sha


def project(e: Mapping[str, Any], side: Side | None) -> dict[str, Any]:
    """The compared fields of event ``e``; commit hashes as positions on ``side`` (when given)."""
    where = side.where if side is not None else (lambda sha: sha)
    out = {}
    for name in _FIELDS[e.get("event")]:
        value = e.get(name, _DEFAULTS.get(name))
        if e.get("event") == Event.LEVEL2 and name in ("commit", "revert"):
            value = where(value)
        elif name == "at" and isinstance(value, Mapping):
            value = {**value, "head": where(value.get("head"))}
        elif e.get("event") == Event.LEVEL2 and name == "reason" and isinstance(value, str):
            value = value.strip().split("\n", 1)[0]
        out[name] = norm(value)
    if e.get("event") == Event.TRIAL:
        for name in NEWER_TRIAL_FIELDS:
            value = _newer(e, name)
            if value is not None:
                out[name] = norm(value)
    return out


def _newer(e: Mapping[str, Any], name: str) -> Any:
    """A newer trial field's value (``curve_points``: the curve's length), None if absent."""
    if name == "curve_points":
        return len(e["curve"]) if isinstance(e.get("curve"), list) else None
    return e.get(name)


def field_difference(o: Mapping[str, Any], r: Mapping[str, Any], oside: Side | None = None,
                     rside: Side | None = None) -> tuple[str, Any, Any] | None:
    """The first compared field in which the replay's event ``r`` differs from the original's
    ``o``, as (field, original, replay); None when they agree. A newer trial field is compared
    when the original has it (the replay lacking it is a difference)."""
    a, b = project(o, oside), project(r, rside)
    for key in a:
        if a[key] != b.get(key):
            return key, a[key], b.get(key)
    return None


def compare(git: ReplayGit, name: str, original: Side, replay: Side, tip_trace: bytes,
            raised: Divergence | None) -> tuple[Divergence | None, int]:
    """The first divergence (None: identical) and the number of steps found equal."""
    files = RunFiles(name)
    excluded = {files.trace_rel, files.llm_settings_rel, files.provenance_rel, SMOKE_PATH}
    for n, o in enumerate(original.steps):
        if n >= len(replay.steps):
            return _at(raised or _missing(git, o), n + 1), n
        r = replay.steps[n]
        found = _compare_step(git, o, r, original, replay, excluded, tip_trace)
        if found is not None:
            return _at(found, n + 1), n
    if raised is not None:
        return _at(raised, len(original.steps) + 1), len(original.steps)
    if len(replay.steps) > len(original.steps):
        extra = replay.steps[len(original.steps)]
        return _at(Divergence(extra.label, "the replay made a step the original does not have",
                              replay=extra.label), len(original.steps) + 1), len(original.steps)
    return None, len(original.steps)


def _missing(git: ReplayGit, o: Step) -> Divergence:
    if o.commit is None:
        return Divergence(o.label, "the original has this step; the replay ended before it",
                          "step", original=o.label)
    paths = git.changed_paths(o.commit.sha + "^", o.commit.sha)
    return Divergence(o.label, "the original has this commit; the replay made no such commit"
                      + (f" (it changes {', '.join(paths[:4])})" if paths else ""), "commit",
                      original=o.commit.subject)


def _at(d: Divergence, n: int) -> Divergence:
    return Divergence(d.step, d.what, d.field, d.original, d.replay, d.sides, n)


def _compare_step(git: ReplayGit, o: Step, r: Step, oside: Side, rside: Side,
                  excluded: set[str], tip_trace: bytes) -> Divergence | None:
    if (o.commit is None) != (r.commit is None) or (
            o.event is not None and o.event.get("event") != r.event.get("event")):
        return Divergence(o.label, "the replay has another step here", "step",
                          original=o.label, replay=r.label)
    if o.event is not None:
        found = field_difference(o.event, r.event, oside, rside)
        if found is not None:
            key, a, b = found
            return Divergence(o.label, f"{key} differs", key, a, b)
        return None
    return _compare_commit(git, o, r, oside, rside, excluded, tip_trace)


def _compare_commit(git: ReplayGit, o: Step, r: Step, oside: Side, rside: Side,
                    excluded: set[str], tip_trace: bytes) -> Divergence | None:
    oc, rc = o.commit, r.commit
    committed = oside.traces[o.position]
    if committed is not None and not tip_trace.startswith(committed):
        at = first_difference(committed.decode(errors="replace"),
                              tip_trace.decode(errors="replace"))
        line = committed[:at].count(b"\n") + 1
        a, b = _line(committed, line), _line(tip_trace, line)
        return Divergence(o.label, f"the trace this commit carries is not the start of the "
                          f"branch tip's: line {line} was changed after it was committed",
                          "trace", trim(a, first_difference(a, b)), trim(b, first_difference(a, b)),
                          sides=("at this commit", "at the branch tip"))
    if oc.subject != rc.subject:
        return Divergence(o.label, "the commit subject differs", "subject", oc.subject, rc.subject)
    ot, rt = _trailers(oc, oside), _trailers(rc, rside)
    for key in sorted(set(ot) | set(rt)):
        if ot.get(key) != rt.get(key):
            return Divergence(o.label, f"trailer {key} differs", key, ot.get(key), rt.get(key))
    paths = [p for p in git.changed_paths(oc.sha, rc.sha) if p not in excluded]
    if paths:
        a = (git.blob(oc.sha, paths[0]) or b"").decode(errors="replace")
        b = (git.blob(rc.sha, paths[0]) or b"").decode(errors="replace")
        at = first_difference(a, b)
        line = a[:at].count("\n") + 1
        more = f" (and {len(paths) - 1} more: {', '.join(paths[1:4])})" if len(paths) > 1 else ""
        return Divergence(o.label, f"the commit's tree differs: {paths[0]} line {line}{more}",
                          f"tree:{paths[0]}", trim(_line(a, line)), trim(_line(b, line)))
    return None


def _trailers(c: CommitRecord, side: Side) -> dict[str, str]:
    return {k: (side.where(v) if k == "Arx-Reverts" else v) for k, v in c.trailers.items()}


def _line(text: bytes | str, n: int) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = text.split("\n")
    return lines[n - 1] if 0 < n <= len(lines) else "(no such line)"
