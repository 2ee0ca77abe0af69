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
- ``prune``: a bool (None, from a runner without the hook: False);
- ``n_candidates``: an int, at least 1 and capped at ``MAX_CANDIDATES``.

Anything else is a ``MechanismFault`` (kind ``invalid``), as is a runner whose filters leave no
candidate ``NO_PROGRESS`` iterations in a row (kind ``no_progress``). From rules 6 a proposal
refused by the space or the constraints (an ``invalid_proposal``) is waste like a dropped
candidate: ``NO_PROGRESS`` iterations in a row that end in one while the same mechanism set the
focus (or emptied the candidates) are a ``no_progress`` fault of that mechanism, so a focus the
space cannot follow (a boolean whose only move breaks a constraint) is reverted instead of
spending the run. A runner whose hooks take more than ``SLOW_SHARE`` of an iteration's time, and
more than ``SLOW_MIN_S``, in ``SLOW_ITERATIONS`` iterations in a row is at fault too (kind
``slow``: a sleep or a loop just under the deadline would otherwise make every iteration many
times slower, for the rest of the run). The time is what arx measured around each call; an
iteration's time is that plus the recorded wall time of its trials (``account``), so a replay,
which serves the trials, judges alike. After a fault the worker is gone; the engine reverts the
responsible mechanism (``blame.observed``: a hook's fault can be asked again on another runner
source, ``_retryable``) and starts a new policy on the runner before.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arx.core.errors import ProposalError
from arx.core.levels.worker import MechanismFault, RunnerWorker, WorkerLimits
from arx.core.states import TrialKind, TrialState

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
#: a runner is slow when its hooks take more than this share of an iteration's time, and more
#: than ``SLOW_MIN_S`` seconds, in ``SLOW_ITERATIONS`` iterations in a row
SLOW_SHARE = 0.25
SLOW_MIN_S = 1.0
SLOW_ITERATIONS = 2
#: the mechanism hook whose answer a Runner hook passes on (to blame an invalid answer)
_FAMILY = {"focus": "focus", "filter_candidates": "filter_candidates",
           "build_prompt": "extend_prompt", "observe": "observe"}
_modules = itertools.count()

Validate = Callable[[Mapping[str, Any], Mapping[str, Any], Sequence[str]], Any]


def _retryable(hook: Callable[..., Any]) -> Callable[..., Any]:
    """A hook whose fault can be tried again on another runner source (``MechanismFault.retry``,
    for ``blame.observed``): the same call, with the same context and arguments, on a fresh
    worker caught up with the same history."""
    @functools.wraps(hook)
    def call(self: RunnerPolicy, ctx: Mapping[str, Any], *args: Any) -> Any:
        try:
            return hook(self, ctx, *args)
        except MechanismFault as fault:
            # a count over iterations (refused proposals under one focus) is not one call that
            # could be asked again; an emptied candidate list is (``_fails_on``)
            counted = fault.kind == "no_progress" and hook.__name__ != "filter_candidates"
            if fault.retry is None and not counted:
                fault.retry = functools.partial(self._fails_on, hook.__name__, ctx, args)
            raise
    return call


class RunnerPolicy:
    """``runner/runner.py`` loaded in a ``RunnerWorker``; see the module docstring."""

    def __init__(self, worker: RunnerWorker, validate: Validate, confirm: int = 0,
                 refusals_waste: bool = False):
        self.worker = worker
        #: (rules >= 6) invalid proposals under a mechanism's focus count toward no progress
        self.refusals_waste = refusals_waste
        self._focus_by: str | None = None  # the mechanism whose focus hook answered last
        self._wasted: list[tuple[Any, str | None]] = []  # (iteration, mechanism) in a row
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
        #: seconds arx waited on each hook, by iteration (``account``), and the slow iterations
        self._spent: dict[Any, Counter[str]] = {}
        self._slow: list[str] = []
        self._slowest: Counter[str] = Counter()
        #: how it was started (``start``'s keywords) and the trial records it has seen: what a
        #: retry on another source needs (``_fails_on``)
        self._how: dict[str, Any] = {}
        self._seen: list[Mapping[str, Any]] = []

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
        how = {"config": config, "validate": validate, "deadline_s": deadline_s,
               "drop_env": drop_env, "limits": limits, "isolation": isolation}
        worker = RunnerWorker(deadline_s, drop_env, limits, isolation)
        worker.start()
        policy = cls(worker, validate, int(config.get("confirm", 0) or 0),
                     refusals_waste=int(config.get("rules", 1) or 1) >= 6)
        policy._how = how
        message = {"op": "load", "source": source, "config": dict(config),
                   "module": f"arx_runner_{next(_modules)}"}
        if probe:
            message["probe"] = dict(probe)
        try:
            policy._note(worker.request(message, "load"), "__init__")
            if history is not None:
                ctx, records = history
                policy.replay(ctx, [r for r in records  # a record without a kind is a trial
                                    if r.get("kind", TrialKind.TRIAL.value) == TrialKind.TRIAL])
        except MechanismFault as fault:
            if not probe:
                fault.retry = functools.partial(_start_fails, how, history)
            raise
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
    @_retryable
    def build_prompt(self, ctx: Mapping[str, Any]) -> str:
        prompt, trail = self._call("build_prompt", ctx)
        if not isinstance(prompt, str):
            self._invalid("build_prompt", f"returned {_what(prompt)}, expected a str", trail)
        if len(prompt) > MAX_PROMPT:
            self._invalid("build_prompt", f"returned {len(prompt)} characters, more than "
                                          f"{MAX_PROMPT}", trail)
        return prompt

    @_retryable
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
        used = [t for t in trail if isinstance(t, str) and t.endswith(".focus")]
        self._focus_by = used[-1].split(".")[0] if used else None
        return list(names)

    @_retryable
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

    @_retryable
    def select(self, ctx: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> Any:
        chosen, trail = self._call("select", ctx, list(candidates))
        for cand in candidates:
            if cand == chosen:
                return cand
        self._invalid("select", f"returned {_what(chosen)}, which is not one of the "
                                "candidates", trail)

    @_retryable
    def confirm_seeds(self, ctx: Mapping[str, Any], metric: float, best: float) -> int:
        seeds, trail = self._call("confirm_seeds", ctx, metric, best)
        seeds = 0 if seeds is None else seeds
        if isinstance(seeds, bool) or not isinstance(seeds, int) \
                or not 0 <= seeds <= self.max_seeds:
            self._invalid("confirm_seeds", f"returned {_what(seeds)}, expected an int in "
                                           f"[0, {self.max_seeds}]", trail)
        return seeds

    @_retryable
    def accept(self, ctx: Mapping[str, Any], metrics: Sequence[Any],
               best_metrics: Sequence[Any]) -> bool:
        keep, trail = self._call("accept", ctx, list(metrics), list(best_metrics))
        if not isinstance(keep, bool):
            self._invalid("accept", f"returned {_what(keep)}, expected a bool", trail)
        return keep

    @_retryable
    def prune(self, ctx: Mapping[str, Any], curves: Mapping[str, Any]) -> bool:
        """Whether to stop the running trial now (``loop.pruning`` builds ``curves``)."""
        stop, trail = self._call("prune", ctx, dict(curves))
        if stop is None:
            return False
        if not isinstance(stop, bool):
            self._invalid("prune", f"returned {_what(stop)}, expected a bool", trail)
        return stop

    @_retryable
    def observe(self, ctx: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        self._call("observe", ctx, dict(record))
        if record.get("kind", TrialKind.TRIAL.value) == TrialKind.TRIAL:
            self._seen.append(record)
            if self.refusals_waste:
                self._waste(record)

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
            self._seen = list(records)

    def probe(self) -> dict[str, Any]:
        """The gate's integration counts (a policy started with ``probe``)."""
        return dict(self.worker.request({"op": "probe"}, "probe").get("result") or {})

    def account(self, iteration: int, records: Sequence[Any]) -> None:
        """After iteration ``iteration`` (its trials among ``records``, with their recorded
        ``wall_s``): a ``slow`` fault when the hooks took more than ``SLOW_SHARE`` of it and
        more than ``SLOW_MIN_S``, ``SLOW_ITERATIONS`` iterations in a row."""
        spent = self._spent.pop(iteration, Counter())
        hooks = sum(spent.values())
        trials = sum(float(r.data.get("wall_s") or 0.0) for r in records
                     if r.iteration == iteration)
        if hooks <= max(SLOW_SHARE * (hooks + trials), SLOW_MIN_S):
            self._slow, self._slowest = [], Counter()
            return
        self._slow.append(f"{hooks:.1f} s of {hooks + trials:.1f} s in iteration {iteration}")
        self._slowest.update(spent)
        if len(self._slow) < SLOW_ITERATIONS:
            return
        hook = self._slowest.most_common(1)[0][0]
        self.worker.close()
        raise MechanismFault(
            hook, f"the runner's hooks took {', '.join(self._slow)} (more than "
            f"{SLOW_SHARE:.0%} of the iteration and {SLOW_MIN_S:g} s, {SLOW_ITERATIONS} "
            f"iterations in a row; {hook} the longest): it would slow every iteration", "slow")

    def _fails_on(self, hook: str, ctx: Mapping[str, Any], args: Sequence[Any],
                  source: str) -> bool:
        """Whether ``hook(ctx, *args)`` faults again (or, for ``filter_candidates``, keeps no
        candidate) on runner ``source``, started afresh with the history this one saw."""
        try:
            other = RunnerPolicy.start(source, **self._how, history=(ctx, self._seen))
        except MechanismFault:
            return True
        try:
            result = getattr(other, hook)(ctx, *args)
        except MechanismFault:
            return True
        finally:
            other.close()
        return hook == "filter_candidates" and bool(args[0]) and not result

    # ---- plumbing ----------------------------------------------------------------------------
    def _call(self, hook: str, ctx: Mapping[str, Any], *args: Any) -> tuple[Any, list[str]]:
        message: dict[str, Any] = {"op": "call", "hook": hook, "args": list(args)}
        if ctx is not self._sent:  # a new context: send it (the worker keeps the last one)
            message["ctx"] = self._ctx_message(ctx)
            self._sent = ctx
        start = time.monotonic()
        try:
            answer = self.worker.request(message, hook)
        finally:
            self._spent.setdefault(ctx.get("iteration"), Counter())[hook] += \
                time.monotonic() - start
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

    def _waste(self, record: Mapping[str, Any]) -> None:
        """Count an iteration whose proposal the space, the constraints or the filters refused
        while a mechanism's focus shaped it (the record's ``focus``); any other trial ends the
        row, and so does a change of mechanism. ``NO_PROGRESS`` in a row are a fault."""
        refusals = record.get("refusals") or [{}]
        last = refusals[-1].get("reason") if isinstance(refusals[-1], Mapping) else None
        wasted = record.get("status") == TrialState.INVALID and last != "patch" \
            and (bool(record.get("focus")) or last == "filtered")
        if not wasted:
            self._wasted = []
            return
        by = self._focus_by if record.get("focus") else \
            (self._emptied.split(".")[0] if self._emptied else None)
        i = record.get("iteration")
        if self._wasted and self._wasted[-1][1] != by:
            self._wasted = []
        if all(at != i for at, _ in self._wasted):
            self._wasted.append((i, by))
        if len(self._wasted) < NO_PROGRESS:
            return
        self._wasted = []
        self.worker.close()
        why = (refusals[-1].get("message") or "refused") if isinstance(refusals[-1], Mapping) \
            else "refused"
        raise MechanismFault(
            "focus" if record.get("focus") else "filter_candidates", f"{NO_PROGRESS} iterations in a row ended in a refused proposal"
            f"{f' under the focus of {by}' if by else ''} ({why}): the loop makes no progress",
            "no_progress", by, trail=(f"{by}.focus",) if by else ())

    def _invalid(self, hook: str, what: str, trail: Sequence[str]) -> None:
        family = _FAMILY.get(hook)
        used = [t for t in trail if isinstance(t, str) and t.endswith(f".{family}")]
        culprit = used[-1].split(".")[0] if used else None
        self.worker.close()
        raise MechanismFault(hook, f"{hook} {what}", "invalid", culprit, trail=tuple(trail))


def _start_fails(how: Mapping[str, Any], history: Any, source: str) -> bool:
    """Whether runner ``source`` fails to load or catch up as another one did."""
    try:
        RunnerPolicy.start(source, **how, history=history).close()
    except MechanismFault:
        return True
    return False


def _what(value: Any) -> str:
    text = repr(value)
    return text[:60] + ("..." if len(text) > 60 else "")
