"""Level 2: write a new search mechanism into the runner, gated, committed, revertible.

``research`` runs the paper's four-round LLM session (Explore, Critique, Specify, Generate) and
returns a ``Mechanism`` (structured patches); offline, ``next_from_catalog`` draws the built-in
mechanisms in turn (from rules 3 in the order the trace calls for, ``catalog_order``).
``install`` is the one path every mechanism takes, generated, built-in or hand-written (`arx
mechanism add`): patch with libcst (a refusal writes nothing), run the gate in a scratch
directory, commit the patched runner with its smoke test, and ``git revert`` it with the gate's
reasons when the gate fails. ``revert_runtime`` undoes an active mechanism whose hook
raised, hung or otherwise faulted in its worker during a run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.codemods.untrusted import parse_in_child
from arx.core.errors import ArxError, PatchError
from arx.core.levels import outcome
from arx.core.levels.blame import patched_methods
from arx.core.levels.gate import run_gate
from arx.core.levels.mechanism import Mechanism, apply_patches, catalog, new_method_names
from arx.core.levels.mechanism_state import level2_note
from arx.core.llm.jsonextract import extract_json_object
from arx.core.llm.settings import secret_names_in
from arx.core.loop.resume import resume_point
from arx.core.loop.trace import Trace, trace_events
from arx.core.repo import commits
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import RUNNER_PATH, SMOKE_PATH
from arx.core.repo.workspace import Workspace
from arx.core.states import Event, Source, TrialKind, TrialState, Verdict

ROUNDS = ("explore", "critique", "specify", "generate")
#: the most code a mechanism may bring (``[levels] max_mechanism_kb``, 64)
MAX_MECHANISM_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    """What happened to one mechanism: passed the gate (active), failed it (committed, then
    reverted), or refused (the patch could not be applied; nothing written)."""

    mechanism: str
    domain: str
    source: str
    verdict: Verdict
    reason: str
    commit: str | None = None
    revert: str | None = None
    gate: Mapping[str, Any] = field(default_factory=dict)
    #: the Runner methods its patches add, replace or extend (``blame.patched_methods``)
    methods: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.verdict is Verdict.PASS

    def extra(self) -> dict[str, Any]:
        """Fields of its ``level2`` event beyond the common ones: ``methods`` when committed."""
        return {"methods": list(self.methods)} if self.commit else {}


def install(tree: GitRepo, mech: Mechanism, *, run: str, source: str, cycle: int | None,
            iteration: int | None, gate_timeout_s: float = 60.0, drop_env: Sequence[str] = (),
            max_bytes: int = MAX_MECHANISM_BYTES, rules: int = 1) -> Outcome:
    """Patch, gate, commit; revert on a failed gate. Never leaves the tree half-written.
    ``drop_env``: the run's LLM key names, withheld from the gate's smoke test; ``max_bytes``:
    the most code (UTF-8, all patches) a mechanism may bring, refused before the gate;
    ``rules``: the run's, which the gate's smoke drive runs the runner under."""
    path = tree.root / RUNNER_PATH
    current = path.read_text()
    size = sum(len(p.code.encode("utf-8", "replace")) for p in mech.patches)
    if size > max_bytes:
        return Outcome(mech.name, mech.domain, source, Verdict.REFUSED,
                       f"patch refused: the mechanism's code is {size / 1024:.1f} kB, more than "
                       f"{max_bytes / 1024:g} kB ([levels] max_mechanism_kb)")
    try:
        parse_in_child([p.code for p in mech.patches])  # a parser crash is a refusal here
        patched = apply_patches(current, mech.patches)
        methods = tuple(patched_methods(mech.patches))
    except PatchError as exc:
        return Outcome(mech.name, mech.domain, source, Verdict.REFUSED,
                       f"patch refused: {exc.message}")
    has_class = any(p.kind == "new_helper_class" for p in mech.patches)
    with tempfile.TemporaryDirectory(prefix="arx-gate-") as tmp:
        result = run_gate(patched, Path(tmp), mechanism=mech.name if has_class else None,
                          methods=new_method_names(mech.patches), timeout_s=gate_timeout_s,
                          drop_env=drop_env, rules=rules)
        smoke = Path(tmp) / SMOKE_PATH
        path.write_text(patched)
        if smoke.exists():
            shutil.copy(smoke, tree.root / SMOKE_PATH)
    gate = commits.gate_trailer(result.ok, result.reason)
    message = commits.mechanism_message(
        run, mech.name, mech.domain, mech.description,
        ", ".join(p.describe() for p in mech.patches), result.summary(), gate, source, cycle,
        iteration)
    # only the runner: a revert of this commit must not take the run's trace or transcripts
    # with it (they go with the next commit)
    sha = tree.commit([RUNNER_PATH, SMOKE_PATH], *message)
    revert = None
    if not result.ok:
        revert = tree.revert(sha, *commits.gate_revert_message(mech.name, result.reason, gate,
                                                               result.describe()))
    return Outcome(mech.name, mech.domain, source, Verdict.PASS if result.ok else Verdict.FAIL,
                   "" if result.ok else result.reason, sha, revert, result.to_json(), methods)


def revert_runtime(tree: GitRepo, sha: str, mechanism: str, hook: str, error: str) -> str:
    """Undo an active mechanism whose hook failed during the run; returns the revert commit."""
    return tree.revert(sha, *commits.runtime_revert_message(mechanism, hook, error))


def next_from_catalog(tried: Sequence[str],
                      records: Sequence[Mapping[str, Any]] | None = None,
                      active: Sequence[str] = (), rules: int = 1) -> Mechanism | None:
    """The next built-in mechanism not tried yet on this run (None when all were): in file-name
    order, or with ``records`` (runs with rules >= 3) in the order the trace calls for
    (``catalog_order``); each in the version of the run's ``rules`` (``catalog``)."""
    mechanisms = catalog(rules)
    if records is not None:
        rank = {name: k for k, name in enumerate(catalog_order(records, active))}
        mechanisms.sort(key=lambda m: rank.get(m.name, len(rank)))
    for mech in mechanisms:
        if mech.name not in tried:
            return mech
    return None


#: the trace's symptoms and the catalog mechanism that treats each, most urgent first; without
#: a symptom, ``CATALOG_DEFAULT`` (exploit what paid off first)
CATALOG_SYMPTOMS = (("repeats", "TabuList"), ("uneven", "OrthogonalExploration"))
CATALOG_DEFAULT = ("ParameterBandit", "OrthogonalExploration", "TabuList")


def symptoms(records: Sequence[Mapping[str, Any]], active: Sequence[str]) -> dict[str, bool]:
    """What the trace shows: ``repeats``, configurations run again (at least 2, or a tenth of
    the trials) or invalid proposals; ``uneven``, an active parameter changed less than a third
    as often as the average (never, at first)."""
    trials = [r for r in records if r.get("kind", TrialKind.TRIAL) == TrialKind.TRIAL]
    wasted = len(outcome.repeated(records)) + sum(
        1 for r in trials if r.get("status") == TrialState.INVALID)
    counts = {n: 0 for n in active}
    for r in trials:
        for name in r.get("changes") or {}:
            if name in counts:
                counts[name] += 1
    mean = sum(counts.values()) / len(counts) if counts else 0.0
    return {"repeats": wasted >= max(2, len(trials) / 10),
            "uneven": bool(counts) and mean > 0 and min(counts.values()) * 3 < mean}


def catalog_order(records: Sequence[Mapping[str, Any]], active: Sequence[str]) -> list[str]:
    """The built-in mechanisms' names in the order this trace calls for: the treatment of each
    symptom it shows (``symptoms``, ``CATALOG_SYMPTOMS``), then ``CATALOG_DEFAULT``."""
    shown = symptoms(records, active)
    first = [name for symptom, name in CATALOG_SYMPTOMS if shown[symptom]]
    return list(dict.fromkeys([*first, *CATALOG_DEFAULT]))


# ---- the four-round LLM session ------------------------------------------------------------

SYSTEM = (
    "You are a research engineer improving the search loop of an autoresearch system: an inner "
    "loop proposes changes to a training script's constants, trains, and keeps improvements. "
    "The loop's policy is the Python module runner.py shown to you; you design mechanisms that "
    "change how it explores."
)

CONTRACT = """Mechanisms are plain classes with any of these optional hooks, appended to
Runner.mechanisms in Runner.__init__:
  extend_prompt(self, ctx, lines) -> lines      (LLM prompt lines)
  focus(self, ctx) -> list of parameter names   (which parameters to explore next)
  filter_candidates(self, ctx, candidates) -> candidates  (dicts {"changes", "hypothesis"};
                                                 never return an empty list)
  observe(self, ctx, record)                     (every finished trial: record["changes"],
                                                 record["status"], record["metric"], record["delta"])
ctx is a dict with keys: iteration, iterations, active (names), frozen, params (list of dicts with
name, value, describe), best_config, best_metric, baseline_metric, direction ("min"/"max"),
history (list of trial records), guidance. Runner.n_candidates is how many candidates are asked.
Allowed imports: math, random, statistics, collections, itertools, functools, dataclasses, json,
re, typing, heapq, bisect, copy, enum. No file, OS, network or dynamic-code access."""

GENERATE_FORMAT = """Return ONLY one JSON object, no prose:
{"name": "CamelCaseName", "domain": "field it comes from", "description": "one sentence",
 "patches": [
   {"kind": "new_helper_class", "name": "CamelCaseName", "target": null,
    "code": "class CamelCaseName:\\n    ..."},
   {"kind": "modify_init", "name": "CamelCaseName", "target": null,
    "code": "self.mechanisms.append(CamelCaseName())"}
 ]}
Patch kinds: new_helper_class (one class named like the mechanism), new_method (one def added to
Runner), replace_method (one def replacing the Runner method named in target), modify_init
(statements appended to Runner.__init__). Every patch's "name" is the mechanism's name."""


@dataclass(frozen=True)
class Session:
    mechanism: Mechanism | None
    transcripts: tuple[str, ...]
    error: str = ""
    selected: str = ""
    #: the conversation so far, continued by a repair round
    messages: tuple = ()


def research(complete: Callable[[list, str], Any], runner_source: str, trace_summary: str,
             cycle: int, tried: Sequence[str], repair: str | None = None,
             history: list | None = None) -> Session:
    """The four rounds, one LLM call each; ``complete(messages, purpose)`` returns a ChatResult.

    With ``repair`` (the gate's reasons for the last attempt) only a Generate round is asked,
    continuing ``history``."""
    transcripts: list[str] = []
    messages = list(history or [{"role": "system", "content": SYSTEM}])

    def ask(text: str, purpose: str) -> str:
        messages.append({"role": "user", "content": text})
        result = complete(list(messages), f"l2-cycle{cycle}-{purpose}")
        if result.transcript:
            transcripts.append(result.transcript)
        messages.append({"role": "assistant", "content": result.text})
        return result.text

    if repair is None:
        ask(f"The current runner.py:\n```python\n{runner_source}\n```\n\n{CONTRACT}\n\n"
            f"The search so far:\n{trace_summary}\n\nMechanisms already tried on this run: "
            f"{', '.join(tried) or 'none'}.\n\nEXPLORE: propose 3-4 candidate mechanisms from any "
            "field (combinatorial optimization, multi-armed bandits, Bayesian optimization, "
            "design of experiments, ...). For each: the hook it targets, what failure of the "
            "current search it addresses, and its risk.", "explore")
        critique = ask("CRITIQUE: for each candidate give its failure modes, the trap it could "
                       "fall into, the evidence for or against it in the trace, and a score = "
                       "impact * feasibility / complexity. End with one line 'Selected: <name>'.",
                       "critique")
        ask("SPECIFY the selected mechanism: class name (CamelCase), domain, patch kinds, "
            "target hooks, signatures, the state it keeps, and how it is integrated in "
            "Runner.__init__.", "specify")
        text = ask("GENERATE the code.\n" + GENERATE_FORMAT, "generate")
        selected = _selected(critique)
    else:
        text = ask("The validation gate refused that code:\n" + repair + "\n\nFix it. " +
                   GENERATE_FORMAT, "repair")
        selected = ""
    try:
        mech = Mechanism.from_json(extract_json_object(text))
    except (ValueError, ArxError) as exc:
        reason = exc.message if isinstance(exc, ArxError) else str(exc)
        return Session(None, tuple(transcripts), f"generate answer unusable: {reason}", selected,
                       tuple(messages))
    return Session(mech, tuple(transcripts), "", selected, tuple(messages))


def _selected(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip().lower().startswith("selected:"):
            return line.split(":", 1)[1].strip()
    return ""


def trace_summary(records: Sequence[Mapping[str, Any]], metric: str, limit: int = 20) -> str:
    trials = [r for r in records if r.get("kind", "trial") == TrialKind.TRIAL]
    keeps = sum(1 for r in trials if r.get("status") == TrialState.KEEP)
    lines = [f"{len(trials)} trials, {keeps} kept."]
    for r in trials[-limit:]:
        metric_text = f"{r['metric']:.6g}" if isinstance(r.get("metric"), (int, float)) else "-"
        lines.append(f"#{r['iteration']} {r.get('changes')} -> {metric} {metric_text} "
                     f"[{r.get('status')}]")
    return "\n".join(lines)


def add_by_hand(ws: Workspace, mech: Mechanism, gate_timeout_s: float = 60.0,
                max_bytes: int = MAX_MECHANISM_BYTES) -> Outcome:
    """`arx mechanism add`: the same patch, gate, commit and revert path, on a run's branch.
    The patch is stored on the branch (``runs/<name>/mechanisms/NN-<Name>.json``) and its
    ``level2`` note says where (``patch``) and where the run stood (``at``), so replay can
    apply it again at the same point."""
    trace = Trace(ws.path / ws.trace_rel)
    at = resume_point(trace, ws)
    outcome = install(ws.tree, mech, run=ws.name, source=Source.MANUAL.value, cycle=None,
                      iteration=None, gate_timeout_s=gate_timeout_s,
                      drop_env=secret_names_in(ws.path), max_bytes=max_bytes,
                      rules=ws.config.rules)
    # written once install returned: an arx killed on the way leaves no stray file for the
    # next commit to pick up; stored even when refused (what was tried, for replay)
    store = ws.path / ws.mechanisms_rel
    store.mkdir(parents=True, exist_ok=True)
    patch = f"{ws.mechanisms_rel}/{len(list(store.glob('*.json'))) + 1:02d}-{mech.name}.json"
    (ws.path / patch).write_text(json.dumps(mech.to_json(), indent=2, sort_keys=True) + "\n")
    last = max((int(r.iteration) for r in trace.records()), default=0)
    trace.note(Event.LEVEL2, level2_note(
        ws.name, None, last, mech.name, mech.domain, Source.MANUAL.value, outcome.verdict,
        outcome.reason, commit=outcome.commit, revert=outcome.revert, gate=dict(outcome.gate),
        patch=patch, at=at, **outcome.extra()))
    ws.tree.commit(ws.run_files(), *commits.manual_trace_message(ws.name, mech.name,
                                                                 outcome.verdict.value))
    return outcome


def notes_on_branch(repo: GitRepo, name: str) -> list[dict[str, Any]]:
    """The run's Level-2 outcomes as recorded in its trace."""
    return [e for e in trace_events(repo, name) if e.get("event") == Event.LEVEL2]
