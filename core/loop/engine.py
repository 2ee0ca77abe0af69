"""The Level 1 loop: propose, validate, patch, train, accept, commit.

The engine is trusted code and is never rewritten; every policy decision (prompt, candidate
filtering, confirmation, acceptance) is delegated to the managed runner loaded from the run
branch. State lives in the trace and in git, never only in memory: each iteration can be killed
at any point and ``resume`` continues from what was written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arx.core.codemods import cst
from arx.core.errors import LLMError, PatchError, ProposalError, RunError
from arx.core.execution.process import kill_stale
from arx.core.execution.trial import (
    ExecStatus,
    TrialResult,
    TrialSpec,
    run_trial,
)
from arx.core.levels.runguard import GuardedRunner, MechanismFault
from arx.core.levels.runnerload import RUNNER_PATH, load_runner
from arx.core.levels.schedule import OuterLoop
from arx.core.llm.client import secret_names_in
from arx.core.loop.batch import BatchMixin
from arx.core.loop.space import ParameterSpace
from arx.core.loop.trace import Trace, TraceRecord, TrialState, best_of
from arx.core.proposers.base import Proposal, ProposalRequest, Proposer
from arx.core.repo import commits
from arx.core.repo.workspace import Workspace

_EXEC_TO_STATE = {
    ExecStatus.CRASH: TrialState.CRASH,
    ExecStatus.FAIL: TrialState.FAIL,
    ExecStatus.NAN: TrialState.NAN,
    ExecStatus.NO_METRIC: TrialState.NO_METRIC,
    ExecStatus.TIMEOUT: TrialState.TIMEOUT,
    ExecStatus.INTERRUPTED: TrialState.INTERRUPTED,
}
#: summary keys copied from the target's output into each trace record
SUMMARY_KEYS = ("training_seconds", "total_seconds", "num_steps", "data_fingerprint",
                "peak_mem_mb", "peak_vram_mb", "num_params_M")


class Reporter:
    """Progress sink. The CLI provides rich, JSON and quiet implementations."""

    def start(self, engine: Engine) -> None: ...
    def line(self, text: str) -> None: ...
    def trial(self, engine: Engine, record: TraceRecord) -> None: ...
    def finish(self, engine: Engine) -> None: ...


@dataclass
class Best:
    iteration: int
    metric: float
    config: dict[str, Any]
    source: str
    confirm: dict[int, float] = field(default_factory=dict)


class Engine(BatchMixin):
    """Runs (or resumes) one run in its workspace with a proposer."""

    def __init__(self, ws: Workspace, proposer: Proposer, reporter: Reporter | None = None,
                 llm: Any = None, executor: Any = None):
        self.ws = ws
        self.config = ws.config
        self.target = ws.config.target
        self.proposer = proposer
        self.reporter = reporter or Reporter()
        self.trace = Trace(ws.path / ws.trace_rel)
        self.target_path = ws.path / self.target.file
        self.space = self._load_space()
        #: withheld from every trial and gate (with the provider keys): where [llm] reads its key
        self.secret_env = secret_names_in(ws.path)
        self.records: list[TraceRecord] = []
        self.best: Best | None = None
        self.baseline_metric: float | None = None
        self.frozen: tuple[str, ...] = ()
        self.guidance = ""
        self.runner: Any = None
        self.started = time.monotonic()
        self.trials_run = 0
        self.trial_seconds = 0.0
        self._baseline_wall: float | None = None
        self._setup_done = False
        self._retry: dict[int, list[Mapping[str, Any]]] = {}
        self._measured: dict[int, dict[str, Any]] = {}
        self.outer = OuterLoop(self, llm=llm)
        #: runs the candidates of an iteration at once when config.parallel > 1
        self.executor = executor
        if self.config.parallel > 1 and executor is None:
            from arx.core.execution.executor import LocalExecutor

            self.executor = LocalExecutor(ws.root / ".arx" / "slots" / ws.name,
                                          slots=self.config.parallel, log_dir=ws.log_dir,
                                          pid_dir=ws.root / ".arx" / "pids" / ws.name)

    # ---- set-up ----------------------------------------------------------------------------
    def _load_space(self) -> ParameterSpace:
        from arx.core.config import load_toml, plain

        doc = load_toml(self.ws.path)
        constants = cst.discover_constants(self.target_path.read_text())
        return ParameterSpace.from_toml(plain(doc.get("params", {})), constants)

    def _managed_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.config.budget is not None:
            values[self.target.budget_constant] = self.config.budget
            if self.target.steps_constant:
                values[self.target.steps_constant] = 0
        if self.config.steps is not None:
            values[self.target.steps_constant] = self.config.steps
        return values

    def runner_config(self) -> dict[str, Any]:
        c = self.config
        return {"direction": self.target.direction, "seed": c.seed, "confirm": c.confirm,
                "confirm_margin": c.confirm_margin, "history": c.history, "group": c.group}

    def _recover(self) -> None:
        """Resume: clean what a killed process left, then rebuild state from the trace."""
        kill_stale(self.ws.pid_path)
        if self.executor is not None:
            self.executor.kill_stale()
        self.trace.repair_tail()
        records = self.trace.records()
        committed = commits.last_committed_iteration(self.ws.tree)
        pending_keep = [r for r in records if r.state is TrialState.KEEP and r.iteration > committed]
        self.ws.tree.restore([self.target.file])
        self.outer.recover()
        for rec in pending_keep:  # killed between the trace line and its commit
            source = cst.apply_changes(self.target_path.read_text(), rec.changes)
            self.target_path.write_text(source)
            self._commit_keep(rec, recovered=True)
        for start in self.trace.pending():
            if start.get("kind") == "trial":  # re-run the same proposal(s), do not ask again
                self._retry.setdefault(int(start["iteration"]), []).append(start)
            self.trace.record({
                "run": self.ws.name, "iteration": start["iteration"], "kind": start.get("kind"),
                "seq": start.get("seq", 0), "status": TrialState.INTERRUPTED,
                "changes": start.get("changes", {}),
                "reason": "arx was stopped while this trial ran; it is run again",
            })
        self.records = self.trace.records()

    def _rebuild_state(self) -> None:
        best = best_of(self.records)
        if best is None:
            return
        base = next(r for r in self.records if r.state is TrialState.BASELINE)
        self.baseline_metric = base.metric
        self.best = Best(best.iteration, best.metric, dict(best.get("config")),
                         self.target_path.read_text())
        for rec in self.records:
            if rec.kind == "confirm" and rec.get("of") == best.iteration and rec.metric is not None:
                self.best.confirm[int(rec.get("seed"))] = rec.metric
            if rec.kind == "rebaseline" and rec.metric is not None:
                self.best.metric = rec.metric

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> None:
        self.reporter.start(self)
        if self.ws.resumed:
            self._recover()
        self._rebuild_state()
        self.outer.apply_state()
        if self.best is None:
            self._baseline()
        self.reload_runner()
        start = 1 + max((r.iteration for r in self.records if r.kind == "trial"
                         and r.state is not TrialState.INTERRUPTED), default=0)
        for i in range(start, self.config.iterations + 1):
            if self.config.rebaseline and i > 1 and (i - 1) % self.config.rebaseline == 0:
                if not self.config.steps and not self._has_rebaseline(i):
                    self._rebaseline(i)
            self.outer.before_iteration(i)
            self.iteration(i)
        self._finish()

    def _setup(self) -> None:
        if self._setup_done or not self.target.setup:
            return
        spec = self._spec(self.target.setup, timeout=3600, log="setup")
        result = run_trial(spec)
        if result.returncode != 0:
            raise RunError(
                f"setup command `{self.target.setup}` failed ({result.reason}):\n{result.log_tail}",
                hint="fix the setup step ([target] setup in arx.toml) and resume the run",
            )
        self._setup_done = True

    def _baseline(self) -> None:
        self._setup()
        managed = self._managed_values()
        source = cst.apply_changes(self.target_path.read_text(), managed)
        self.target_path.write_text(source)
        config = {n: v for n, v in _values(source).items() if n in self.space.specs}
        self.trace.start(0, "baseline", {})
        result = self._execute(0, "baseline", timeout=self.config.trial_timeout())
        record = self._record(0, "baseline", result, {}, "", config,
                              TrialState.BASELINE if result.status is ExecStatus.OK else None)
        if record.state is not TrialState.BASELINE:
            raise RunError(
                f"the baseline trial failed: {record.get('reason')}\n{result.log_tail}",
                hint=f"run `{self.target.command}` by hand in the run's worktree to see why; "
                f"then `arx run --resume {self.ws.name}`",
            )
        self.baseline_metric = record.metric
        self.best = Best(0, record.metric, config, source)
        self._baseline_wall = result.wall_s
        paths = [self.target.file, self.ws.config_rel, *self.ws.run_files()]
        self.ws.tree.commit(paths, *commits.baseline_message(self.ws.name, self.target.metric,
                                                             record, managed))
        self.reporter.trial(self, record)

    def context(self, iteration: int) -> dict[str, Any]:
        """The plain-data view of the run that runner hooks receive."""
        best = self.best
        frozen = set(self.frozen)
        active = [s.name for s in self.space.tunable(frozen)]
        params = [{"name": s.name, "kind": s.kind, "value": best.config.get(s.name) if best else None,
                   "describe": s.describe(), "locked": s.locked, "frozen": s.name in frozen}
                  for s in self.space.specs.values()]
        return {
            "iteration": iteration, "iterations": self.config.iterations, "run": self.ws.name,
            "target_file": self.target.file, "target_source": best.source if best else "",
            "metric": self.target.metric, "direction": self.target.direction,
            "baseline_metric": self.baseline_metric, "best_metric": best.metric if best else None,
            "best_iteration": best.iteration if best else None,
            "best_config": dict(best.config) if best else {}, "params": params,
            "active": active, "frozen": sorted(frozen), "guidance": self.guidance,
            "history": [dict(r.data) for r in self.records if r.kind in ("baseline", "trial")
                        and r.state is not TrialState.INTERRUPTED],
        }

    def iteration(self, i: int) -> None:
        """One Level-1 iteration; a mechanism's run-time fault reverts it and retries without
        re-running a trial that was already measured."""
        for _ in range(20):
            try:
                return self._iteration(i)
            except MechanismFault as fault:
                self.outer.runtime_fault(fault, i)
                self.reload_runner()
                if i not in self._measured and any(
                        r.iteration == i and r.kind == "trial" for r in self.records):
                    return None  # it failed in observe(), after the decision was recorded
        raise RunError(f"iteration {i}: the runner kept failing after reverting mechanisms")

    def reload_runner(self) -> None:
        """Load runner/runner.py afresh and let it observe the history (its mechanisms' state);
        a mechanism that fails while catching up is reverted too."""
        for _ in range(20):
            runner = GuardedRunner(load_runner(self.ws.path / RUNNER_PATH, self.runner_config()),
                                   self.config.hook_timeout)
            try:
                for rec in self.records:
                    if rec.kind == "trial":
                        runner.observe(self.context(rec.iteration), dict(rec.data))
            except MechanismFault as fault:
                self.outer.runtime_fault(fault, self.records[-1].iteration if self.records else 0)
                continue
            self.runner = runner
            return
        raise RunError("the runner kept failing while replaying the history")

    def _iteration(self, i: int) -> None:
        ctx = self.context(i)
        pending = self._measured.get(i)
        if pending is not None:  # measured before a mechanism fault: decide again, do not re-run
            if "batch" in pending:
                return self._decide_batch(i, ctx, **pending)
            return self._decide(i, ctx, **pending)
        focus = self.runner.focus(ctx)
        request = ProposalRequest(
            iteration=i, prompt=self.runner.build_prompt(ctx), active=tuple(ctx["active"]),
            best_config=ctx["best_config"], space=self.space, history=tuple(ctx["history"]),
            guidance=self.guidance, direction=self.target.direction,
            n=max(1, int(getattr(self.runner, "n_candidates", 1)), self.config.parallel),
            focus=tuple(focus) if focus else None,
        )
        refusals: list[dict[str, str]] = []
        usage: dict[str, float] = {}
        transcripts: list[str] = []
        feedback = None
        proposal: Proposal | None = None
        changes: dict[str, Any] | None = None
        batch: list[tuple[dict[str, Any], str, str]] = []
        retry = self._retry.pop(i, None)
        for _attempt in range(2):  # one re-ask with the reason, then the iteration is spent
            if retry is not None:
                proposals = [Proposal(changes=r.get("changes", {}), source="resume",
                                      hypothesis=r.get("hypothesis", "")) for r in retry]
                retry = None
            else:
                proposals = self._ask(request, feedback)
            for p in proposals:
                for k, v in p.usage.items():
                    usage[k] = usage.get(k, 0) + v
                transcripts.extend(p.transcripts)
            candidates = self.runner.filter_candidates(
                ctx, [{"changes": dict(p.changes), "hypothesis": p.hypothesis} for p in proposals])
            if not candidates:
                feedback = "every candidate was filtered out by the runner's mechanisms"
                refusals.append({"reason": "filtered", "message": feedback})
                continue
            chosen = self.runner.select(ctx, candidates)
            proposal = Proposal(changes=chosen["changes"], hypothesis=chosen.get("hypothesis", ""),
                                source=proposals[0].source, raw=proposals[0].raw)
            try:
                changes = self.space.validate(proposal.changes, self.best.config, self.frozen)
                source = cst.apply_changes(self.best.source, changes)
            except (ProposalError, PatchError) as exc:
                reason = getattr(exc, "reason", "patch")
                refusals.append({"reason": reason, "message": exc.message})
                feedback = f"Your proposal was refused ({reason}): {exc.message}"
                changes = None
            if self.executor is not None:
                batch = self._valid_batch(candidates, chosen, refusals)
                if batch:
                    break
            elif changes is not None:
                break
        base = {"usage": usage, "transcripts": transcripts, "refusals": refusals,
                "hypothesis": proposal.hypothesis if proposal else "",
                "proposer": self.proposer.name, "focus": list(request.focus or []),
                "candidates": request.n}
        if self.executor is not None and batch:
            return self._run_batch(i, ctx, batch, base)
        if changes is None:
            raw = {"proposal": dict(proposal.changes) if proposal else {},
                   "raw": proposal.raw if proposal else None}
            record = self.trace.record({
                "run": self.ws.name, "iteration": i, "kind": "trial",
                "status": TrialState.INVALID, "changes": {}, **raw, **base,
                "reason": refusals[-1]["message"] if refusals else "no proposal",
            })
            return self._observe(ctx, record)
        self.target_path.write_text(source)
        self.trace.start(i, "trial", changes, hypothesis=proposal.hypothesis)
        result = self._execute(i, "trial", timeout=self._timeout())
        self._measured[i] = {"changes": changes, "source": source, "result": result, "base": base}
        return self._decide(i, ctx, changes, source, result, base)

    def _decide(self, i: int, ctx: Mapping[str, Any], changes: dict[str, Any], source: str,
                result: TrialResult, base: dict[str, Any], confirmed: tuple | None = None) -> None:
        """Accept or discard a measured trial (runner hooks), record it, commit a keep."""
        config = {**self.best.config, **changes}
        metrics = [result.metric]
        best_metrics = [self.best.metric]
        state = None
        if result.status is ExecStatus.OK:
            if confirmed is None:
                n_seeds = int(self.runner.confirm_seeds(ctx, result.metric, self.best.metric) or 0)
                if n_seeds > 0:
                    confirmed = self._confirm(i, source, result.metric, n_seeds)
                    self._measured[i]["confirmed"] = confirmed
            if confirmed is not None:
                metrics, best_metrics = confirmed
            keep = bool(self.runner.accept(ctx, metrics, best_metrics))
            state = TrialState.KEEP if keep else TrialState.DISCARD
        extra = {"confirm_metrics": metrics[1:], "best_confirm_metrics": best_metrics[1:]} \
            if len(metrics) > 1 else {}
        base = dict(base)
        record = self._record(i, "trial", result, changes, base.pop("hypothesis"), config, state,
                              before={k: self.best.config.get(k) for k in changes}, **base, **extra)
        self._measured.pop(i, None)
        if record.state is TrialState.KEEP:
            self.target_path.write_text(source)  # (a batch trained elsewhere)
            self._commit_keep(record)
            self.best = Best(i, record.metric, config, source)
        else:
            self.target_path.write_text(self.best.source)
        self._observe(ctx, record)

    def _ask(self, request: ProposalRequest, feedback: str | None) -> list[Proposal]:
        try:
            return self.proposer.propose(request, feedback=feedback)
        except LLMError as exc:
            raise RunError(
                f"iteration {request.iteration}: {exc.message}",
                hint=f"{exc.hint + '; ' if exc.hint else ''}nothing is lost: once the endpoint "
                f"answers, continue with `arx run --resume {self.ws.name}`",
            ) from None

    def _observe(self, ctx: Mapping[str, Any], record: TraceRecord) -> None:
        self.records.append(record)
        self.reporter.trial(self, record)
        self.runner.observe(ctx, dict(record.data))

    def _confirm(self, i: int, source: str, first: float, n: int) -> tuple[list, list]:
        """Re-run the candidate with n more seeds, and the best with the same seeds once."""
        seed_name = self.target.seed_constant
        base_seed = int(self.best.config.get(seed_name, 0) or 0)
        cand, best = [first], [self.best.metric]
        for s in range(1, n + 1):
            seed = base_seed + s
            for of, src, out in ((i, source, cand), (self.best.iteration, self.best.source, best)):
                if of == self.best.iteration and seed in self.best.confirm:
                    out.append(self.best.confirm[seed])
                    continue
                self.target_path.write_text(cst.apply_changes(src, {seed_name: seed}))
                self.trace.start(i, "confirm", {seed_name: seed}, seq=s * 2 + (of != i))
                result = self._execute(i, "confirm", timeout=self._timeout(), seq=s * 2 + (of != i),
                                       label=f"confirm-{of}-s{seed}")
                rec = self._record(i, "confirm", result, {seed_name: seed}, "", {}, None,
                                   of=of, seed=seed, seq=s * 2 + (of != i))
                self.records.append(rec)
                out.append(rec.metric)
                if of == self.best.iteration and rec.metric is not None:
                    self.best.confirm[seed] = rec.metric
        self.target_path.write_text(source)
        return cand, best

    def _has_rebaseline(self, i: int) -> bool:
        return any(r.kind == "rebaseline" and r.iteration == i for r in self.records)

    def _rebaseline(self, i: int) -> None:
        """Time mode: re-measure the best so drift in machine speed is seen, not mistaken."""
        self.target_path.write_text(self.best.source)
        self.trace.start(i, "rebaseline", {})
        result = self._execute(i, "rebaseline", timeout=self._timeout())
        before = self.best.metric
        rec = self._record(i, "rebaseline", result, {}, "", dict(self.best.config), None,
                           best_before=before)
        self.records.append(rec)
        if rec.metric is not None:
            self.best.metric = rec.metric
            self.reporter.line(f"rebaseline before #{i}: best re-measured {rec.metric:.6g} "
                               f"(drift {rec.metric - before:+.4g})")

    # ---- trials ----------------------------------------------------------------------------
    def _timeout(self) -> float:
        return self.config.trial_timeout(self._baseline_wall or self._recorded_baseline_wall())

    def _recorded_baseline_wall(self) -> float | None:
        base = next((r for r in self.records if r.state is TrialState.BASELINE), None)
        return base.get("wall_s") if base else None

    def _spec(self, command: str, timeout: float, log: str) -> TrialSpec:
        return TrialSpec(
            command=command, cwd=self.ws.path, timeout_s=timeout, metric=self.target.metric,
            metric_regex=self.target.metric_regex, log_path=self.ws.log_dir / f"{log}.log",
            pid_path=self.ws.pid_path, drop_env=self.secret_env,
        )

    def _execute(self, i: int, kind: str, timeout: float, seq: int = 0,
                 label: str | None = None) -> TrialResult:
        """Run the target as it is now in the worktree: trial (i, kind, seq) of the trace.
        (The one place trials run: replay and executors substitute it.)"""
        self._setup()
        name = f"{i:04d}-{label or kind}"
        result = run_trial(self._spec(self.target.command, timeout, name))
        self.trials_run += 1
        self.trial_seconds += result.wall_s
        return result

    def _record(self, i: int, kind: str, result: TrialResult, changes: Mapping[str, Any],
                hypothesis: str, config: Mapping[str, Any], state: TrialState | None,
                **extra: Any) -> TraceRecord:
        if state is None:
            state = (TrialState(kind) if kind in ("confirm", "rebaseline") and
                     result.status is ExecStatus.OK else _EXEC_TO_STATE.get(result.status,
                                                                          TrialState.CRASH))
        best_before = self.best.metric if self.best else None
        metric = result.metric if result.metric is not None and math.isfinite(result.metric) else None
        data = {
            "run": self.ws.name, "iteration": i, "kind": kind, "status": state,
            "changes": dict(changes), "hypothesis": hypothesis, "config": dict(config),
            "metric": metric, "best_before": best_before,
            "delta": (metric - best_before) if metric is not None and best_before is not None else None,
            "wall_s": round(result.wall_s, 3), "returncode": result.returncode,
            "reason": result.reason,
            "seed": config.get(self.target.seed_constant) if self.target.seed_constant else None,
            "finished_at": self._now(i, kind, extra.get("seq", 0)),
            **{k: result.summary[k] for k in SUMMARY_KEYS if k in result.summary},
        }
        if state.is_failure:
            data["log_tail"] = result.log_tail
        data.update(extra)
        return self.trace.record(data)

    def _now(self, i: int, kind: str, seq: int) -> str:
        """Timestamp of a finished trial record (replay serves the recorded one)."""
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def _commit_keep(self, record: TraceRecord, recovered: bool = False) -> None:
        subject, body, trailers = commits.keep_message(
            self.ws.name, self.target.metric, record, recovered=recovered)
        self.ws.tree.commit([self.target.file, *self.ws.run_files()], subject, body, trailers)

    def _finish(self) -> None:
        self.records = self.trace.records()
        subject, body, trailers = commits.end_message(self.ws.name, self.target.metric, self)
        self.ws.tree.commit(self.ws.run_files(), subject, body, trailers, allow_empty=True)
        self.reporter.finish(self)




def _values(source: str) -> dict[str, Any]:
    return {c.name: c.value for c in cst.discover_constants(source)}


def run_to_end(ws: Workspace, proposer: Proposer, reporter: Reporter | None = None,
               executor: Any = None, engine_cls: type | None = None) -> Engine:
    """Run (or resume) ``ws`` to its last iteration, then release it: the worktree is removed
    only when the run finished, so an interrupted one resumes from where it stopped."""
    finished = False
    try:
        try:
            engine = (engine_cls or Engine)(ws, proposer, reporter,
                                            llm=getattr(proposer, "client", None),
                                            executor=executor)
            engine.run()
        finally:
            if executor is not None:
                executor.close()
        finished = True
        return engine
    finally:
        ws.close(remove_worktree=finished)
