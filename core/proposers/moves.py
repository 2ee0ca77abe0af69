"""Moves from the current best: which configurations a run has measured, and the smallest move
to one it has not.

The offline proposer (``offline.py``) changes one or two parameters of the best configuration at
a time. With a mechanism's focus on one or two parameters, TPE keeps rating the same few moves,
all of them measured already (a focus of one boolean has exactly one). ``unmeasured_move`` is
what it falls back to from rules 3 on: the smallest move, in number of parameters changed, to a
configuration not in the history, within the focused parameters first and then over every
active one. Where the parameters of a move are all discrete and their combinations few, they
are enumerated, so a move is found whenever one exists; otherwise random values are drawn (a
float almost never repeats). Every choice comes from the caller's seeded ``rng``.

``movable`` says which active parameters have a move of their own at all: with ``[params]
constraints`` a parameter may have none (``not TIED or EMSIZE == NHID`` from a best where
EMSIZE != NHID: TIED's one move breaks it), and a mechanism that focuses on it alone locks the
search into refusals. The runner's context carries the answer (``ctx["movable"]``), and from
rules 7 the values each such move may take (``moves``, ``ctx["moves"]``), so the runner can tell
a parameter whose every move its mechanisms exclude (a tabu) from one they leave open.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from arx.core.errors import ProposalError

#: most configurations enumerated for one move size; above it, random draws
ENUMERATE_MAX = 4096
#: random draws per move size when the combinations are not enumerated
DRAWS = 24
#: most values of one parameter ``movable`` tries
PROBES = 33


def norm(value: Any) -> Any:
    """A value as compared (lists as tuples)."""
    return tuple(norm(v) for v in value) if isinstance(value, list) else value


def freeze(config: Mapping[str, Any]) -> tuple:
    """A configuration as a hashable key: the same for the same values (``repr`` tells 1 from
    1.0 and True; a list and a tuple of the same items are the same)."""
    return tuple(sorted((k, repr(norm(v) if type(v) is list else v)) for k, v in config.items()))


def weighted_sample(names: Sequence[str], weights: Sequence[float], k: int,
                    rng: random.Random) -> list[str]:
    """``k`` distinct names, each drawn with probability proportional to its weight."""
    pool, w, out = list(names), list(weights), []
    for _ in range(k):
        pick = rng.choices(range(len(pool)), weights=w)[0]
        out.append(pool.pop(pick))
        w.pop(pick)
    return out


def values_of(spec: Any) -> list[Any] | None:
    """Every value ``spec`` (a ``ParamSpec``) allows, or None when they are not a short list."""
    if spec.choices is not None:
        return list(spec.choices)
    if spec.kind == "bool":
        return [False, True]
    if spec.kind != "int" or spec.low is None or spec.high is None:
        return None
    if spec.pow2:
        lo, hi = math.ceil(math.log2(max(spec.low, 1))), math.floor(math.log2(max(spec.high, 1)))
        return [2 ** e for e in range(lo, hi + 1)]
    if spec.high - spec.low >= ENUMERATE_MAX:
        return None
    return list(range(int(spec.low), int(spec.high) + 1))


def unmeasured_move(pools: Sequence[Sequence[str]], codecs: Mapping[str, Any],
                    best: Mapping[str, Any], tried: set, counts: Mapping[str, int],
                    rng: random.Random) -> dict[str, Any] | None:
    """The smallest change of ``best`` whose configuration is not in ``tried`` (``freeze``d
    configurations), over the names of each pool in turn, one parameter first; None when none
    was found. ``codecs`` map names to objects with a ``spec`` and ``random_other``; ``counts``
    how often each name was changed (the least changed are drawn first)."""
    for pool in pools:
        for k in range(1, len(pool) + 1):
            move = _enumerated(pool, k, codecs, best, tried, rng)
            if move is None:
                move = _drawn(pool, k, codecs, best, tried, counts, rng)
            if move:
                return move
    return None


def _enumerated(pool: Sequence[str], k: int, codecs: Mapping[str, Any],
                best: Mapping[str, Any], tried: set, rng: random.Random) -> dict | None:
    """A random unmeasured move of exactly ``k`` of ``pool``'s parameters when they are all
    discrete and the moves few enough to list ({} when every one is measured), else None."""
    others: dict[str, list[Any]] = {}
    for name in pool:
        values = values_of(codecs[name].spec)
        if values is None:
            return None
        others[name] = [v for v in values if norm(v) != norm(best.get(name))]
    total = sum(math.prod(len(others[n]) for n in names)
                for names in itertools.combinations(sorted(pool), k))
    if total > ENUMERATE_MAX:
        return None
    fresh = []
    for names in itertools.combinations(sorted(pool), k):
        for values in itertools.product(*(others[n] for n in names)):
            move = dict(zip(names, values))
            if freeze({**best, **move}) not in tried:
                fresh.append(move)
    return rng.choice(fresh) if fresh else {}


def _drawn(pool: Sequence[str], k: int, codecs: Mapping[str, Any], best: Mapping[str, Any],
           tried: set, counts: Mapping[str, int], rng: random.Random) -> dict | None:
    """A random unmeasured move of ``k`` of ``pool``'s parameters, or None after ``DRAWS``."""
    names = sorted(pool)
    for _ in range(DRAWS):
        chosen = weighted_sample(names, [1.0 / (1 + counts.get(n, 0)) for n in names], k, rng)
        move = {}
        for name in sorted(chosen):
            value = codecs[name].random_other(best.get(name), rng)
            if value is not None:
                move[name] = value
        if len(move) == k and freeze({**best, **move}) not in tried:
            return move
    return None


def movable(space: Any, best: Mapping[str, Any], frozen: Sequence[str] = ()) -> list[str]:
    """The active parameters of ``space`` (a ``ParameterSpace``) that some change of their own
    from ``best`` takes to a configuration the space and its constraints accept. Without
    constraints that is every active parameter; with them, up to ``PROBES`` values of each are
    checked (every value of a short list; else the ends, evenly spaced points and the
    neighbours of the best value), deterministically, so a replay sees the same answer."""
    active = space.tunable(frozen)
    if not space.constraints:
        return [s.name for s in active]
    out = []
    for spec in active:
        for value in _probes(spec, best.get(spec.name, spec.default)):
            if norm(value) == norm(best.get(spec.name, spec.default)):
                continue
            try:
                space.validate({spec.name: value}, best, frozen)
            except ProposalError:
                continue
            out.append(spec.name)
            break
    return out


def moves(space: Any, best: Mapping[str, Any], frozen: Sequence[str] = ()) -> dict[str, list]:
    """Per active parameter of ``space``, the values a change of its own from ``best`` may take
    that the space and its constraints accept: every value of a short list, else the probes
    ``movable`` tries (the ends, a spread, the best's neighbours); empty when neither is known
    (an unbounded float). Deterministic, so a replay sees the same."""
    out: dict[str, list] = {}
    for spec in space.tunable(frozen):
        current = best.get(spec.name, spec.default)
        seen, values = {norm(current)}, []
        for value in _probes(spec, current):
            if norm(value) in seen:
                continue
            seen.add(norm(value))
            if space.constraints:
                try:
                    space.validate({spec.name: value}, best, frozen)
                except ProposalError:
                    continue
            values.append(value)
        out[spec.name] = values
    return out


def _probes(spec: Any, current: Any) -> list[Any]:
    """Values of ``spec`` to try a move to: all of a short list, else a spread of them."""
    values = values_of(spec)
    if values is not None and len(values) <= PROBES:
        return values
    if values is not None:  # a long list of ints: its ends, a spread, the best's neighbours
        step = (len(values) - 1) / (PROBES - 3)
        spread = [values[round(k * step)] for k in range(PROBES - 2)]
        near = [v for v in values if isinstance(current, int) and abs(v - current) == 1]
        return spread + near
    if spec.low is None or spec.high is None:
        return []
    low, high = float(spec.low), float(spec.high)
    n = PROBES - 2
    if spec.log and low > 0:
        spread = [low * (high / low) ** (k / (n - 1)) for k in range(n)]
    else:
        spread = [low + (high - low) * k / (n - 1) for k in range(n)]
    near = [current * f for f in (0.9, 1.1)] if isinstance(current, (int, float)) \
        and not isinstance(current, bool) else []
    clipped = [min(max(v, low), high) for v in spread + near]
    return [int(round(v)) for v in clipped] if spec.kind == "int" else clipped
