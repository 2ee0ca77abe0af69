"""The runner as the engine sees it: its hooks, called in a sandboxed worker, every answer checked.

``RunnerPolicy`` has the Runner's hook methods (``build_prompt``, ``focus``,
``filter_candidates``, ``select``, ``confirm_seeds``, ``accept``, ``observe``) and its
``n_candidates``; behind them a ``RunnerWorker`` runs ``runner/runner.py``. The context goes to
the worker as JSON, so the runner works on a copy and nothing it does reaches the engine's state;
what comes back is checked here before the engine sees it:

- ``build_prompt``: a string of at most ``MAX_PROMPT`` characters;
- ``focus``: None or a list of active parameter names;
- ``filter_candidates``: a list of candidate dicts (``changes`` a dict, ``hypothesis`` a string);
  a candidate the runner made or changed must pass the run's ``ParameterSpace`` (``validate``),
  else it is dropped and counted (``last_dropped``); the proposer's own candidates pass through
  untouched, to be refused, with feedback to the proposer, by the engine as before;
- ``select``: one of the candidates it was given (the very object is returned);
- ``confirm_seeds``: an int between 0 and ``max(MAX_SEEDS, confirm)``; ``accept``: a bool;
- ``n_candidates``: an int, at least 1 and capped at ``MAX_CANDIDATES``.

Anything else is a ``MechanismFault`` (kind ``invalid``), as is a runner whose filters leave no
candidate ``NO_PROGRESS`` iterations in a row (kind ``no_progress``). After a fault the worker is
gone; the engine reverts the responsible mechanism and starts a new policy on the runner before.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arx.core.errors import ProposalError
from arx.core.levels.worker import MechanismFault, RunnerWorker, WorkerLimits
from arx.core.states import TrialKind

__all__ = ["MAX_CANDIDATES", "MAX_PROMPT", "MAX_SEEDS", "NO_PROGRESS", "MechanismFault",
           "RunnerPolicy"]

#: seconds per history record a freshly started runner gets to catch up (on top of the
#: deadline; ``replay``)
CATCHUP_S = 0.05
#: most candidates a runner may ask the proposer for (``n_candidates`` is capped here)
MAX_CANDIDATES = 16
#: most candidates ``filter_candidates`` may return
MAX_FILTERED = 256
#: longest prompt (characters) ``build_prompt`` may return
MAX_PROMPT = 400_000
#: most extra seeds ``confirm_seeds`` may ask for (or ``--confirm``, when that is more)
MAX_SEEDS = 8
#: iterations in a row with every candidate filtered out before the runner is at fault
NO_PROGRESS = 3
#: the mechanism hook whose answer a Runner hook passes on (to blame an invalid answer)
_FAMILY = {"focus": "focus", "filter_candidates": "filter_candidates",
           "build_prompt": "extend_prompt", "observe": "observe"}
_modules = itertools.count()

Validate = Callable[[Mapping[str, Any], Mapping[str, Any], Sequence[str]], Any]


class RunnerPolicy:
    """``runner/runner.py`` loaded in a ``RunnerWorker``; see the module docstring."""

    def __init__(self, worker: RunnerWorker, validate: Validate, confirm: int = 0):
        self.worker = worker
        self.validate = validate
        self.max_seeds = max(MAX_SEEDS, int(confirm))
        self.last_dropped = 0
        self._dropped: dict[Any, int] = {}
        self._n = 1
        self._sent: Mapping[str, Any] | None = None  # held, so its id cannot be reused
        #: how many history records the worker holds, and the last of them (``_ctx_message``)
        self._history: tuple[int, Mapping[str, Any] | None] = (0, None)
        self._empty: list[int] = []
        self._emptied: str | None = None

    @classmethod
    def start(cls, runner: Path | str, config: Mapping[str, Any], validate: Validate, *,
              deadline_s: float, drop_env: Sequence[str] = (),
              limits: WorkerLimits = WorkerLimits(),
              probe: Mapping[str, Any] | None = None,
              history: tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]] | None = None,
              isolation: str = "auto") -> RunnerPolicy:
        """A worker started and the runner (a path, or its source) loaded with ``config`` in it,
        and with ``history`` = (context, trace records) observed (``replay``: the trial records);
        ``MechanismFault`` (the worker then is gone) when it does not load, construct or catch
        up. ``isolation``: how the worker is fenced in (``worker.ISOLATIONS``)."""
        source = runner.read_text(encoding="utf-8") if isinstance(runner, Path) else runner
        worker = RunnerWorker(deadline_s, drop_env, limits, isolation)
        worker.start()
        policy = cls(worker, validate, int(config.get("confirm", 0) or 0))
        message = {"op": "load", "source": source, "config": dict(config),
                   "module": f"arx_runner_{next(_modules)}"}
        if probe:
            message["probe"] = dict(probe)
        policy._note(worker.request(message, "load"), "__init__")
        if history is not None:
            ctx, records = history
            policy.replay(ctx, [r for r in records  # a record without a kind is a trial
                                if r.get("kind", TrialKind.TRIAL.value) == TrialKind.TRIAL])
        return policy

    @property
    def sandbox(self) -> dict[str, bool]:
        """Which of the worker's fences held (see ``worker_main``)."""
        return dict(self.worker.sandbox)

    @property
    def n_candidates(self) -> int:
        return self._n

    def close(self) -> None:
        self.worker.close()

    # ---- the hooks ---------------------------------------------------------------------------
    def build_prompt(self, ctx: Mapping[str, Any]) -> str:
        prompt, trail = self._call("build_prompt", ctx)
        if not isinstance(prompt, str):
            self._invalid("build_prompt", f"returned {_what(prompt)}, expected a str", trail)
        if len(prompt) > MAX_PROMPT:
            self._invalid("build_prompt", f"returned {len(prompt)} characters, more than "
                                          f"{MAX_PROMPT}", trail)
        return prompt

    def focus(self, ctx: Mapping[str, Any]) -> list[str] | None:
        names, trail = self._call("focus", ctx)
        if names is None or names == []:
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            self._invalid("focus", f"returned {_what(names)}, expected None or a list of "
                                   "parameter names", trail)
        inactive = [n for n in names if n not in ctx["active"]]
        if inactive:
            self._invalid("focus", f"returned {inactive[:5]!r}, not active parameters", trail)
        return list(names)

    def filter_candidates(self, ctx: Mapping[str, Any],
                          candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The runner's candidates; those it made or changed that the space refuses are dropped
        (counted in ``last_dropped``)."""
        out, trail = self._call("filter_candidates", ctx, [dict(c) for c in candidates])
        if not isinstance(out, list):
            self._invalid("filter_candidates", f"returned {_what(out)}, expected a list of "
                                               "candidate dicts", trail)
        if len(out) > MAX_FILTERED:
            self._invalid("filter_candidates", f"returned {len(out)} candidates, more than "
                                               f"{MAX_FILTERED}", trail)
        given = [c.get("changes") for c in candidates]
        kept: list[dict[str, Any]] = []
        dropped = 0
        for cand in out:
            if not isinstance(cand, dict) or not isinstance(cand.get("changes"), dict) \
                    or not isinstance(cand.get("hypothesis", ""), str):
                self._invalid("filter_candidates", f"returned {_what(cand)}, not a dict with a "
                                                   "dict 'changes' and a str 'hypothesis'", trail)
            if cand["changes"] not in given:
                try:
                    self.validate(cand["changes"], ctx["best_config"], ctx["frozen"])
                except ProposalError:
                    dropped += 1
                    continue
            kept.append({**cand, "hypothesis": cand.get("hypothesis", "")})
        self.last_dropped = dropped
        i = ctx.get("iteration")
        self._dropped = {i: self._dropped.get(i, 0) + dropped}
        self._progress(ctx, bool(candidates), bool(kept))
        return kept

    def dropped(self, iteration: int) -> dict[str, int]:
        """``{"dropped": n}``: the runner's candidates dropped as invalid in ``iteration``
        (a trace field; empty when none were)."""
        n = self._dropped.get(iteration, 0)
        return {"dropped": n} if n else {}

    def select(self, ctx: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> Any:
        chosen, trail = self._call("select", ctx, list(candidates))
        for cand in candidates:
            if cand == chosen:
                return cand
        self._invalid("select", f"returned {_what(chosen)}, which is not one of the "
                                "candidates", trail)

    def confirm_seeds(self, ctx: Mapping[str, Any], metric: float, best: float) -> int:
        seeds, trail = self._call("confirm_seeds", ctx, metric, best)
        seeds = 0 if seeds is None else seeds
        if isinstance(seeds, bool) or not isinstance(seeds, int) \
                or not 0 <= seeds <= self.max_seeds:
            self._invalid("confirm_seeds", f"returned {_what(seeds)}, expected an int in "
                                           f"[0, {self.max_seeds}]", trail)
        return seeds

    def accept(self, ctx: Mapping[str, Any], metrics: Sequence[Any],
               best_metrics: Sequence[Any]) -> bool:
        keep, trail = self._call("accept", ctx, list(metrics), list(best_metrics))
        if not isinstance(keep, bool):
            self._invalid("accept", f"returned {_what(keep)}, expected a bool", trail)
        return keep

    def observe(self, ctx: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self._call("observe", ctx, dict(record))

    def replay(self, ctx: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
        """``observe`` every record in turn, as a freshly loaded runner catches up with the run
        (each record with ``ctx`` at its iteration), within a budget of its own: the deadline
        plus ``CATCHUP_S`` per record, which nothing the worker does extends."""
        if records:
            budget = self.worker.deadline_s + CATCHUP_S * len(records) \
                if self.worker.deadline_s else None
            self._note(self.worker.request({"op": "replay", "ctx": dict(ctx),
                                            "records": [dict(r) for r in records]}, "observe",
                                           budget), "observe")
            self._sent = None
            self._history = (0, None)

    def probe(self) -> dict[str, Any]:
        """The gate's integration counts (a policy started with ``probe``)."""
        return dict(self.worker.request({"op": "probe"}, "probe").get("result") or {})

    # ---- plumbing ----------------------------------------------------------------------------
    def _call(self, hook: str, ctx: Mapping[str, Any], *args: Any) -> tuple[Any, list[str]]:
        message: dict[str, Any] = {"op": "call", "hook": hook, "args": list(args)}
        if ctx is not self._sent:  # a new context: send it (the worker keeps the last one)
            message["ctx"] = self._ctx_message(ctx)
            self._sent = ctx
        answer = self.worker.request(message, hook)
        self._note(answer, hook)
        trail = answer.get("trail")
        return answer.get("result"), trail if isinstance(trail, list) else []

    def _ctx_message(self, ctx: Mapping[str, Any]) -> dict[str, Any]:
        """``ctx`` as sent: its history only from the records the worker does not hold yet
        (``history_from``, ``history_tail``). The history only grows during a run, so sending
        all of it with every context made each iteration cost more than the one before."""
        out = dict(ctx)
        history = out.get("history")
        if not isinstance(history, list):
            return out
        held, last = self._history
        if 0 < held <= len(history) and history[held - 1] == last:
            del out["history"]
            out["history_from"], out["history_tail"] = held, history[held:]
        self._history = (len(history), history[-1] if history else None)
        return out

    def _note(self, answer: Mapping[str, Any], hook: str) -> None:
        n = answer.get("n_candidates", 1)
        if isinstance(n, bool) or not isinstance(n, int):
            self.worker.close()
            raise MechanismFault("__init__", f"runner.n_candidates is {n!r}, not an int "
                                             f"(after {hook})", "invalid")
        self._n = max(1, min(MAX_CANDIDATES, n))
        self._emptied = answer.get("emptied") if isinstance(answer.get("emptied"), str) else None

    def _progress(self, ctx: Mapping[str, Any], asked: bool, left: bool) -> None:
        if not asked:
            return
        if left:
            self._empty = []
            return
        i = ctx.get("iteration")
        if i not in self._empty:
            self._empty.append(i)
        if len(self._empty) >= NO_PROGRESS:
            culprit = self._emptied.split(".")[0] if self._emptied else None
            self._empty = []
            self.worker.close()
            raise MechanismFault(
                "filter_candidates", f"every candidate was filtered out in {NO_PROGRESS} "
                f"iterations in a row{f' (by {self._emptied})' if self._emptied else ''}: the "
                "loop makes no progress", "no_progress", culprit,
                trail=(self._emptied,) if self._emptied else ())

    def _invalid(self, hook: str, what: str, trail: Sequence[str]) -> None:
        family = _FAMILY.get(hook)
        used = [t for t in trail if isinstance(t, str) and t.endswith(f".{family}")]
        culprit = used[-1].split(".")[0] if used else None
        self.worker.close()
        raise MechanismFault(hook, f"{hook} {what}", "invalid", culprit, trail=tuple(trail))


def _what(value: Any) -> str:
    text = repr(value)
    return text[:60] + ("..." if len(text) > 60 else "")
