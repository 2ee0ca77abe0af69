"""The outer loops, run between Level-1 iterations: Level 1.5 every K iterations (groups B, C)
and Level 2 every M Level-1.5 cycles (group C). Each decision is a commit on the run branch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from arx.core.errors import RunError
from arx.core.levels import level2, level15
from arx.core.levels.level15 import STATE_PATH, SearchState
from arx.core.levels.runguard import MechanismFault
from arx.core.levels.runnerload import RUNNER_PATH

if TYPE_CHECKING:  # pragma: no cover
    from arx.core.loop.engine import Engine


class OuterLoop:
    """Decides when the outer levels run and applies their results to the engine."""

    def __init__(self, engine: Engine, llm: Any = None, k15: int = 3, min_active: int = 2):
        self.engine = engine
        self.llm = llm
        self.k15 = k15
        self.min_active = min_active
        self.state_path = engine.ws.path / STATE_PATH
        self.state = SearchState.load(self.state_path)

    @property
    def group(self) -> str:
        return self.engine.config.group.upper()

    def recover(self) -> None:
        """Undo what a kill mid-cycle left: a state file or runner written but not committed
        (the cycle runs again), a half-done revert, a gate-failed mechanism not yet reverted."""
        tree = self.engine.ws.tree
        tree.abort_revert()
        tree.restore([RUNNER_PATH])
        head = tree.log("HEAD", max_count=1)[0]
        gate = head.trailers.get("Arx-Gate", "")
        if head.trailers.get("Arx-Level") == "2" and gate.startswith("fail") \
                and not head.subject.startswith("Revert"):
            mech = head.trailers.get("Arx-Mechanism", "?")
            tree.revert(head.sha, f"Revert L2 mechanism {mech}: gate failed ({gate[6:]})"[:200],
                        body="Reverted on resume: arx was stopped between the commit and its "
                        "revert.", trailers={"Arx-Level": "2", "Arx-Mechanism": mech,
                                             "Arx-Gate": gate})
            self.engine.trace.note("level2", {
                "run": self.engine.ws.name, "cycle": _int(head.trailers.get("Arx-Cycle")),
                "iteration": _int(head.trailers.get("Arx-Iteration")), "mechanism": mech,
                "source": head.trailers.get("Arx-Source"), "verdict": "fail",
                "reason": gate[6:], "reverted": True, "commit": head.sha,
                "note": "reverted on resume"})
        if tree.dirty_paths([STATE_PATH]):
            if tree.show("HEAD", STATE_PATH) is None:
                self.state_path.unlink()
            else:
                tree.restore([STATE_PATH])
        self.state = SearchState.load(self.state_path)

    def apply_state(self) -> None:
        self.engine.frozen = tuple(sorted(self.state.frozen))
        self.engine.guidance = self.state.guidance

    def before_iteration(self, i: int) -> None:
        """Run every outer cycle due before iteration ``i`` that has not run yet."""
        if self.group == "A" or i <= 1:
            return
        k = self.engine.config.k
        due = (i - 1) // k
        while self.state.cycle < due:
            self.level15(iteration=(self.state.cycle + 1) * k)
            if self.group in ("C", "D") and self.state.cycle % self.engine.config.m == 0:
                self.level2(cycle=self.state.cycle, iteration=self.state.cycle * k)

    # ---- Level 2 -----------------------------------------------------------------------------
    def mechanisms(self) -> list[dict[str, Any]]:
        """Level-2 outcomes recorded on this run (trace notes), oldest first."""
        return [dict(n) for n in self.engine.trace.notes("level2")]

    def active(self) -> list[dict[str, Any]]:
        """Mechanisms activated and not reverted since, oldest first."""
        active: dict[str, dict[str, Any]] = {}
        for note in self.mechanisms():
            if note.get("verdict") == "pass":
                active[note["mechanism"]] = note
            elif note.get("reverted"):
                active.pop(note["mechanism"], None)
        return list(active.values())

    def level2(self, cycle: int, iteration: int) -> None:
        eng = self.engine
        tried = [n["mechanism"] for n in self.mechanisms()]
        if any(n.get("cycle") == cycle for n in self.mechanisms()):
            return  # already done before a resume
        use_llm = self.llm is not None and self.group == "C"
        transcripts: list[str] = []
        if use_llm:
            records = [dict(r.data) for r in eng.records]
            session = level2.research(
                self.llm.complete, (eng.ws.path / "runner/runner.py").read_text(),
                level2.trace_summary(records, eng.target.metric), cycle, tried)
            transcripts += session.transcripts
            mech, source = session.mechanism, "llm"
            if mech is None:
                self._note_l2(cycle, iteration, "?", "", source, "refused", session.error,
                              transcripts=transcripts)
                return
        else:
            mech, source = level2.next_from_catalog(tried), "catalog"
            if mech is None:
                eng.reporter.line(f"L2 cycle {cycle}: the built-in catalog is exhausted")
                return
        outcome = self._install(mech, source, cycle, iteration)
        if outcome.verdict != "pass" and use_llm and eng.config.repair > 0:
            for _ in range(eng.config.repair):
                repair = level2.research(self.llm.complete, "", "", cycle, tried,
                                         repair=outcome.reason, history=list(session.messages))
                transcripts += repair.transcripts
                if repair.mechanism is None:
                    break
                session = repair
                outcome = self._install(repair.mechanism, "llm-repair", cycle, iteration)
                if outcome.verdict == "pass":
                    break
        self._note_l2(cycle, iteration, outcome.mechanism, outcome.domain, outcome.source,
                      outcome.verdict, outcome.reason, commit=outcome.commit,
                      revert=outcome.revert, gate=outcome.gate, transcripts=transcripts)
        if outcome.active:
            eng.reload_runner()

    def _install(self, mech, source: str, cycle: int | None, iteration: int | None):
        eng = self.engine
        outcome = level2.install(eng.ws.tree, mech, run=eng.ws.name, source=source, cycle=cycle,
                                 iteration=iteration, gate_timeout_s=eng.config.gate_timeout,
                                 drop_env=eng.secret_env)
        verdict = {"pass": "activated", "fail": "reverted by the gate", "refused": "refused"}
        eng.reporter.line(f"L2 mechanism {mech.name} ({source}): {verdict[outcome.verdict]}"
                          + (f": {outcome.reason}" if outcome.reason else ""))
        return outcome

    def _note_l2(self, cycle, iteration, mechanism, domain, source, verdict, reason,
                 **extra: Any) -> None:
        note = {"run": self.engine.ws.name, "cycle": cycle, "iteration": iteration,
                "mechanism": mechanism, "domain": domain, "source": source, "verdict": verdict,
                "reason": reason, "reverted": verdict == "fail"}
        self.engine.trace.note("level2", {**note, **extra})


    def runtime_fault(self, fault: MechanismFault, iteration: int) -> None:
        """Revert the mechanism behind a hook failure (named in the traceback, else the newest
        active one); the caller reloads the runner. Without one, the run stops."""
        active = self.active()
        if not active:
            raise RunError(f"the runner's {fault.hook} hook failed:\n{fault.error}",
                           hint="fix runner/runner.py on the run branch, then resume")
        named = [n for n in active if n["mechanism"] in fault.error]
        target = (named or active)[-1]
        eng = self.engine
        sha = level2.revert_runtime(eng.ws.tree, target["commit"], target["mechanism"],
                                    fault.hook, fault.error)
        self._note_l2(target.get("cycle"), iteration, target["mechanism"], target.get("domain"),
                      target.get("source"), "runtime_revert", str(fault),
                      commit=target["commit"], revert=sha, hook=fault.hook,
                      error=fault.error[-2000:], reverted=True)
        eng.reporter.line(f"L2 mechanism {target['mechanism']} reverted: {fault.hook} failed at "
                          f"run time ({fault})")

    def level15(self, iteration: int) -> None:
        eng = self.engine
        records = [dict(r.data) for r in eng.records if r.iteration <= iteration]
        active = [s.name for s in eng.space.tunable()]
        best_it = eng.best.iteration
        args = (records, self.state, active, best_it, eng.target.direction)
        transcripts: list[str] = []
        if self.llm is not None:
            msgs = level15.llm_messages(records, self.state, active, eng.target.direction,
                                        eng.target.metric)
            result = self.llm.complete(msgs, purpose=f"l15-cycle{self.state.cycle + 1}")
            transcripts = [result.transcript] if result.transcript else []
            decision = level15.from_llm(result.text, *args, k=self.k15, min_active=self.min_active)
            if result.transcript:
                self.llm.record_parsed(result.transcript, decision.__dict__)
        else:
            decision = level15.rules(*args, k=self.k15, min_active=self.min_active)
        self.state = decision.apply(self.state, iteration, best_it)
        self.state.dump(self.state_path)
        eng.trace.note("level15", {
            "run": eng.ws.name, "iteration": iteration, "cycle": decision.cycle,
            "freeze": list(decision.freeze), "unfreeze": list(decision.unfreeze),
            "frozen": sorted(self.state.frozen), "guidance": decision.guidance,
            "source": decision.source, "note": decision.note, "transcripts": transcripts,
        })
        subject, body, trailers = level15.message(decision)
        trailers = {"Arx-Run": eng.ws.name, **trailers, "Arx-Iteration": str(iteration)}
        eng.ws.tree.commit([STATE_PATH, *eng.ws.run_files()], subject, body, trailers)
        self.apply_state()
        eng.reporter.line(subject)


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
