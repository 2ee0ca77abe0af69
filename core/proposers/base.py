"""The proposer contract: where candidate changes come from.

A proposer turns a ``ProposalRequest`` (built by the managed runner) into candidate
``Proposal``s. It keeps no hidden state between calls: everything it may learn from is in
``request.history``, so a resumed or replayed run asks the same questions. Implementations: ``OptunaProposer`` (offline, ``arx.core.proposers.offline``), the LLM
proposer (``arx.core.proposers.llm``), and the replay proposer. The engine validates every
proposal against the parameter space; a refused one may be re-asked once with ``feedback``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    """A candidate change to the target's constants, with the reason to try it."""

    changes: Mapping[str, Any]
    hypothesis: str
    source: str = "unknown"
    #: token usage of the call(s) that produced it: prompt_tokens, completion_tokens, cost_usd
    usage: Mapping[str, float] = field(default_factory=dict)
    #: branch-relative paths of the transcripts recorded for it
    transcripts: tuple[str, ...] = ()
    #: the raw text the proposer returned, kept for the trace when it could not be parsed
    raw: str | None = None


@dataclass(frozen=True)
class ProposalRequest:
    """Everything a proposer may use. ``prompt`` is the runner's rendering of the rest."""

    iteration: int
    prompt: str
    #: names the proposer may change (not locked, not frozen)
    active: tuple[str, ...]
    #: current value of every tunable constant in the best config so far
    best_config: Mapping[str, Any]
    #: the parameter space (arx.core.loop.space.ParameterSpace)
    space: Any
    #: every trial so far as plain dicts (trace records), oldest first; the prompt shows recent ones
    history: tuple[Mapping[str, Any], ...] = ()
    guidance: str = ""
    #: metric direction, "min" or "max"
    direction: str = "min"
    n: int = 1
    #: parameters the runner's mechanisms want explored next (None: no preference)
    focus: tuple[str, ...] | None = None
    #: (rules >= 7) the parameters Level 1.5 found under-explored (``level15.under_explored``)
    explore: tuple[str, ...] = ()
    #: the system prompt to use, when the runner overrides the default
    system: str | None = None


class Proposer(abc.ABC):
    """Produces candidate proposals. Must be deterministic given its seed and the requests."""

    name: str = "proposer"

    @abc.abstractmethod
    def propose(
        self, request: ProposalRequest, feedback: str | None = None
    ) -> list[Proposal]:
        """Return ``request.n`` candidates (at least one).

        ``feedback`` is set on a re-ask: why the previous answer was refused.
        Raises ``LLMError`` when the source failed permanently (the run stops, resumable).
        """
