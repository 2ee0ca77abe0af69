"""The replayed run, act by act: each session of the original runs again on the replay branch.

``replay_acts`` runs the real ``Engine`` once per recorded start and resume (``acts.plan``),
handed the recorded parts (``ServedTrials``, ``RecordedClock``, ``ReplayExecutor``,
``ReplayChatClient``) and a trace and worktree that stop where the recorded session stopped
(``stops.py``). A resumed session runs the engine's own resume: it marks the same trials
interrupted and runs them again with the same proposals, commits a keep or finishes a revert a
killed arx left, and runs to the iterations the resume asked for. A mechanism added by hand
goes through ``add_by_hand``, the path `arx mechanism add` took, with the patch stored on the
branch; an `arx verify` through ``verify_finished``, the path it took, with its trainings served.

The branch's own limits are not trusted: a stranger's branch may record ``hook_timeout = 0`` (no
deadline) to hang CI, so replay runs every runner hook and gate under caps of its own
(``replay_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arx.core.config import RunConfig
from arx.core.errors import ArxError
from arx.core.levels.level2 import add_by_hand
from arx.core.loop.engine import Engine
from arx.core.loop.trace import Trace
from arx.core.loop.verify import verify_finished
from arx.core.proposers.llm import LLMProposer
from arx.core.proposers.offline import offline_proposer
from arx.core.replay.acts import Act, ActKind
from arx.core.replay.engine import RecordedClock, ReplayChatClient, ReplayExecutor, ServedTrials
from arx.core.replay.source import Divergence, DivergenceFound, Recording, ReplayGit
from arx.core.replay.stops import Cutter, StoppableGit, Stopped
from arx.core.repo.lock import RunLock
from arx.core.repo.paths import LocalPaths
from arx.core.repo.workspace import Workspace

#: the longest a runner hook (seconds) and a Level-2 gate may take in a replay, whatever the
#: branch recorded (0 there means no deadline at all)
REPLAY_HOOK_CAP_S = 60.0
REPLAY_GATE_CAP_S = 300.0


def _capped(recorded: float, cap: float) -> float:
    return cap if recorded <= 0 else min(recorded, cap)


def replay_limits(config: RunConfig) -> RunConfig:
    """``config`` with its hook and gate deadlines no longer than replay's own caps."""
    return replace(config, hook_timeout=_capped(config.hook_timeout, REPLAY_HOOK_CAP_S),
                   gate_timeout=_capped(config.gate_timeout, REPLAY_GATE_CAP_S))


@dataclass
class ReplayWorkspace(Workspace):
    """A run's workspace for its replay: same run name, its own logs and pid file."""

    key: str = ""  # the replay branch without its prefix

    @property
    def local(self) -> LocalPaths:
        return LocalPaths(self.root, f"replay-{self.key or self.name}")


@dataclass
class Replayed:
    """What the replayed acts left: the last engine, the LLM client, the served trials, the
    divergence the loop itself raised (None: it ran to its end), and the acts done."""

    engine: Engine
    client: ReplayChatClient | None
    trials: ServedTrials
    raised: Divergence | None
    done: list[str]


def replay_acts(repo: ReplayGit, root: Path, branch: str, rec: Recording, acts: list[Act],
                lock: RunLock, key: str) -> Replayed:
    """Run every act of ``acts`` in the replay worktree at ``root`` (on ``branch``)."""
    run_dir = root / rec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_bytes(rec.config_bytes)
    if rec.settings_bytes is not None:
        (root / rec.llm_settings_rel).write_bytes(rec.settings_bytes)
    cutter = Cutter(root / rec.trace_rel, root / rec.llm_rel)
    tree = StoppableGit(root, cutter)
    client = ReplayChatClient(rec, root, cutter) if rec.uses_llm else None
    proposer: Any = LLMProposer(client) if client is not None else \
        offline_proposer(rec.config)
    trials = ServedTrials(rec, cutter)
    engine: Engine | None = None
    done: list[str] = []
    raised = None
    for n, act in enumerate(acts):
        cutter.cut = acts[n + 1].at if n + 1 < len(acts) else None
        cutter.commits = len(repo.log(f"{rec.base}..{branch}"))
        config = replace(replay_limits(rec.config),
                         iterations=act.iterations or rec.config.iterations)
        ws = ReplayWorkspace(repo.root, repo, tree, rec.name, config, lock,
                             act.kind is not ActKind.START, key=key)
        try:
            if act.kind is ActKind.MECHANISM:
                cutter.cut = None  # a hand-made act runs whole; the next session stops itself
                add_by_hand(ws, act.mechanism, gate_timeout_s=config.gate_timeout)
                done.append(act.describe())
                continue
            trace = Trace(root / rec.trace_rel, guard=cutter.line)
            trials.forget_unrecorded(trace)
            executor = ReplayExecutor(config.parallel, config.target.paths(), trials, trace) \
                if config.parallel > 1 else None
            engine = Engine(ws, proposer, llm=client, executor=executor, trials=trials,
                            clock=RecordedClock(rec), trace=trace)
            done.append(act.describe())
            if act.kind is ActKind.VERIFY:  # `arx verify`, as it ran: whole, on the same seeds
                cutter.cut = None
                verify_finished(engine, act.seeds or 1)
                continue
            engine.run()
        except Stopped:
            continue
        except DivergenceFound as exc:
            raised = exc.divergence
            break
        except ArxError as exc:
            raised = Divergence(f"the replayed loop ({act.describe()})", "the replay stopped "
                                f"with an error the original run did not have: {exc.message}",
                                "error")
            break
    assert engine is not None  # the first act is the start
    return Replayed(engine, client, trials, raised, done)
