"""The outer loops' schedule: Level 1.5 every K iterations (groups B, C, D) and Level 2 every M
Level-1.5 cycles (groups C, D), run between Level-1 iterations, and (rules >= 3) the outcome
gate, which judges each Level-2 mechanism once its window has run (``outcome``). Each decision
is a commit on the run branch.

``OuterLoop`` is handed the run's places (``Workspace``), its trace and settings, an optional LLM
and a line sink; it reads a ``SearchView`` of the inner loop and returns what changed (an
``OuterResult``: the new ``SearchState``, and whether the runner was patched or reverted). It
never reads or writes the engine: the engine applies the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arx.core.config import RunConfig
from arx.core.errors import RunError
from arx.core.levels import level2, level15, outcome
from arx.core.levels.blame import observed
from arx.core.levels.level15 import SearchState
from arx.core.levels.mechanism_state import MechanismRecord, active_mechanisms, level2_note
from arx.core.levels.worker import MechanismFault
from arx.core.loop.resume import REVERTED_ON_RESUME
from arx.core.loop.trace import Trace
from arx.core.repo import commits
from arx.core.repo.paths import RUNNER_PATH, STATE_PATH
from arx.core.repo.workspace import Workspace
from arx.core.states import Event, Group, Level, Source, Verdict


@dataclass(frozen=True)
class SearchView:
    """What the outer levels read of the inner loop."""

    records: Sequence[Mapping[str, Any]]  # finished trial records (trace dicts), oldest first
    active: tuple[str, ...]  # tunable parameters, frozen ones included
    best_iteration: int


@dataclass(frozen=True)
class OuterResult:
    state: SearchState
    runner_changed: bool = False


class OuterLoop:
    """Decides when the outer levels run, runs them, and commits their decisions."""

    def __init__(self, ws: Workspace, trace: Trace, config: RunConfig, llm: Any = None,
                 say: Callable[[str], None] = lambda _line: None,
                 secret_env: Sequence[str] = (), k15: int = 3, min_active: int = 2):
        self.ws = ws
        self.trace = trace
        self.config = config
        self.group = Group.of(config.group)
        self.llm = llm
        self.say = say
        self.secret_env = tuple(secret_env)  # withheld from the gate's smoke test
        self.k15 = k15
        self.min_active = min_active
        self.state_path = ws.path / STATE_PATH
        self.state = SearchState.load(self.state_path)
        #: a Level-2 cycle a killed arx had started but not committed (set by ``recover``)
        self.pending_level2: int | None = None

    def recover(self) -> SearchState:
        """Undo what a kill mid-cycle left: a state file or runner written but not committed
        (the cycle runs again), a half-done revert, a gate-failed mechanism not yet reverted."""
        tree = self.ws.tree
        tree.abort_revert()
        tree.restore([RUNNER_PATH])
        head = tree.log("HEAD", max_count=1)[0]
        failed = commits.unreverted_gate_failure(head)
        if failed is not None:
            mech, gate = failed
            tree.revert(head.sha, *commits.resumed_gate_revert_message(mech, gate))
            self.trace.note(Event.LEVEL2, level2_note(
                self.ws.name, commits.trailer_int(head, commits.Trailer.CYCLE),
                commits.trailer_int(head, commits.Trailer.ITERATION), mech, None,
                head.trailers.get(commits.Trailer.SOURCE), Verdict.FAIL, gate[6:],
                commit=head.sha, note=REVERTED_ON_RESUME))
        if commits.outcome_of(head) is Verdict.NO_BENEFIT and not any(
                n.get("revert") == head.sha for n in self.trace.notes(Event.LEVEL2)):
            self._note_judged_revert(head)
        if tree.dirty_paths([STATE_PATH]):
            if tree.show("HEAD", STATE_PATH) is None:
                self.state_path.unlink()
            else:
                tree.restore([STATE_PATH])
        self.state = SearchState.load(self.state_path)
        # killed during a Level-2 cycle before anything of it was committed: run it again
        cycle = self.state.cycle
        if self.group.has_level2 and cycle and cycle % self.config.m == 0 \
                and commits.trailer_int(head, commits.Trailer.CYCLE) == cycle \
                and commits.level_of(head) is Level.L15:
            self.pending_level2 = cycle
        return self.state

    def _note_judged_revert(self, head: Any) -> None:
        """A kill between the outcome gate's revert and its trace event: write the event."""
        undone = head.trailers.get(commits.Trailer.REVERTS)
        mech = next((m for m in self.active() if m.commit == undone), None)
        if mech is None:
            return
        evidence = head.trailers.get(commits.Trailer.OUTCOME, "").split(": ", 1)[-1]
        self.trace.note(Event.LEVEL2, level2_note(
            self.ws.name, mech.cycle, commits.trailer_int(head, commits.Trailer.ITERATION),
            mech.name, mech.domain, mech.source, Verdict.NO_BENEFIT,
            f"no measured benefit: {evidence}", commit=mech.commit, revert=head.sha,
            reverted=True, note=REVERTED_ON_RESUME))

    def before_iteration(self, i: int, view: SearchView) -> OuterResult:
        """Run every outer cycle due before iteration ``i`` that has not run yet."""
        changed = False
        if self.pending_level2 is not None:
            cycle, self.pending_level2 = self.pending_level2, None
            changed |= self.level2(cycle, cycle * self.config.k, view)
        if self.group.has_level2 and self.config.rules >= 3:  # the outcome gate, from rules 3
            changed |= self.judge(i - 1, view)
        if self.group.has_level15 and i > 1:
            k = self.config.k
            due = (i - 1) // k
            while self.state.cycle < due:
                self.level15((self.state.cycle + 1) * k, view)
                if self.group.has_level2 and self.state.cycle % self.config.m == 0:
                    changed |= self.level2(self.state.cycle, self.state.cycle * k, view)
        return OuterResult(self.state, changed)

    def finish(self, last: int, view: SearchView) -> None:
        """(Rules >= 7) At the run's end: judge the mechanisms whose window ended with its
        last iteration ``last`` (no iteration after it asks)."""
        if self.group.has_level2 and self.config.rules >= 7:
            self.judge(last, view)

    # ---- Level 2 -----------------------------------------------------------------------------
    def active(self) -> list[MechanismRecord]:
        """Mechanisms active on this run, oldest activation first."""
        return active_mechanisms(self.trace.notes(Event.LEVEL2))

    def level2(self, cycle: int, iteration: int, view: SearchView) -> bool:
        """One Level-2 cycle; returns whether the runner changed."""
        notes = self.trace.notes(Event.LEVEL2)
        if any(n.get("cycle") == cycle for n in [*notes, *self.trace.notes(Event.STEP_ASIDE)]):
            return False  # already done before a resume
        if self.config.rules >= 4 and self.config.step_aside and self.config.judge_window > 0:
            recent = outcome.calls_for_level2(view.records, iteration, self.config.stall_window,
                                              self.config.target.direction)
            # rules 7: nor, after a stall, when the outcome gate could not judge its mechanism
            # before the run ends
            late = (self.config.judge_window, self.config.iterations) \
                if recent.stalled and self.config.rules >= 7 and outcome.too_late(
                    iteration, self.config.judge_window, self.config.iterations) else None
            if late or not recent.stalled:
                # nothing changes, so no commit: an event says why Level 2 did nothing
                event = outcome.step_aside_event(self.ws.name, cycle, iteration, recent, late)
                self.trace.note(Event.STEP_ASIDE, event)
                self.say(outcome.step_aside_line(event))
                return False
        tried = [n["mechanism"] for n in notes]
        use_llm = self.llm is not None and self.group.level2_uses_llm
        transcripts: list[str] = []
        if use_llm:
            session = level2.research(
                self.llm.complete, (self.ws.path / RUNNER_PATH).read_text(),
                level2.trace_summary(view.records, self.config.target.metric), cycle, tried)
            transcripts += session.transcripts
            mech, source = session.mechanism, Source.LLM
            if mech is None:
                self.trace.note(Event.LEVEL2, level2_note(
                    self.ws.name, cycle, iteration, "?", "", source.value, Verdict.REFUSED,
                    session.error, transcripts=transcripts))
                return False
        else:
            evidence = view.records if self.config.rules >= 3 else None  # before: file order
            mech = level2.next_from_catalog(tried, evidence, view.active, self.config.rules)
            source = Source.CATALOG
            if mech is None:
                self.say(f"L2 cycle {cycle}: the built-in catalog is exhausted")
                return False
        installed = self._install(mech, source, cycle, iteration)
        if installed.verdict is not Verdict.PASS and use_llm and self.config.repair > 0:
            for _ in range(self.config.repair):
                repair = level2.research(self.llm.complete, "", "", cycle, tried,
                                         repair=installed.reason, history=list(session.messages))
                transcripts += repair.transcripts
                if repair.mechanism is None:
                    break
                session = repair
                installed = self._install(repair.mechanism, Source.LLM_REPAIR, cycle, iteration)
                if installed.verdict is Verdict.PASS:
                    break
        self.trace.note(Event.LEVEL2, level2_note(
            self.ws.name, cycle, iteration, installed.mechanism, installed.domain, installed.source,
            installed.verdict, installed.reason, commit=installed.commit, revert=installed.revert,
            gate=installed.gate, transcripts=transcripts, **installed.extra()))
        return installed.active

    def _install(self, mech: Any, source: Source, cycle: int | None,
                 iteration: int | None) -> level2.Outcome:
        outcome = level2.install(self.ws.tree, mech, run=self.ws.name, source=source.value,
                                 cycle=cycle, iteration=iteration,
                                 gate_timeout_s=self.config.gate_timeout,
                                 drop_env=self.secret_env,
                                 max_bytes=self.config.max_mechanism_kb * 1024,
                                 rules=self.config.rules)
        verdict = {Verdict.PASS: "activated", Verdict.FAIL: "reverted by the gate",
                   Verdict.REFUSED: "refused"}
        self.say(f"L2 mechanism {mech.name} ({source.value}): {verdict[outcome.verdict]}"
                 + (f": {outcome.reason}" if outcome.reason else ""))
        return outcome

    def runtime_fault(self, fault: MechanismFault, iteration: int) -> None:
        """Revert the mechanism responsible for a runner fault (``blame.responsible``); the
        caller starts the runner again. Without an active mechanism, the run stops."""
        active = self.active()
        if not active:
            raise RunError(f"the runner's {fault.hook} hook failed:\n{fault.error}",
                           hint="fix runner/runner.py on the run branch, then resume")
        target, how = observed(fault, active,
                               lambda m: self.ws.tree.file_without(m.commit, RUNNER_PATH))
        sha = level2.revert_runtime(self.ws.tree, target.commit, target.name, fault.hook,
                                    fault.error)
        self.trace.note(Event.LEVEL2, level2_note(
            self.ws.name, target.cycle, iteration, target.name, target.domain, target.source,
            Verdict.RUNTIME_REVERT, str(fault), commit=target.commit, revert=sha,
            hook=fault.hook, error=fault.error[-2000:], reverted=True, fault=fault.kind,
            blame=how))
        self.say(f"L2 mechanism {target.name} reverted: {fault.hook} failed at run time ({fault})")

    def judge(self, done: int, view: SearchView) -> bool:
        """The outcome gate (``outcome``): judge every mechanism whose window ended by iteration
        ``done``; keep it with a commit, or revert it for no measured benefit. Returns whether
        the runner changed."""
        notes = self.trace.notes(Event.LEVEL2)
        window, changed = self.config.judge_window, False
        for mech in outcome.due(active_mechanisms(notes), notes, done, window):
            j = outcome.judge(mech, view.records, window, self.config.target.direction,
                              self.config.rules)
            at = int(mech.iteration or 0) + window
            details = (f"Outcome gate ([levels] judge_window = {window}).\n"
                       f"Before: {j.before.describe()}\nAfter: {j.after.describe()}")
            if j.helps:
                self.trace.note(Event.LEVEL2, level2_note(
                    self.ws.name, mech.cycle, at, mech.name, mech.domain, mech.source,
                    Verdict.KEPT, j.reason, commit=mech.commit, **j.fields()))
                self.ws.tree.commit(self.ws.run_files(), *commits.kept_message(
                    self.ws.name, mech.name, at, j.evidence, details))
                self.say(f"L2 mechanism {mech.name} kept: {j.reason}")
                continue
            sha = self.ws.tree.revert(mech.commit, *commits.no_benefit_revert_message(
                mech.name, at, j.evidence, details))
            self.trace.note(Event.LEVEL2, level2_note(
                self.ws.name, mech.cycle, at, mech.name, mech.domain, mech.source,
                Verdict.NO_BENEFIT, j.reason, commit=mech.commit, revert=sha, reverted=True,
                **j.fields()))
            self.say(f"L2 mechanism {mech.name} reverted: {j.reason}")
            changed = True
        return changed

    # ---- Level 1.5 ---------------------------------------------------------------------------
    def level15(self, iteration: int, view: SearchView) -> None:
        records = [r for r in view.records if int(r["iteration"]) <= iteration]
        args = (records, self.state, list(view.active), view.best_iteration,
                self.config.target.direction)
        transcripts: list[str] = []
        evidence = self.config.rules >= 3  # by evidence; runs before it decide by counts
        loops = self.config.rules >= 7  # repeats are evidence too
        if self.llm is not None:
            msgs = level15.llm_messages(records, self.state, list(view.active),
                                        self.config.target.direction, self.config.target.metric,
                                        evidence=evidence, loops=loops, k=self.k15)
            result = self.llm.complete(msgs, purpose=f"l15-cycle{self.state.cycle + 1}")
            transcripts = [result.transcript] if result.transcript else []
            decision = level15.from_llm(result.text, *args, k=self.k15, min_active=self.min_active,
                                        evidence=evidence, loops=loops)
            if result.transcript:
                self.llm.record_parsed(result.transcript, _parsed(decision))
        else:
            decision = level15.rules(*args, k=self.k15, min_active=self.min_active,
                                     evidence=evidence, explore=self.config.rules >= 7,
                                     loops=loops)
        why = level15.evidence_lines(records, self.state, decision, view.best_iteration,
                                     self.config.target.direction, evidence, loops, self.k15)
        self.state = decision.apply(self.state, iteration, view.best_iteration)
        self.state.dump(self.state_path)
        self.trace.note(Event.LEVEL15, {
            "run": self.ws.name, "iteration": iteration, "cycle": decision.cycle,
            "freeze": list(decision.freeze), "unfreeze": list(decision.unfreeze),
            "frozen": sorted(self.state.frozen), "guidance": decision.guidance,
            "source": decision.source, "note": decision.note, "transcripts": transcripts,
            "evidence": why,
        })
        subject, body, trailers = commits.level15_message(
            self.ws.name, iteration, decision.cycle, decision.freeze, decision.unfreeze,
            decision.guidance, decision.source, decision.note, why)
        self.ws.tree.commit([STATE_PATH, *self.ws.run_files()], subject, body, trailers)
        self.say(subject)


def _parsed(decision: level15.Decision) -> dict[str, Any]:
    """What a transcript records as the parsed Level-1.5 answer (``evidence`` only when set, so
    transcripts of runs before it read as they did; ``explore`` likewise)."""
    data = dict(decision.__dict__)
    for key in ("evidence", "explore"):
        if not data.get(key):
            data.pop(key, None)
    return data
