"""Measuring under noise: the baseline's spread, and trials that must not be judged.

``Measurer`` is the part of the engine that gets a metric it can trust. ``measure`` runs a trial
through the ``TrialJournal`` and, in time mode, runs it again when it did not get the machine
its baseline got (each such attempt is recorded ``contended`` and never compared; after
``MAX_ATTEMPTS`` the run pauses). ``measure_noise`` trains the baseline on more seeds (or again)
and records the spread. See ``noise`` for the rules; both are pure functions of recorded data,
so a replay, served the recorded usage, decides as the run did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from arx.core.codemods.constants import apply_changes
from arx.core.config import RunConfig
from arx.core.errors import RunError
from arx.core.execution.trial import TrialResult
from arx.core.loop import noise
from arx.core.loop.resume import Best
from arx.core.loop.trace import Trace, TraceRecord
from arx.core.loop.trials import TrialJournal, TrialKey, TrialRunner
from arx.core.states import Event, TrialKind, TrialState


@dataclass
class Measured:
    """A trial measured under an acceptable machine: its final key, its result, and the
    contended attempts recorded on the way."""

    key: TrialKey
    result: TrialResult
    contended: list[TraceRecord] = field(default_factory=list)


class Measurer:
    """Runs trials for the engine and keeps them honest under noise and contention."""

    def __init__(self, journal: TrialJournal, trials: TrialRunner, trace: Trace,
                 config: RunConfig, say: Callable[[str], None]):
        self.journal = journal
        self.trials = trials
        self.trace = trace
        self.config = config
        self.say = say
        #: what the baseline got of the machine (set once the baseline's measurements exist)
        self.reference: Mapping[str, float] | None = None

    def attempts_of(self, key: TrialKey, records: Sequence[TraceRecord]) -> TrialKey:
        """``key`` at the attempt after those a killed run already recorded as contended."""
        n = sum(1 for r in records if r.state is TrialState.CONTENDED and r.iteration
                == key.iteration and r.kind == key.kind and int(r.get("seq", 0)) == key.seq)
        return TrialKey(key.iteration, key.kind, key.seq, n)

    def measure(self, key: TrialKey, changes: Mapping[str, Any], source: str, timeout: float,
                best_before: float | None, log: str | None = None, **start: Any) -> Measured:
        out = Measured(key, self.journal.measure(key, changes, source, timeout, log, **start))
        while (self.config.time_mode and noise.measurable(out.result.wall_s, self.config.rules)
               and noise.contended(out.result.usage, self.reference)):
            rec = self.journal.record(
                out.key, out.result, changes, start.get("hypothesis", ""), {},
                TrialState.CONTENDED, best_before=best_before,
                reason=self._why(out.result.usage), **out.key.fields())
            out.contended.append(rec)
            if len(out.contended) < noise.MAX_ATTEMPTS:
                self.say(f"#{key.iteration} {key.kind} contended ({rec.get('reason')}); it runs "
                         "again when the machine is quiet")
            else:
                raise RunError(
                    f"iteration {key.iteration}: the machine stayed busy for "
                    f"{noise.MAX_ATTEMPTS} attempts of the same trial; the run is paused so "
                    "that no decision is made from a contended measurement",
                    hint=f"when the machine is quiet: arx run --resume {self.journal.run}")
            self.trials.wait_quiet(self.reference)
            out.key = out.key.again()
            out.result = self.journal.measure(out.key, changes, source, timeout, log, **start)
        return out

    def _why(self, usage: Mapping[str, float]) -> str:
        ref = self.reference or {}
        if noise.gpu_contended(usage, ref):
            return (f"contended: others were busy on the trial's GPUs "
                    f"{usage['gpu_others_frac']:.0%} of its time (baseline "
                    f"{ref['gpu_others_frac']:.0%}; up to {usage.get('gpu_others', 0):.0f} "
                    "processes of others)")
        return (f"contended: others kept {usage.get('others_cpu', 0):.2f} cores busy (baseline "
                f"{ref.get('others_cpu', 0):.2f}); the trial got {usage.get('cpu_share', 0):.2f} "
                f"cores (baseline {ref.get('cpu_share', 0):.2f})")

    def rebaseline(self, i: int, best: Best, records: Sequence[TraceRecord],
                   timeout: float) -> tuple[list[TraceRecord], Best]:
        """Measure the best again before iteration ``i`` (its source is in the worktree);
        returns the records added and the best with its new measurement."""
        key = self.attempts_of(TrialKey(i, TrialKind.REBASELINE), records)
        m = self.measure(key, {}, best.source, timeout, best.metric)
        rec = self.journal.record(m.key, m.result, {}, "", dict(best.config), None,
                                  best_before=best.metric)
        if rec.metric is not None:
            self.say(f"rebaseline before #{i}: best re-measured {rec.metric:.6g} "
                     f"(drift {rec.metric - best.metric:+.4g})")
            best = replace(best, metric=rec.metric, first=None, digest=rec.get("output_digest"))
        return [*m.contended, rec], best

    # ---- the baseline's spread -----------------------------------------------------------------
    def ensure_noise(self, event: Mapping[str, Any] | None, source: str,
                     seed_constant: str | None, write: Callable[[str], None],
                     timeout: float) -> tuple[Mapping[str, Any] | None, list[TraceRecord]]:
        """The run's noise event, measured now if the run has none yet (and does not turn it
        off), with the records that took; sets ``reference`` from the baseline's usage."""
        added: list[TraceRecord] = []
        if self.config.noise != "off" and event is None:
            recorded = self.trace.records()
            base = next(r for r in recorded if r.state is TrialState.BASELINE)
            event, added = self.measure_noise(base, source, seed_constant, recorded, write,
                                              timeout)
            self.say(noise.describe(event))
        self.reference = noise.reference_usage((r.data for r in self.trace.records()),
                                               self.config.rules)
        return event, added

    def measure_noise(self, baseline: TraceRecord, source: str, seed_constant: str | None,
                      records: Sequence[TraceRecord], write: Callable[[str], None],
                      timeout: float) -> tuple[dict[str, Any] | None, list[TraceRecord]]:
        """The noise event of this run (measured now unless given or off) and the trial records
        it added. ``records`` are those already recorded (a resume keeps them); ``write`` lays
        a source into the worktree for the trial runner."""
        given = self.config.noise_sd()
        if given is not None:
            event = noise.noise_event(self.journal.run, "given", [], given)
            self.trace.note(Event.NOISE, event)
            return event, []
        seed = int(baseline.get("config", {}).get(seed_constant, 0) or 0) \
            if seed_constant else None
        done = {int(r.get("seq", 0)): r for r in records if r.kind == TrialKind.NOISE
                and r.state is not TrialState.INTERRUPTED}
        metrics, added, texts = [baseline.metric], [], [baseline.get("metric_text")]
        for s in range(1, noise.EXTRA + 1):
            rec = done.get(s)
            if rec is None:
                changes = {seed_constant: seed + s} if seed_constant else {}
                text = apply_changes(source, changes, self.config.target.file) if changes \
                    else source
                write(text)
                key = TrialKey(0, TrialKind.NOISE, s)
                result = self.journal.measure(key, changes, text, timeout, log=f"noise-{s}",
                                              what="baseline")
                config = {**dict(baseline.get("config") or {}), **changes}
                rec = self.journal.record(key, result, changes, "", config, None,
                                          best_before=None, seq=s)
                added.append(rec)
            if rec.metric is None:
                write(source)
                raise RunError(
                    f"the baseline failed when measured again for its noise ({rec.get('reason')})",
                    hint="make the target reliable, or give the spread (--noise 0.01) or turn "
                         "the measurement off (--noise off)")
            metrics.append(rec.metric)
            texts.append(rec.get("metric_text"))
        write(source)
        event = noise.noise_event(self.journal.run, "seeds" if seed_constant else "repeats",
                                  metrics, rules=self.config.rules, texts=texts)
        self.trace.note(Event.NOISE, event)
        return event, added

    # ---- confirmation on more seeds --------------------------------------------------------------
    def confirm(self, i: int, source: str, first: float, n: int, best: Best,
                seed_constant: str | None, records: Sequence[TraceRecord],
                write: Callable[[str], None],
                timeout: float) -> tuple[list, list, list[TraceRecord], Best]:
        """Train the candidate of iteration ``i`` (``source``) on ``n`` more seeds, and the best
        on the same seeds unless it has them already; without a seed constant, train each again
        as it is. Returns (candidate metrics, best metrics, the records, the best with its new
        extra seeds)."""
        base_seed = int(best.config.get(seed_constant, 0) or 0) if seed_constant else 0
        cand, ref, added = [first], [best.first_metric], []
        for s in range(1, n + 1):
            seed = base_seed + s
            changes = {seed_constant: seed} if seed_constant else {}
            for of, src, out in ((i, source, cand), (best.iteration, best.source, ref)):
                if of == best.iteration and seed_constant and seed in best.confirm:
                    out.append(best.confirm[seed])
                    continue
                seeded = apply_changes(src, changes, self.config.target.file) if changes \
                    else src
                write(seeded)
                key = self.attempts_of(TrialKey(i, TrialKind.CONFIRM, s * 2 + (of != i)),
                                       [*records, *added])
                m = self.measure(key, changes, seeded, timeout, best.metric,
                                 log=f"confirm-{of}-s{seed}",
                                 what="candidate" if of == i else f"best (#{of})")
                added += m.contended
                rec = self.journal.record(m.key, m.result, changes, "", {}, None,
                                          best_before=best.metric, of=of,
                                          seed=seed if seed_constant else None, seq=m.key.seq)
                added.append(rec)
                out.append(rec.metric)
                if of == best.iteration and seed_constant and rec.metric is not None:
                    best = replace(best, confirm={**best.confirm, seed: rec.metric})
        write(source)
        return cand, ref, added, best

    @staticmethod
    def extra_seeds(best: Best, seed_constant: str | None,
                    metrics: Sequence[float | None]) -> dict[int, float]:
        """A confirmed keep's extra measurements by seed: the new best's, for later confirms."""
        if not seed_constant:
            return {}
        base_seed = int(best.config.get(seed_constant, 0) or 0)
        return {base_seed + s: m for s, m in enumerate(metrics[1:], 1) if m is not None}


def compared(metrics: Sequence[float | None], best_metrics: Sequence[float | None],
             records: Sequence[TraceRecord], i: int) -> dict[str, Any]:
    """What a decided trial of iteration ``i`` records of its confirmation (``records``: the
    run's, its confirmation's included): the extra values of each side (``confirm_metrics``,
    ``best_confirm_metrics``, as always), the best's first value (``best_first_metric``: with
    the trial's own ``metric`` both sides are then whole), the seeds they ran on
    (``confirm_seeds``) and each confirmation training that failed (``confirm_failed``:
    ``confirm_timeout: candidate, seed 2 (...)``), never folded silently into the decision."""
    if len(metrics) <= 1:
        return {}
    out: dict[str, Any] = {"confirm_metrics": list(metrics[1:]),
                           "best_confirm_metrics": list(best_metrics[1:]),
                           "best_first_metric": best_metrics[0] if best_metrics else None}
    mine = [r for r in records if r.kind == TrialKind.CONFIRM and r.iteration == i
            and r.state is not TrialState.CONTENDED]
    seeds = [r.get("seed") for r in mine if r.get("of") == i and r.get("seed") is not None]
    if seeds:
        out["confirm_seeds"] = seeds
    failed = [confirm_failure(r, i) for r in mine if r.state.is_failure]
    if failed:
        out["confirm_failed"] = failed
    return out


def confirm_failure(record: Mapping[str, Any], i: int) -> str:
    """A failed confirmation training of iteration ``i`` as the run, its report and its keep
    commit say it: ``confirm_timeout: candidate, seed 2 (timed out after 90 s)``."""
    of = record.get("of")
    side = "candidate" if of == i else f"best (#{of})"
    seed = f", seed {record.get('seed')}" if record.get("seed") is not None else ""
    reason = f" ({record.get('reason')})" if record.get("reason") else ""
    return f"{record.get('kind')}_{record.get('status')}: {side}{seed}{reason}"
