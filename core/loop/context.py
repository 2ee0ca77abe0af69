"""What the runner sees: the plain-data context its hooks receive, and its constructor config.

Hooks get plain dicts and lists built here (never engine objects), so a runner written for one
arx version keeps working as long as these keys stay; they are documented in docs/levels.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arx.core.codemods.bundle import readable
from arx.core.config import RunConfig
from arx.core.levels.level15 import SearchState
from arx.core.loop import noise
from arx.core.loop.space import ParameterSpace
from arx.core.loop.trace import TraceRecord
from arx.core.proposers.moves import movable, moves
from arx.core.states import TrialKind, TrialState


def runner_config(config: RunConfig) -> dict[str, Any]:
    """The dict ``Runner(config)`` is constructed with."""
    return {"direction": config.target.direction, "seed": config.seed, "confirm": config.confirm,
            "confirm_margin": config.confirm_margin, "history": config.history,
            "group": config.group, "rules": config.rules}


def hook_context(iteration: int, config: RunConfig, run: str, space: ParameterSpace,
                 best: Any, baseline_metric: float | None, search: SearchState,
                 records: Sequence[TraceRecord],
                 noise_event: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The context of iteration ``iteration``; ``best`` is the engine's ``Best`` (or None),
    ``noise_event`` the run's measured spread (``ctx["noise"]``: sd, n, method)."""
    frozen = set(search.frozen)
    active = [s.name for s in space.tunable(frozen)]
    params = [{"name": s.name, "kind": s.kind, "value": best.config.get(s.name) if best else None,
               "describe": s.describe(), "locked": s.locked, "frozen": s.name in frozen}
              for s in space.specs.values()]
    target = config.target
    best_config = dict(best.config) if best else {}
    extra = {"moves": moves(space, best_config, sorted(frozen))} if config.rules >= 7 else {}
    return {
        "iteration": iteration, "iterations": config.iterations, "run": run,
        "target_file": target.file, "target_source": readable(best.source) if best else "",
        "metric": target.metric, "direction": target.direction,
        "baseline_metric": baseline_metric, "best_metric": best.metric if best else None,
        "best_iteration": best.iteration if best else None,
        "best_config": dict(best.config) if best else {}, "params": params,
        "active": active, "frozen": sorted(frozen), "guidance": search.guidance,
        # the active parameters a change of their own can move (``[params] constraints``)
        "movable": movable(space, dict(best.config) if best else {}, sorted(frozen)),
        "history": [dict(r.data) for r in records
                    if r.kind in (TrialKind.BASELINE, TrialKind.TRIAL)
                    and r.state not in (TrialState.INTERRUPTED, TrialState.CONTENDED)],
        "noise": noise.spread(noise_event, (r.data for r in records), config.rules),
        # (rules >= 7) the values each active parameter's own move may take (``moves.moves``)
        **extra,
    }

