"""The random-search proposer: the floor every other proposer must beat.

Each iteration it picks one or two active parameters and draws a value for each uniformly from
its ``ParamSpec``: log-uniform for ``log`` ranges, a uniform power of two for ``pow2`` ones, a
uniform choice for ``choices``. Values that equal the current best are drawn again, so a proposal
is never a no-op when the space has room. It starts from the current best config, like the other
proposers, so a trial changes the same number of constants as an LLM's would.

Stateless, like ``OptunaProposer``: the random generator is seeded from (seed, iteration,
feedback), so a resumed or replayed run proposes exactly what the original did.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from arx.core.proposers.base import Proposal, ProposalRequest, Proposer
from arx.core.proposers.offline import sample_value


class RandomProposer(Proposer):
    """Uniform random values for one or two active parameters, around the current best."""

    name = "random"

    def __init__(self, seed: int = 0, max_params: int = 2, tries: int = 20):
        self.seed = seed
        self.max_params = max_params
        self.tries = tries

    def propose(self, request: ProposalRequest, feedback: str | None = None) -> list[Proposal]:
        space = request.space
        names = [n for n in request.active if n in space.specs]
        if request.focus:  # the runner's mechanisms asked for these dimensions
            names = [n for n in names if n in request.focus] or names
        if not names:
            return [Proposal(changes={}, hypothesis="no active parameters to change",
                             source=self.name)]
        rng = random.Random(f"random:{self.seed}:{request.iteration}:{feedback or ''}")
        return [self._one(names, space.specs, request.best_config, rng) for _ in range(request.n)]

    def _one(self, names: list[str], specs: Mapping[str, Any], best: Mapping[str, Any],
             rng: random.Random) -> Proposal:
        k = rng.randint(1, min(self.max_params, len(names)))
        changes: dict[str, Any] = {}
        for name in rng.sample(sorted(names), k):
            for _ in range(self.tries):
                value = sample_value(specs[name], rng)
                if _norm(value) != _norm(best.get(name)):
                    changes[name] = value
                    break
        moves = ", ".join(f"{n} {best.get(n)!r} -> {v!r}" for n, v in changes.items())
        return Proposal(changes=changes, source=self.name,
                        hypothesis=f"random search baseline: {moves or 'no change'}.")


def _norm(value: Any) -> Any:
    return tuple(_norm(v) for v in value) if isinstance(value, (list, tuple)) else value
