"""Commit messages and trailers: the audit log's vocabulary, built and parsed here only.

Subjects read well in ``git log --oneline``; trailers make the same facts machine-readable
(``git log --format=%(trailers)``, ``arx log``). Trailer keys and values are public surface:
existing run branches are read, resumed and replayed with them, and replay compares subjects and
trailers of the commits it makes with the original's, so a builder's output never changes shape.
Every other module asks this one for a message, a key or a parsed fact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from arx.core.states import Level, Source, Verdict

Message = tuple[str, str, dict[str, str]]


class Trailer:
    """The trailer keys arx writes."""

    RUN = "Arx-Run"  # marks a commit as arx's; GitRepo.revert acts only on those
    LEVEL = "Arx-Level"  # a states.Level value
    ITERATION = "Arx-Iteration"
    METRIC = "Arx-Metric"
    DELTA = "Arx-Delta"
    BASELINE = "Arx-Baseline"
    HYPOTHESIS = "Arx-Hypothesis"
    CHANGES = "Arx-Changes"  # JSON
    STATUS = "Arx-Status"
    CYCLE = "Arx-Cycle"
    FREEZE = "Arx-Freeze"
    UNFREEZE = "Arx-Unfreeze"
    GUIDANCE = "Arx-Guidance"
    MECHANISM = "Arx-Mechanism"
    GATE = "Arx-Gate"  # "pass", "fail: <reason>" or "runtime: <error>"
    SOURCE = "Arx-Source"  # a states.Source value
    MARGIN = "Arx-Margin"  # a keep's win over the best, in units of the measured noise (sd)
    REVERTS = "Arx-Reverts"  # on a revert: the sha it undoes (written by GitRepo.revert)
    OUTCOME = "Arx-Outcome"  # the outcome gate's judgement: "kept: ..." or "no_benefit: ..."
    #: the held-out verification: "<delta> +- <se> over K held-out seeds (in search <delta>)",
    #: then ": not confirmed on held-out seeds" when the delta does not beat 0 by 2 se
    VERIFIED = "Arx-Verified"
    #: on the user's branch: the run whose tuned values `arx apply` committed (no Arx-Run:
    #: the commit is the user's, never reverted by arx)
    APPLIED = "Arx-Applied"
    #: on a keep of a target of several files (``[target] files``): the files it changes,
    #: comma-separated (a setting ``config.py:LR`` lives in config.py)
    FILES = "Arx-Files"


class Commit(Protocol):
    """What the parsers read of a commit (``GitRepo.log`` returns such records)."""

    sha: str
    subject: str
    trailers: Mapping[str, str]


# ---- formatting --------------------------------------------------------------------------------

def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt_value(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def fmt_metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"


def fmt_delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.6f}"


def change_items(changes: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> list[str]:
    """One ``name old->new`` (or ``name=new``) per changed parameter."""
    before = before or {}
    return [f"{name} {fmt_value(before[name])}->{fmt_value(value)}" if name in before
            else f"{name}={fmt_value(value)}" for name, value in changes.items()]


def describe_changes(changes: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> str:
    return ", ".join(change_items(changes, before)) or "(no change)"


# ---- builders ----------------------------------------------------------------------------------

def init_message(body: str) -> Message:
    """`arx init`: no ``Arx-Run`` (the commit belongs to the repository, not to a run)."""
    return "arx init", body, {Trailer.LEVEL: Level.INIT.value}


def baseline_message(run: str, metric: str, record: Any, managed: Mapping[str, Any]) -> Message:
    subject = f"baseline: {metric} {fmt_metric(record.metric)}"
    body = f"Run {run} starts from the unmodified target."
    if managed:
        body += " Budget set by arx: " + describe_changes(managed) + "."
    trailers = {
        Trailer.RUN: run, Trailer.LEVEL: Level.BASELINE.value, Trailer.ITERATION: "0",
        Trailer.METRIC: fmt_metric(record.metric),
    }
    return subject, body, trailers


def keep_message(run: str, metric: str, record: Any, recovered: bool = False) -> Message:
    before = record.get("best_before")
    changes = describe_changes(record.changes, record.get("before") or {})
    subject = (f"L1 #{record.iteration} keep {changes}: "
               f"{metric} {fmt_metric(before)}->{fmt_metric(record.metric)}")
    body = record.get("hypothesis") or ""
    if record.get("confirm_metrics"):
        body += "\n\n" + confirmed_text(record)
    if recovered:
        body += "\n\n(committed on resume: arx was stopped after recording this keep)"
    trailers = {
        Trailer.RUN: run, Trailer.LEVEL: Level.L1.value, Trailer.ITERATION: str(record.iteration),
        Trailer.STATUS: "keep", Trailer.METRIC: fmt_metric(record.metric),
        Trailer.DELTA: fmt_delta(record.get("delta")),
        Trailer.CHANGES: json.dumps(_jsonable(record.changes), sort_keys=True),
        Trailer.HYPOTHESIS: (record.get("hypothesis") or "").replace("\n", " ")[:500],
    }
    if record.get("margin_sd") is not None:  # runs with a measured noise only
        trailers[Trailer.MARGIN] = f"{record.get('margin_sd'):.2f}"
    if record.get("files"):  # a target of several files only
        trailers[Trailer.FILES] = ", ".join(record.get("files"))
    return subject, body.strip(), trailers


def _side(values: Any) -> str:
    shown = [fmt_metric(v) for v in values]
    known = [v for v in values if v is not None]
    mean = f" (mean {fmt_metric(sum(known) / len(known))})" if len(known) > 1 else ""
    return ", ".join(shown) + mean


def confirmed_text(record: Any) -> str:
    """What a confirmed decision compared: every value of each side, on which seeds, and the
    confirmation trainings that failed. Records from before ``best_first_metric`` existed give
    the extra values only, as they always did."""
    extra, best_extra = record.get("confirm_metrics") or [], record.get("best_confirm_metrics") or []
    n = 1 + len(extra)
    if "best_first_metric" not in record.data:
        return f"Confirmed over {n} seeds: {extra} vs best {best_extra}."
    seeds = [record.get("seed"), *(record.get("confirm_seeds") or [])]
    on = f" ({', '.join(str(s) for s in seeds)})" if None not in seeds and len(seeds) == n else ""
    text = (f"Confirmed over {n} seeds{on}: candidate {_side([record.metric, *extra])} vs best "
            f"{_side([record.get('best_first_metric'), *best_extra])}.")
    for failed in record.get("confirm_failed") or []:
        text += f"\nFailed: {failed}."
    return text


@dataclass(frozen=True)
class RunEnd:
    """The facts an end-of-run commit states."""

    counts: Mapping[str, int]  # trial status -> number of trial records
    best_metric: float | None
    best_iteration: int | None
    baseline_metric: float | None
    #: the held-out verification (a trace ``verify`` event), when the run has one
    verified: Mapping[str, Any] | None = None


def verified_text(event: Mapping[str, Any], in_search: bool = True) -> str:
    """The ``Arx-Verified`` value of a verification event: first the held-out delta and its
    standard error, then what it is over and (``in_search``) the in-search delta, then the
    verdict. The run's own lines say it in the same words (``verify.Verified``)."""
    k = len(event.get("seeds") or ())
    by_seeds = any(s is not None for s in event.get("seeds") or ())
    text = (f"{fmt_delta(event.get('delta'))} +- {fmt_metric(event.get('se'))} over {k} "
            f"held-out {'seeds' if by_seeds else 'repeats'}")
    if in_search:
        text += f" (in search {fmt_delta(event.get('in_search_delta'))})"
    return text if event.get("confirmed") else text + ": not confirmed on held-out seeds"


def verified_short(event: Mapping[str, Any] | None) -> str:
    """A table cell for a verification: ``-0.041200 +- 0.008100``, with ``not confirmed on
    held-out seeds`` after it when it does not confirm the gain; ``-`` for none."""
    if not event:
        return "-"
    text = f"{fmt_delta(event.get('delta'))} +- {fmt_metric(event.get('se'))}"
    return text if event.get("confirmed") else text + " (not confirmed on held-out seeds)"


def end_message(run: str, metric: str, end: RunEnd) -> Message:
    n = sum(end.counts.values())
    base = end.baseline_metric
    delta = end.best_metric - base if end.best_metric is not None and base is not None else None
    subject = (f"end of run {run}: {n} iterations, best {metric} "
               f"{fmt_metric(end.best_metric)} ({fmt_delta(delta)} vs baseline)")
    if end.verified is not None:
        v = end.verified
        subject = subject[:-1] + (f" in search; held-out {fmt_delta(v.get('delta'))} +- "
                                  f"{fmt_metric(v.get('se'))}"
                                  f"{'' if v.get('confirmed') else ', not confirmed'})")
    body = "Trials: " + ", ".join(f"{k} {v}" for k, v in sorted(end.counts.items()))
    if end.best_iteration is not None:
        body += f"\nBest config from iteration {end.best_iteration}."
    trailers = {
        Trailer.RUN: run, Trailer.LEVEL: Level.END.value, Trailer.ITERATION: str(n),
        Trailer.METRIC: fmt_metric(end.best_metric), Trailer.BASELINE: fmt_metric(base),
        Trailer.DELTA: fmt_delta(delta),
    }
    if end.verified is not None:
        trailers[Trailer.VERIFIED] = verified_text(end.verified)
        body += (f"\nHeld-out verification: {metric} {verified_text(end.verified)}; the delta "
                 "above is the one measured in the search (on the seeds that picked the best).")
    return subject, body, trailers


def verify_message(run: str, metric: str, event: Mapping[str, Any]) -> Message:
    """`arx verify`: a held-out verification of a finished run, asked for after it ended."""
    seeds = event.get("seeds") or ()
    subject = (f"verify {run}: held-out {metric} {fmt_delta(event.get('delta'))} +- "
               f"{fmt_metric(event.get('se'))} over {len(seeds)} "
               f"{'seeds' if any(x is not None for x in seeds) else 'repeats'}"
               f"{'' if event.get('confirmed') else ', not confirmed'}")
    body = (f"The baseline and the best (iteration {event.get('best_iteration')}) trained again "
            f"on seeds no decision of the run used: {metric} {verified_text(event)}.")
    return subject, body, {Trailer.RUN: run, Trailer.LEVEL: Level.VERIFY.value,
                           Trailer.ITERATION: str(event.get("iteration")),
                           Trailer.VERIFIED: verified_text(event)}


def level15_message(run: str, iteration: int, cycle: int, freeze: Iterable[str],
                    unfreeze: Iterable[str], guidance: str, decided_by: str,
                    note: str = "", evidence: Iterable[str] = ()) -> Message:
    """One Level 1.5 cycle; ``evidence``: a line per parameter frozen or unfrozen, saying what
    decided it (``level15.evidence_lines``)."""
    freeze, unfreeze = tuple(freeze), tuple(unfreeze)
    parts = []
    if freeze:
        parts.append("freeze " + ", ".join(freeze))
    if unfreeze:
        parts.append("unfreeze " + ", ".join(unfreeze))
    parts.append("guidance " + (f"'{guidance[:60]}...'" if len(guidance) > 60 else f"'{guidance}'"))
    subject = f"L1.5 cycle {cycle}: " + ", ".join(parts)
    body = f"Guidance: {guidance}\nDecided by: {decided_by}"
    if note:
        body += f" ({note})"
    evidence = list(evidence)
    if evidence:
        body += "\nEvidence:\n" + "\n".join(f"- {line}" for line in evidence)
    trailers = {Trailer.RUN: run, Trailer.LEVEL: Level.L15.value, Trailer.CYCLE: str(cycle),
                Trailer.FREEZE: ",".join(freeze) or "-",
                Trailer.UNFREEZE: ",".join(unfreeze) or "-",
                Trailer.GUIDANCE: guidance.replace("\n", " ")[:300],
                Trailer.ITERATION: str(iteration)}
    return subject, body, trailers


def gate_trailer(ok: bool, reason: str) -> str:
    return "pass" if ok else f"fail: {reason}"[:300]


def mechanism_message(run: str, name: str, domain: str, description: str, patches: str,
                      gate_summary: str, gate: str, source: str, cycle: int | None,
                      iteration: int | None) -> Message:
    """A Level-2 mechanism patched into the runner (``gate``: ``gate_trailer``)."""
    trailers = {Trailer.RUN: run, Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name,
                Trailer.GATE: gate, Trailer.SOURCE: source}
    if cycle is not None:
        trailers[Trailer.CYCLE] = str(cycle)
    if iteration is not None:
        trailers[Trailer.ITERATION] = str(iteration)
    body = (description + "\n\n" if description else "") + "Patches: " + patches + \
        f"\nGate: {gate_summary}"
    subject = f"L2 mechanism {name} ({domain or 'unspecified domain'})"
    return subject, body, trailers


def gate_revert_message(name: str, reason: str, gate: str, details: str) -> Message:
    """The revert of a mechanism the gate refused (right after its commit)."""
    return (f"Revert L2 mechanism {name}: gate failed ({reason})"[:200], details,
            {Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name, Trailer.GATE: gate})


def resumed_gate_revert_message(name: str, gate: str) -> Message:
    """The same revert, made on resume when arx was stopped between the commit and its revert."""
    return (f"Revert L2 mechanism {name}: gate failed ({gate[6:]})"[:200],
            "Reverted on resume: arx was stopped between the commit and its revert.",
            {Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name, Trailer.GATE: gate})


def runtime_revert_message(name: str, hook: str, error: str) -> Message:
    """The revert of an active mechanism whose hook failed during the run."""
    last = error.strip().splitlines()[-1][:200] if error.strip() else hook
    return (f"Revert L2 mechanism {name}: {hook} failed at run time", error[-3000:],
            {Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name,
             Trailer.GATE: f"runtime: {last}"})


def no_benefit_revert_message(name: str, iteration: int, reason: str,
                              details: str) -> Message:
    """The revert of an active mechanism the outcome gate judged of no measured benefit."""
    return (f"Revert L2 mechanism {name}: no measured benefit", details,
            {Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name,
             Trailer.ITERATION: str(iteration),
             Trailer.OUTCOME: f"{Verdict.NO_BENEFIT.value}: {reason}"[:300]})


def kept_message(run: str, name: str, iteration: int, reason: str, details: str) -> Message:
    """An active mechanism the outcome gate judged helpful: it stays (the trace goes with it)."""
    return (f"L2 mechanism {name} kept: measured benefit", details,
            {Trailer.RUN: run, Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name,
             Trailer.ITERATION: str(iteration),
             Trailer.OUTCOME: f"{Verdict.KEPT.value}: {reason}"[:300]})


def outcome_of(commit: Commit) -> Verdict | None:
    """The outcome gate's verdict a commit carries (``Arx-Outcome``), else None."""
    value = commit.trailers.get(Trailer.OUTCOME, "")
    for verdict in (Verdict.NO_BENEFIT, Verdict.KEPT):
        if value.startswith(verdict.value + ":"):
            return verdict
    return None


def target_message(run: str, changed: Mapping[str, tuple[Any, Any]]) -> Message:
    """`arx run --resume NAME --take-target`: the run's stored config takes arx.toml's [target]."""
    body = "\n".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
    return (f"resume: [target] from arx.toml ({', '.join(changed)})", body, {Trailer.RUN: run})


def manual_trace_message(run: str, name: str, verdict: str) -> Message:
    """The trace commit after `arx mechanism add` (the mechanism commit carries only the runner)."""
    return (f"trace: mechanism {name} added by hand ({verdict})", "",
            {Trailer.RUN: run, Trailer.LEVEL: Level.L2.value, Trailer.MECHANISM: name,
             Trailer.SOURCE: Source.MANUAL.value})


# ---- parsers -----------------------------------------------------------------------------------

def level_of(commit: Commit) -> Level | None:
    value = commit.trailers.get(Trailer.LEVEL)
    try:
        return Level(value) if value is not None else None
    except ValueError:
        return None


def trailer_int(commit: Commit, key: str) -> int | None:
    value = commit.trailers.get(key)
    return int(value) if value and value.isdigit() else None


def is_revert(commit: Commit) -> bool:
    return Trailer.REVERTS in commit.trailers or commit.subject.startswith("Revert")


def last_committed_iteration(log: Iterable[Commit]) -> int:
    """Highest Level-1 iteration committed as a keep (0 if none), reading ``log`` newest first
    back to the baseline."""
    for rec in log:
        level = level_of(rec)
        if level is Level.L1 and rec.trailers.get(Trailer.STATUS) == "keep":
            return int(rec.trailers.get(Trailer.ITERATION, 0))
        if level is Level.BASELINE:
            return 0
    return 0


def unreverted_gate_failure(head: Commit) -> tuple[str, str] | None:
    """(mechanism, gate trailer) when ``head`` is a mechanism commit that failed the gate and was
    not reverted yet (arx was stopped in between), else None."""
    gate = head.trailers.get(Trailer.GATE, "")
    if level_of(head) is Level.L2 and gate.startswith("fail") and not is_revert(head):
        return head.trailers.get(Trailer.MECHANISM, "?"), gate
    return None


def level15_facts(commit: Commit) -> dict[str, Any] | None:
    """A Level 1.5 commit's decision as a trace ``level15`` event has it (None: not one)."""
    if level_of(commit) is not Level.L15:
        return None
    t = commit.trailers

    def names(key: str) -> list[str]:
        return [n for n in (t.get(key) or "").split(",") if n and n != "-"]

    return {"iteration": trailer_int(commit, Trailer.ITERATION) or 0,
            "cycle": trailer_int(commit, Trailer.CYCLE) or 0, "freeze": names(Trailer.FREEZE),
            "unfreeze": names(Trailer.UNFREEZE), "frozen": None,
            "guidance": t.get(Trailer.GUIDANCE, ""), "source": "commit"}


def has_ended(log: Iterable[Commit], run: str | None = None) -> bool:
    """Whether ``log`` holds an end-of-run commit (of ``run``, when given)."""
    return any(level_of(c) is Level.END and (run is None or c.trailers.get(Trailer.RUN) == run)
               for c in log)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
