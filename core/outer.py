"""The outer loops, run between Level-1 iterations: Level 1.5 every K iterations (groups B, C)
and Level 2 every M Level-1.5 cycles (group C). Each decision is a commit on the run branch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from arx.core import level15
from arx.core.level15 import STATE_PATH, SearchState

if TYPE_CHECKING:  # pragma: no cover
    from arx.core.engine import Engine


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
        """A state file written but not committed (arx killed mid-cycle) is undone: the cycle
        runs again."""
        tree = self.engine.ws.tree
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
