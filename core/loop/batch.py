"""Several candidates per iteration (``--parallel N``), as a part of the engine.

The engine validates up to N distinct candidates, hands them to its executor as self-contained
jobs (git stays on the driver), records every one, and puts the best measured candidate through
the runner's accept rule, so a batch makes at most one commit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from arx.core.codemods import cst
from arx.core.errors import PatchError, ProposalError
from arx.core.execution.trial import ExecStatus
from arx.core.loop.trace import TrialState


class BatchMixin:
    """Mixed into ``Engine``; uses its space, best, trace, executor and record helpers."""

    def _valid_batch(self, candidates, chosen, refusals) -> list[tuple[dict[str, Any], str, str]]:
        """Up to ``parallel`` valid, distinct candidates, the runner's choice first."""
        ordered = [chosen] + [c for c in candidates if c is not chosen]
        batch: list[tuple[dict[str, Any], str, str]] = []
        seen: list[dict[str, Any]] = []
        for cand in ordered:
            if len(batch) >= self.config.parallel:
                break
            try:
                changes = self.space.validate(cand["changes"], self.best.config, self.frozen)
                source = cst.apply_changes(self.best.source, changes)
            except (ProposalError, PatchError) as exc:
                if cand is not chosen:  # the chosen one's refusal is already recorded
                    refusals.append({"reason": getattr(exc, "reason", "patch"),
                                     "message": exc.message})
                continue
            if changes in seen:
                continue
            seen.append(changes)
            batch.append((changes, source, cand.get("hypothesis", "")))
        return batch

    def _run_batch(self, i: int, ctx: Mapping[str, Any], batch, base: dict[str, Any]) -> None:
        """Train the candidates at once through the executor; the driver alone writes git."""
        from arx.core.execution.executor import TrialJob

        files = {rel: (self.ws.path / rel).read_text() for rel in self.ws.tree.tracked_files()
                 if not rel.startswith("runs/") and (self.ws.path / rel).is_file()}
        jobs = []
        for k, (changes, source, hypothesis) in enumerate(batch):
            self.trace.start(i, "trial", changes, hypothesis=hypothesis, seq=k)
            jobs.append(TrialJob(
                key=f"{i:04d}-trial-c{k}", files={**files, self.target.file: source},
                command=self.target.command, timeout_s=self._timeout(),
                metric=self.target.metric, metric_regex=self.target.metric_regex,
                drop_env=self.secret_env, setup=self.target.setup))
        started = time.monotonic()
        done = self.executor.run(jobs)
        results = [jr.result for jr in done]
        intervals = [[round(jr.started_at, 3), round(jr.finished_at, 3), jr.worker] for jr in done]
        self.trials_run += len(jobs)
        self.trial_seconds += time.monotonic() - started
        self._measured[i] = {"batch": list(batch), "results": results, "base": base,
                             "intervals": intervals}
        return self._decide_batch(i, ctx, batch, results, base, intervals)

    def _decide_batch(self, i: int, ctx: Mapping[str, Any], batch, results, base,
                      intervals) -> None:
        """The best measured candidate faces the runner's accept rule; the others are discards."""
        ok = [k for k, r in enumerate(results) if r.status is ExecStatus.OK]
        sign = 1 if self.target.direction == "min" else -1
        winner = min(ok, key=lambda k: sign * results[k].metric) if ok else None
        common = {k: v for k, v in base.items() if k != "hypothesis"}
        records = []
        for k, ((changes, _source, hypothesis), result) in enumerate(zip(batch, results)):
            if k == winner:
                continue
            state = TrialState.DISCARD if result.status is ExecStatus.OK else None
            note = {"note": "not the best of its batch"} if state else {}
            records.append(self._record(
                i, "trial", result, changes, hypothesis, {**self.best.config, **changes}, state,
                before={n: self.best.config.get(n) for n in changes}, seq=k, batch=len(batch),
                interval=intervals[k], **common, **note))
        if winner is None:
            self._measured.pop(i, None)
            self.target_path.write_text(self.best.source)
        else:  # from here on a mechanism fault re-decides the winner only
            changes, source, hypothesis = batch[winner]
            win_base = {**base, "hypothesis": hypothesis, "seq": winner, "batch": len(batch),
                        "interval": intervals[winner]}
            self._measured[i] = {"changes": changes, "source": source,
                                 "result": results[winner], "base": win_base}
        for rec in records:
            self._observe(ctx, rec)
        if winner is not None:
            self._decide(i, ctx, **self._measured[i])

