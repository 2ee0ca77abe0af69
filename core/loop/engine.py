"""The Level 1 loop: propose, validate, patch, train, accept, commit.

The engine is trusted code and is never rewritten; every policy decision (prompt, candidate
filtering, confirmation, acceptance) is delegated to the managed runner loaded from the run
branch. State lives in the trace and in git, never only in memory: each iteration can be killed
at any point and ``resume`` continues from what was written.

The engine is composed from narrow parts it is handed: a ``TrialRunner`` that measures trials
and a ``Clock`` that stamps them (replay hands recorded ones), an ``Executor`` for ``--parallel``
batches, the ``OuterLoop`` that returns a new search state, and a ``Reporter`` that gets
snapshots. None of them reads or writes the engine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from arx.core.codemods.bundle import TargetFiles, split_changes
from arx.core.codemods.constants import apply_changes, discover_constants
from arx.core.errors import LLMError, PatchError, ProposalError, RunError
from arx.core.execution.executor import Executor
from arx.core.execution.trial import ExecStatus, TrialResult
from arx.core.levels.level15 import SearchState
from arx.core.levels.policy import MechanismFault, RunnerPolicy
from arx.core.levels.schedule import OuterLoop, SearchView
from arx.core.llm.settings import secret_names_in
from arx.core.loop import batch as batches
from arx.core.loop import eta, measure, noeffect, noise, pruning, resume, verify
from arx.core.loop.context import hook_context, runner_config
from arx.core.loop.diagnose import failure_hint
from arx.core.loop.measure import Measured, Measurer
from arx.core.loop.progress import Reporter, RunProgress, trial_counts
from arx.core.loop.resume import Best, improves, mean_of
from arx.core.loop.space import run_space
from arx.core.loop.trace import Trace, TraceRecord
from arx.core.loop.trials import (
    Clock,
    LiveTrials,
    TrialJournal,
    TrialKey,
    TrialRunner,
)
from arx.core.proposers.base import Proposal, ProposalRequest, Proposer
from arx.core.repo import commits
from arx.core.repo.paths import RUNNER_PATH
from arx.core.repo.workspace import Workspace
from arx.core.states import Event, TrialKind, TrialState

#: how many times one iteration may revert a faulting mechanism and try again
_MAX_FAULTS = 20


class Engine:
    """Runs (or resumes) one run in its workspace with a proposer."""

    def __init__(self, ws: Workspace, proposer: Proposer, reporter: Reporter | None = None,
                 llm: Any = None, executor: Executor | None = None,
                 trials: TrialRunner | None = None, clock: Clock | None = None,
                 trace: Trace | None = None):
        self.ws = ws
        self.config = ws.config
        self.target = ws.config.target
        self.proposer = proposer
        self.reporter = reporter or Reporter()
        self.trace = trace or Trace(ws.path / ws.trace_rel)
        #: the script and the files its settings live in, read and written as one source
        self.files = TargetFiles(ws.path, self.target.paths())
        self.space = run_space(ws.path, self.files.read(), self.config)
        #: withheld from every trial and gate (with the provider keys): where [llm] reads its key
        self.secret_env = secret_names_in(ws.path)
        self.trials = trials or LiveTrials(ws.path, self.target, ws.log_dir, ws.pid_path,
                                           self.secret_env)
        self.journal = TrialJournal(self.trace, self.trials, clock or Clock(), ws.name,
                                    self.target.seed_constant,
                                    lambda note: self.reporter.training(self.progress(), note))
        self.measurer = Measurer(self.journal, self.trials, self.trace, self.config,
                                 self.reporter.line)
        self.noise: Mapping[str, Any] | None = None
        self.executor = executor
        self.outer = OuterLoop(ws, self.trace, self.config, llm=llm, say=self.reporter.line,
                               secret_env=self.secret_env)
        self.records: list[TraceRecord] = []
        self.best: Best | None = None
        self.baseline_metric: float | None = None
        self.search = SearchState()
        self.runner: RunnerPolicy | None = None
        self.started = time.monotonic()
        self._baseline_wall: float | None = None
        self._retry: dict[int, list[Mapping[str, Any]]] = {}
        self._measured: dict[int, dict[str, Any]] = {}
        #: the held-out verification of this session's end (``verify``)
        self.verified: verify.Verified | None = None

    @property
    def frozen(self) -> tuple[str, ...]:
        return tuple(sorted(self.search.frozen))

    def progress(self) -> RunProgress:
        best = self.best
        return RunProgress(
            run=self.ws.name, resumed=self.ws.resumed, iterations=self.config.iterations,
            group=self.config.group, proposer=self.proposer.name,
            baseline_metric=noise.baseline_value(self.noise, self.baseline_metric),
            best_metric=best.metric if best else None,
            best_iteration=best.iteration if best else None, counts=trial_counts(self.records),
            elapsed_s=time.monotonic() - self.started, trials_run=self.journal.trials_run,
            trial_seconds=self.journal.trial_seconds,
            verified=self.verified.short() if self.verified else None,
            eta_s=eta.seconds_left(self.records, self.config, self.noise, bool(self.verified),
                                   self.journal))

    # ---- resume ------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Resume: clean what a killed process left, then rebuild state from the trace."""
        self.trials.kill_stale()
        if self.executor is not None:
            self.executor.kill_stale()
        self.search, self.records, self._retry = resume.recover(
            self.trace, self.ws, self.target.paths(), self.outer.recover,
            lambda rec: self._commit_keep(rec, recovered=True))

    def rebuild_state(self) -> None:
        """The noise, the best and the baseline's metric, from the records."""
        self.noise = noise.latest_noise(self.trace.notes(Event.NOISE))
        self.best, self.baseline_metric = resume.rebuild_best(
            self.records, self.files.read(), self.noise)

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.runner is not None:
                self.runner.close()

    def _run(self) -> None:
        self.reporter.start(self.progress())
        if self.ws.resumed:
            self._recover()
        else:
            self.search = self.outer.state
        self.rebuild_state()
        if self.best is None:
            self._baseline()
        self._ensure_noise()
        self.reload_runner()
        for i in range(resume.next_iteration(self.records), self.config.iterations + 1):
            if noise.rebaseline_due(self.config, self.records, i):
                self._rebaseline(i)
            outcome = self.outer.before_iteration(i, self._view())
            self.search = outcome.state
            if outcome.runner_changed:
                self.reload_runner()
            self.iteration(i)
        if self.config.rules >= 7:  # a mechanism whose window ends with the run is judged too
            self.outer.finish(self.config.iterations, self._view())
        self._finish()

    def _view(self) -> SearchView:
        return SearchView(records=[dict(r.data) for r in self.records],
                          active=tuple(s.name for s in self.space.tunable()),
                          best_iteration=self.best.iteration)

    def _baseline(self) -> None:
        self.trials.prepare()
        managed = self.config.managed_values()
        source = apply_changes(self.files.read(), managed, self.target.file)
        self.files.write(source)
        config = {c.name: c.value for c in discover_constants(source, self.target.file)
                  if c.name in self.space.specs}
        result = self.journal.measure(TrialKey(0, TrialKind.BASELINE), {}, source,
                               self.config.trial_timeout())
        record = self._record(TrialKey(0, TrialKind.BASELINE), result, {}, "", config,
                              TrialState.BASELINE if result.status is ExecStatus.OK else None)
        if record.state is not TrialState.BASELINE:
            raise RunError(f"the baseline trial failed: {record.get('reason')}\n{result.log_tail}",
                           hint=failure_hint(result.log_tail, self.ws.root, self.ws.path,
                                             self.ws.name))
        if self.config.rules >= 3:  # as a resume reloads it (runs before rules 3 left it out)
            self.records.append(record)
        self.baseline_metric = record.metric
        self.best = Best(0, record.metric, config, source, digest=record.get("output_digest"))
        self._baseline_wall = result.wall_s
        paths = [*self.target.paths(), self.ws.config_rel, *self.ws.run_files()]
        self.ws.tree.commit(paths, *commits.baseline_message(self.ws.name, self.target.metric,
                                                             record, managed))
        self.reporter.trial(self.progress(), record)

    def _ensure_noise(self) -> None:
        """Know the metric's spread before deciding anything (``--noise``), and what the
        baseline got of the machine (to tell a contended trial)."""
        noise_event, added = self.measurer.ensure_noise(
            self.noise, self.best.source, self.target.seed_constant, self.files.write,
            self._timeout())
        if added or noise_event is not self.noise:
            self.records.extend(added)
            self.noise = noise_event
            self.best, _ = resume.rebuild_best(self.trace.records(), self.best.source, self.noise)

    def _measure(self, key: TrialKey, changes: Mapping[str, Any], source: str,
                 log: str | None = None, **start: Any) -> Measured:
        """Measure a trial; its contended attempts (time mode) are recorded on the way."""
        measured = self.measurer.measure(self.measurer.attempts_of(key, self.records), changes,
                                         source, self._timeout(), self.best.metric, log, **start)
        self.records.extend(measured.contended)
        return measured

    def context(self, iteration: int) -> dict[str, Any]:
        """The plain-data view of the run that runner hooks receive."""
        return hook_context(iteration, self.config, self.ws.name, self.space, self.best,
                            self.baseline_metric, self.search, self.records, self.noise)

    def iteration(self, i: int) -> None:
        """One Level-1 iteration; a mechanism's run-time fault reverts it and retries without
        re-running a trial that was already measured."""
        for _ in range(_MAX_FAULTS):
            try:
                self._iteration(i)
                return self.runner.account(i, self.records)  # a slow runner is at fault too
            except MechanismFault as fault:
                self.outer.runtime_fault(fault, i)
                self.reload_runner()
                if i not in self._measured and any(
                        r.iteration == i and r.kind == TrialKind.TRIAL for r in self.records):
                    return None  # it failed in observe(), after the decision was recorded
        raise RunError(f"iteration {i}: the runner kept failing after reverting mechanisms")

    def reload_runner(self) -> None:
        """Start runner/runner.py in a new worker, caught up with the history; a fault reverts."""
        for _ in range(_MAX_FAULTS):
            if self.runner is not None:
                self.runner.close()
            last = self.records[-1].iteration if self.records else 0
            try:
                self.runner = RunnerPolicy.start(
                    self.ws.path / RUNNER_PATH, runner_config(self.config), self.space.validate,
                    deadline_s=self.config.hook_timeout, drop_env=self.secret_env,
                    history=(self.context(last), [r.data for r in self.records]))
                return
            except MechanismFault as fault:
                self.outer.runtime_fault(fault, last)
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
            guidance=self.search.guidance, direction=self.target.direction,
            n=max(self.runner.n_candidates, self.config.parallel),
            focus=tuple(focus) if focus else None, explore=self.search.explore,
        )
        refusals: list[dict[str, str]] = []
        usage: dict[str, float] = {}
        transcripts: list[str] = []
        feedback = None
        proposal: Proposal | None = None
        changes: dict[str, Any] | None = None
        batch: list[batches.Candidate] = []
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
                source = apply_changes(self.best.source, changes, self.target.file)
            except (ProposalError, PatchError) as exc:
                reason = getattr(exc, "reason", "patch")
                refusals.append({"reason": reason, "message": exc.message})
                feedback = f"Your proposal was refused ({reason}): {exc.message}"
                changes = None
            if self.executor is not None:
                batch = batches.valid_batch(self.space, self.best.config, self.best.source,
                                            self.frozen, candidates, chosen,
                                            self.config.parallel, refusals, self.target.file)
                if batch:
                    break
            elif changes is not None:
                break
        base = {"usage": usage, "transcripts": transcripts, "refusals": refusals,
                "hypothesis": proposal.hypothesis if proposal else "",
                "proposer": self.proposer.name, "focus": list(request.focus or []),
                "candidates": request.n, **self.runner.dropped(i)}
        if self.executor is not None and batch:
            return self._run_batch(i, ctx, batch, base)
        if changes is None:
            raw = {"proposal": dict(proposal.changes) if proposal else {},
                   "raw": proposal.raw if proposal else None}
            record = self.trace.record({
                "run": self.ws.name, "iteration": i, "kind": TrialKind.TRIAL.value,
                "status": TrialState.INVALID, "changes": {}, **raw, **base,
                "reason": refusals[-1]["message"] if refusals else "no proposal",
            })
            return self._observe(ctx, record)
        self.files.write(source)
        m = self._measure(TrialKey(i, TrialKind.TRIAL), changes, source,
                          hypothesis=proposal.hypothesis, watch=pruning.watch_for(
                              self.config, self.runner, ctx, self.records, self.best.iteration))
        self._measured[i] = {"changes": changes, "source": source, "result": m.result,
                             "base": base, "key": m.key}
        return self._decide(i, ctx, changes, source, m.result, base, key=m.key)

    def _decide(self, i: int, ctx: Mapping[str, Any], changes: dict[str, Any], source: str,
                result: TrialResult, base: dict[str, Any], confirmed: tuple | None = None,
                key: TrialKey | None = None) -> None:
        """Accept or discard a measured trial (runner hooks), record it, commit a keep."""
        config = {**self.best.config, **changes}
        metrics = [result.metric]
        best_metrics = [self.best.metric]
        state = overruled = None
        if result.status is ExecStatus.OK:
            if confirmed is None:
                n_seeds = self.runner.confirm_seeds(ctx, result.metric, self.best.metric)
                if n_seeds > 0:
                    confirmed = self._confirm(i, source, result.metric, n_seeds)
                    self._measured[i]["confirmed"] = confirmed
            if confirmed is not None:
                metrics, best_metrics = confirmed
            keep = self.runner.accept(ctx, metrics, best_metrics)  # may veto; cannot keep worse:
            overruled = keep and not improves(mean_of(metrics), mean_of(best_metrics),
                                              self.target.direction)
            state = noeffect.settle(TrialState.KEEP if keep and not overruled
                                    else TrialState.DISCARD, result.metric,
                                    self.best.first_metric, self.config.rules, result.digest,
                                    self.best.digest)
        extra = measure.compared(metrics, best_metrics, self.records, i)
        extra.update({"overruled": True} if overruled else {})
        extra.update(noise.judged(metrics, best_metrics, ctx["noise"]["sd"],
                                  self.target.direction, state))
        reference = extra.get("reference")
        base = dict(base)
        record = self._record(key or TrialKey(i, TrialKind.TRIAL, base.get("seq", 0)), result,
                              changes, base.pop("hypothesis"), config, state,
                              before={k: self.best.config.get(k) for k in changes},
                              **base, **extra)
        self._measured.pop(i, None)
        if record.state is TrialState.KEEP:
            self.files.write(source)  # (a batch trained elsewhere)
            self._commit_keep(record)
            self.best = resume.kept(i, record, config, source, reference, self.measurer.extra_seeds(
                self.best, self.target.seed_constant, metrics))
        else:
            self.files.write(self.best.source)
        self._observe(ctx, record)
        if record.state is TrialState.NO_EFFECT:
            noeffect.check_streak(self.trace, self.config, self.space.names(), self.ws.path,
                                  coarse=noise.coarse(self.noise))

    # ---- --parallel batches ------------------------------------------------------------------
    def _run_batch(self, i: int, ctx: Mapping[str, Any], batch: list[batches.Candidate],
                   base: dict[str, Any]) -> None:
        """Train the candidates at once through the executor; the driver alone writes git."""
        jobs = batches.jobs(i, batch, batches.job_files(self.ws.tree, self.ws.path), self.target,
                            self._timeout(), self.secret_env, self.ws.included)
        results, intervals = batches.run_jobs(self.executor, jobs, batch, i, self.journal)
        self._measured[i] = {"batch": list(batch), "results": results, "base": base,
                             "intervals": intervals}
        return self._decide_batch(i, ctx, batch, results, base, intervals)

    def _decide_batch(self, i: int, ctx: Mapping[str, Any], batch: list[batches.Candidate],
                      results: list[TrialResult], base: dict[str, Any],
                      intervals: list) -> None:
        """The best measured candidate faces the runner's accept rule; the others are discards."""
        winner = batches.best_index(results, self.target.direction)
        common = {k: v for k, v in base.items() if k != "hypothesis"}
        records = []
        for k, (cand, result) in enumerate(zip(batch, results)):
            if k == winner:
                continue
            state = TrialState.DISCARD if result.status is ExecStatus.OK else None
            note = {"note": "not the best of its batch"} if state else {}
            records.append(self._record(
                TrialKey(i, TrialKind.TRIAL, k), result, cand.changes, cand.hypothesis,
                {**self.best.config, **cand.changes}, state,
                before={n: self.best.config.get(n) for n in cand.changes}, seq=k,
                batch=len(batch), interval=intervals[k], **common, **note))
        if winner is None:
            self._measured.pop(i, None)
            self.files.write(self.best.source)
        else:  # from here on a mechanism fault re-decides the winner only
            cand = batch[winner]
            win_base = {**base, "hypothesis": cand.hypothesis, "seq": winner,
                        "batch": len(batch), "interval": intervals[winner]}
            self._measured[i] = {"changes": cand.changes, "source": cand.source,
                                 "result": results[winner], "base": win_base}
        for rec in records:
            self._observe(ctx, rec)
        if winner is not None:
            self._decide(i, ctx, **self._measured[i])

    # ---- asking, observing, confirming -------------------------------------------------------
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
        self.reporter.trial(self.progress(), record)
        self.runner.observe(ctx, dict(record.data))

    def _confirm(self, i: int, source: str, first: float, n: int) -> tuple[list, list]:
        """Re-run the candidate with n more seeds, and the best with the same seeds once."""
        cand, best, records, self.best = self.measurer.confirm(
            i, source, first, n, self.best, self.target.seed_constant, self.records,
            self.files.write, self._timeout())
        self.records.extend(records)
        return cand, best

    def _rebaseline(self, i: int) -> None:
        """Time mode: re-measure the best so drift in machine speed is seen, not mistaken."""
        self.files.write(self.best.source)
        added, self.best = self.measurer.rebaseline(i, self.best, self.records, self._timeout())
        self.records.extend(added)

    # ---- trials ------------------------------------------------------------------------------
    def _record(self, key: TrialKey, result: TrialResult, changes: Mapping[str, Any],
                hypothesis: str, config: Mapping[str, Any], state: TrialState | None,
                **extra: Any) -> TraceRecord:
        extra.setdefault("best_before", self.best.metric if self.best else None)
        if self.target.files and changes:  # a target of several files: where each change is
            touched = split_changes(changes, self.target.paths())
            extra.setdefault("files", [p for p in self.target.paths() if p in touched])
        return self.journal.record(key, result, changes, hypothesis, config, state, **extra)

    def _timeout(self) -> float:
        base = next((r for r in self.records if r.state is TrialState.BASELINE), None)
        return self.config.trial_timeout(self._baseline_wall or (base and base.get("wall_s")))

    def _commit_keep(self, record: TraceRecord, recovered: bool = False) -> None:
        subject, body, trailers = commits.keep_message(
            self.ws.name, self.target.metric, record, recovered=recovered)
        self.ws.tree.commit([*self.target.paths(), *self.ws.run_files()], subject, body,
                           trailers)

    def verify(self, k: int, at: Mapping[str, Any] | None = None) -> verify.Verified | None:
        """The held-out verification of the best (``verify.Verifier``); None: nothing kept.
        ``at``: where the run stood before an `arx verify` (then one of its own, on demand)."""
        verifier = verify.Verifier(self.journal, self.measurer, self.trace, self.ws.tree,
                                   self.target, self.reporter.line, self.files.write)
        result, added = verifier.verify(self.best, self.records, self.noise,
                                        self.config.iterations, k, self._timeout(), at)
        self.records.extend(added)
        return result

    def _finish(self) -> None:
        self.records = self.trace.records()
        if self.config.verify and self.config.rules >= 5:
            self.verified = self.verify(self.config.verify)
        progress = self.progress()
        end = commits.RunEnd(progress.counts, progress.best_metric, progress.best_iteration,
                             progress.baseline_metric,
                             self.verified.event(self.ws.name, 0) if self.verified else None)
        subject, body, trailers = commits.end_message(self.ws.name, self.target.metric, end)
        self.ws.tree.commit(self.ws.run_files(), subject, body, trailers, allow_empty=True)
        self.reporter.finish(self.progress())
