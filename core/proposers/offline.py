"""The offline proposer: Optuna's TPE over the active parameters, one or two at a time.

Used when no LLM is configured. Each iteration it picks one or two active parameters (favouring
the least tried), asks a TPE sampler fitted on every measured trial so far for values, and
changes only those, starting from the current best config: a local, model-guided search that
behaves like the LLM loop (small moves from the best) rather than a global random restart.

It is stateless between calls: the study is rebuilt from ``request.history`` with a sampler seeded
from (run seed, iteration), so a resumed or replayed run proposes exactly what the original did.
With ``crash_aware`` (runs whose ``RunConfig.rules`` >= 2, see ``offline_proposer``) a trial that
crashed, timed out or gave no metric enters the study as an infeasible trial, so TPE ranks its
region below every feasible one instead of ignoring it (Optuna's TPE skips FAIL trials).

With ``fresh`` (rules >= 3) it never proposes a configuration already measured in the run while
an unmeasured one is within reach (``moves.unmeasured_move``): when a few TPE draws over the
focused parameters only land on measured configurations (a mechanism's focus of one boolean
has one move), the move is widened, to more of the focused parameters and then beyond the
focus. And its cost stays flat with the run's length: TPE is fitted on a bounded window of the
history (the last ``WINDOW`` trials and the ``KEEP_BEST`` best before them, a function of the
history alone, so resume and replay still ask the same questions), and each draw samples only
the parameters it changes.

With ``explore_first`` (rules >= 7) Level 1.5's guidance reaches it where the search is stuck:
when every TPE draw landed on a measured configuration, the smallest unmeasured move is looked
for among the parameters Level 1.5 found under-explored (``request.explore``) first, then as
before, unless a mechanism asked for a focus. (Steering ordinary draws toward them was measured
worse on bbob-f8: docs/levels.md.)
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from arx.core.proposers.base import Proposal, ProposalRequest, Proposer
from arx.core.proposers.moves import freeze as _freeze
from arx.core.proposers.moves import norm as _norm
from arx.core.proposers.moves import unmeasured_move, weighted_sample
from arx.core.states import FAILED, MEASURED, TrialState


@functools.cache
def _optuna() -> Any:
    """optuna, imported on first use (its verbosity set once): with numpy it is about 0.3 s of
    every arx start, and only the offline proposer needs it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna

#: (fresh) trials TPE is fitted on: the most recent ones ...
WINDOW = 64
#: ... and the best this many of those before them
KEEP_BEST = 8
#: (fresh) TPE draws over the focused parameters before the move is widened
FRESH_ATTEMPTS = 8


def round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


class _Codec:
    """Maps one ParamSpec to an Optuna distribution and back (tuples and powers of two)."""

    def __init__(self, spec: Any):
        self.spec = spec
        optuna = _optuna()
        if spec.choices is not None:
            self.dist = optuna.distributions.CategoricalDistribution(list(range(len(spec.choices))))
        elif spec.kind == "int" and spec.pow2:
            lo, hi = int(math.log2(spec.low)), int(math.log2(spec.high))
            self.dist = optuna.distributions.IntDistribution(lo, hi)
        elif spec.kind == "int":
            log = bool(spec.log) and spec.low >= 1
            self.dist = optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=log)
        else:
            log = bool(spec.log) and spec.low > 0
            self.dist = optuna.distributions.FloatDistribution(
                float(spec.low), float(spec.high), log=log
            )

    def encode(self, value: Any) -> Any | None:
        """Internal representation, or None when the value lies outside the distribution."""
        spec = self.spec
        try:
            if spec.choices is not None:
                return list(spec.choices).index(_norm(value))
            if spec.kind == "int" and spec.pow2:
                exp = math.log2(value)
                value = int(exp) if exp.is_integer() else None
            if value is None or not self.dist.low <= value <= self.dist.high:
                return None
            return value
        except (ValueError, TypeError, OverflowError):
            return None

    def random_other(self, current: Any, rng: random.Random) -> Any | None:
        """A random value of the spec other than ``current`` (None if there is none)."""
        for _ in range(20):
            value = sample_value(self.spec, rng)
            if _norm(value) != _norm(current):
                return value
        return None

    def decode(self, raw: Any) -> Any:
        spec = self.spec
        if spec.choices is not None:
            return spec.choices[int(raw)]
        if spec.kind == "int" and spec.pow2:
            return 2 ** int(raw)
        if spec.kind == "int":
            return int(raw)
        value = round_sig(float(raw))
        return min(max(value, float(spec.low)), float(spec.high))


def sample_value(spec: Any, rng: random.Random) -> Any:
    """One uniformly random value allowed by ``spec`` (a ``ParamSpec``)."""
    if spec.choices is not None:
        return rng.choice(list(spec.choices))
    if spec.kind == "bool":
        return rng.random() < 0.5
    if spec.low is None or spec.high is None:
        return spec.default
    low, high = spec.low, spec.high
    if spec.kind == "int" and spec.pow2:
        lo = math.ceil(math.log2(max(low, 1)))
        hi = math.floor(math.log2(max(high, 1)))
        return 2 ** rng.randint(lo, max(lo, hi))
    if spec.kind == "int":
        if spec.log and low >= 1:
            value = math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))
            return int(min(max(value, low), high))
        return rng.randint(int(low), int(high))
    if spec.log and low > 0:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(float(low), float(high))
    return min(max(round_sig(value), float(low)), float(high))


class OptunaProposer(Proposer):
    """Seeded TPE proposals of one or two parameter changes around the current best."""

    name = "optuna"

    def __init__(self, seed: int = 0, n_startup_trials: int = 6, max_params: int = 2,
                 crash_aware: bool = False, fresh: bool = False, explore_first: bool = False):
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.max_params = max_params
        self.crash_aware = crash_aware
        self.fresh = fresh
        #: (rules >= 7) when the TPE draws only land on measured configurations, the smallest
        #: unmeasured move tries Level 1.5's under-explored parameters (``request.explore``)
        #: first, when no mechanism asks for a focus
        self.explore_first = explore_first

    def propose(self, request: ProposalRequest, feedback: str | None = None) -> list[Proposal]:
        space = request.space
        active = [space.specs[n] for n in request.active if n in space.specs]
        if not active:
            return [Proposal(changes={}, hypothesis="no active parameters to change", source=self.name)]
        codecs = {spec.name: _Codec(spec) for spec in active}
        rng = random.Random(f"{self.seed}:{request.iteration}:{feedback or ''}")
        study = self._study(request, codecs, rng.randrange(2**31))
        tried = {_freeze(rec.get("config") or {}) for rec in request.history}
        counts = Counter(n for rec in request.history for n in (rec.get("changes") or {}))
        out = []
        for _ in range(request.n):
            proposal = self._one(request, codecs, study, rng, tried, counts)
            tried.add(_freeze({**request.best_config, **proposal.changes}))  # distinct batch
            out.append(proposal)
        return out

    def _study(self, request: ProposalRequest, codecs: Mapping[str, _Codec], seed: int):
        optuna = _optuna()
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=self.n_startup_trials, multivariate=False
        )
        direction = "minimize" if request.direction == "min" else "maximize"
        study = optuna.create_study(direction=direction, sampler=sampler)
        history = fitted(request.history, request.direction) if self.fresh else request.history
        measured = [_metric(r) for r in history if _metric(r) is not None]
        worst = (max(measured) if request.direction == "min" else min(measured)) if measured else 0.0
        for rec in history:
            config = rec.get("config") or {}
            params, dists = {}, {}
            for name, codec in codecs.items():
                if name in config:
                    raw = codec.encode(config[name])
                    if raw is not None:
                        params[name], dists[name] = raw, codec.dist
            status, metric = rec.get("status"), rec.get("metric")
            if status in MEASURED and isinstance(metric, (int, float)) and math.isfinite(metric):
                state, value = optuna.trial.TrialState.COMPLETE, float(metric)
            elif status in FAILED and self.crash_aware and params:
                study.add_trial(optuna.trial.create_trial(  # infeasible: ranked below all others
                    params=params, distributions=dists, value=worst, constraints={"crashed": 1.0}))
                continue
            elif status in FAILED:
                state, value = optuna.trial.TrialState.FAIL, None
            elif status == TrialState.PRUNED and params:  # TPE ranks it below every complete
                study.add_trial(optuna.trial.create_trial(  # trial, by how far it got
                    params=params, distributions=dists, state=optuna.trial.TrialState.PRUNED,
                    intermediate_values=_steps(rec)))
                continue
            else:
                continue
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=value, state=state)
            )
        return study

    def _one(self, request, codecs, study, rng, tried, counts) -> Proposal:
        optuna = _optuna()
        names = sorted(codecs)
        if request.focus:  # the runner's mechanisms asked for these dimensions
            names = [n for n in names if n in request.focus] or names
        best = dict(request.best_config)
        if self.fresh:
            return self._fresh(request, codecs, names, study, rng, tried, counts)
        changes: dict[str, Any] = {}
        for _attempt in range(25):
            k = 1 if len(names) == 1 or rng.random() < 0.65 else min(self.max_params, len(names))
            # favour the parameters tried least so far (the bias the paper's Level 2 had to fix)
            weights = [1.0 / (1 + counts[n]) for n in names]
            chosen = weighted_sample(names, weights, k, rng)
            trial = study.ask({n: codecs[n].dist for n in sorted(codecs)})
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # placeholder, never "measured"
            changes = {}
            for name in chosen:
                value = codecs[name].decode(trial.params[name])
                if _norm(value) != _norm(best.get(name)):
                    changes[name] = value
            if changes and _freeze({**best, **changes}) not in tried:
                break
        if not changes:  # TPE keeps landing on the best value: make a random move instead
            name = rng.choice(names)
            value = codecs[name].random_other(best.get(name), rng)
            if value is not None:
                changes = {name: value}
        return self._proposal(request, best, changes)

    def _fresh(self, request, codecs, names, study, rng, tried, counts) -> Proposal:
        """Rules 3: a few TPE draws over the focus, each sampling only what it changes; when
        all of them land on measured configurations (or on the best), the smallest unmeasured
        move, within the focus first (``moves.unmeasured_move``)."""
        optuna = _optuna()
        best = dict(request.best_config)
        changes: dict[str, Any] = {}
        for _attempt in range(FRESH_ATTEMPTS):
            k = 1 if len(names) == 1 or rng.random() < 0.65 else min(self.max_params, len(names))
            chosen = weighted_sample(names, [1.0 / (1 + counts[n]) for n in names], k, rng)
            trial = study.ask({n: codecs[n].dist for n in sorted(chosen)})
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # placeholder
            changes = {n: v for n in chosen
                       if _norm(v := codecs[n].decode(trial.params[n])) != _norm(best.get(n))}
            if changes and _freeze({**best, **changes}) not in tried:
                return self._proposal(request, best, changes)
        pools = [names] if len(names) == len(codecs) else [names, sorted(codecs)]
        named = [n for n in names if n in request.explore] if self.explore_first \
            and request.focus is None else []
        if named:  # Level 1.5's under-explored parameters first (rules 7)
            pools = [named, *pools]
        move = unmeasured_move(pools, codecs, best, tried, counts, rng)
        if move is None:  # every configuration within reach was measured: repeat, as before
            return self._proposal(request, best, changes)
        return self._proposal(request, best, move, widened=True)

    def _proposal(self, request, best, changes, widened: bool = False) -> Proposal:
        model = (
            f"TPE model of {len(request.history)} trials"
            if len(request.history) >= self.n_startup_trials
            else "random start-up sample"
        )
        moves = ", ".join(f"{n} {best.get(n)!r} -> {v!r}" for n, v in changes.items())
        if widened:
            hypothesis = (f"the {model} only rated measured configurations; {moves} is the "
                          "smallest move from the current best not measured yet.")
        else:
            hypothesis = f"{model} rates {moves or 'no change'} as promising around the current best."
        return Proposal(changes=changes, hypothesis=hypothesis, source=self.name)


def offline_proposer(config: Any) -> OptunaProposer:
    """The offline proposer a run (a ``RunConfig``) gets: crash-aware from rules 2 on, fresh
    (no repeats, a bounded fit) from rules 3 on, pointed at Level 1.5's under-explored
    parameters from rules 7 on, so runs made before keep proposing, on resume and in replay,
    exactly what they proposed."""
    return OptunaProposer(seed=config.seed, crash_aware=config.rules >= 2,
                          fresh=config.rules >= 3,
                          explore_first=config.rules >= 7)


def fitted(history: Sequence[Mapping[str, Any]], direction: str,
           window: int = WINDOW, keep_best: int = KEEP_BEST) -> list[Mapping[str, Any]]:
    """The records TPE is fitted on (rules 3): the last ``window``, and the ``keep_best`` best
    measured ones before them, in their order in the history."""
    if len(history) <= window + keep_best:
        return list(history)
    cut = len(history) - window
    older = [(m, i) for i, r in enumerate(history[:cut]) if (m := _metric(r)) is not None]
    older.sort(key=lambda mi: (mi[0] if direction == "min" else -mi[0], mi[1]))
    keep = sorted(i for _m, i in older[:keep_best])
    return [history[i] for i in keep] + list(history[cut:])


def _steps(rec: Mapping[str, Any]) -> dict[int, float]:
    """A pruned trial's curve as Optuna's intermediate values (a step, or milliseconds)."""
    scale = 1 if rec.get("curve_unit") == "step" else 1000
    return {int(round(p * scale)): float(v) for p, v in rec.get("curve") or ()}


def _metric(rec: Mapping[str, Any]) -> float | None:
    """A measured trial's finite metric, else None."""
    metric = rec.get("metric")
    if rec.get("status") in MEASURED and isinstance(metric, (int, float)) \
            and math.isfinite(metric):
        return float(metric)
    return None
