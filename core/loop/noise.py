"""How much the metric moves by itself, and whether a trial got the machine its baseline got.

A keep is worth its commit only if it beats noise. With ``--noise auto`` (the default) a run
measures the spread of its metric before it decides anything: the baseline is trained again on
``EXTRA`` more seeds (when the target has a seed constant) or repeated as it is (time mode
without one), and the sample standard deviation of those measurements is recorded as a ``noise``
event on the trace. The runner's ``accept`` and ``confirm_seeds`` (``runner/runner.py``) then
judge a candidate in units of that spread.

In time mode a trial also has to get the machine its baseline got: ``contended`` compares what
the trial's process tree got (``execution.usage``) with the baseline's. Such a trial is never
compared; the engine records it as ``contended`` and runs it again when the machine is quiet.
Everything here is a function of recorded data, so replay decides exactly as the run did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from arx.core.config import RunConfig
from arx.core.loop import stats
from arx.core.states import Event, TrialKind, TrialState

#: extra measurements of the baseline (so the spread comes from 1 + EXTRA values)
EXTRA = 2
#: a trial is contended when others took this many more cores than during the baseline ...
OTHERS_CORES = 0.25
#: ... and the trial's own process tree got less than this share of the baseline's CPU
SHARE_DROP = 0.75
#: below this many cores the target is not CPU-bound, and CPU contention cannot be judged
MIN_SHARE = 0.3
#: a trial is contended when others were busy on its GPUs this much more of its time than
#: during the baseline (NVML; ``execution.gpu``)
GPU_BUSY_FRAC = 0.5
#: attempts of one trial under contention before the run pauses
MAX_ATTEMPTS = 4
#: (rules >= 8) the shortest measurement judged for contention or taken into the reference:
#: the trial's process tree is sampled every 0.25 s (``execution.usage.INTERVAL_S``), and a
#: tree that ends between two samples has its CPU counted as others' (on the suite's mlp,
#: trials of 0.16 s read "got 0.00 cores, others 1.7" on a quiet machine and paused the run)
MIN_JUDGED_S = 0.5
#: seconds to wait for a quiet machine between two attempts
QUIET_WAIT_S = 60.0
#: the largest N for which values that are all fractions k/N read as a metric on N samples
LATTICE_MAX = 100_000
#: a metric whose resolution is at least this share of its value moves in visible steps
COARSE_REL = 1e-4


def noise_event(run: str, method: str, metrics: Sequence[float],
                given: float | None = None, rules: int = 1,
                texts: Sequence[str | None] = ()) -> dict[str, Any]:
    """The trace event of a run's measured (or given) spread; fields in docs/trace.md. From
    rules 5 on it also says what the measurements show of the metric itself: its
    ``resolution`` (``resolution``, from the printed ``texts``) and whether the seed constant
    changed nothing (``inert``: every seed measured exactly the same)."""
    values = [float(m) for m in metrics]
    mean = statistics.fmean(values) if values else None
    sd = given if given is not None else (statistics.stdev(values) if len(values) > 1 else None)
    event = {"run": run, "iteration": 0, "method": method, "n": len(values),
             "metrics": values, "mean": mean, "sd": sd}
    if rules >= 5 and values:
        event["resolution"] = resolution(values, texts)
        event["inert"] = method == "seeds" and len(values) > 1 and len(set(values)) == 1
    return event


def _step(text: str) -> float | None:
    """The last printed digit's place of a number as printed (``0.9600`` -> 0.0001)."""
    try:
        exponent = Decimal(text.strip()).as_tuple().exponent
    except (ArithmeticError, ValueError):
        return None
    return 10.0 ** int(exponent) if isinstance(exponent, int) else None


def resolution(values: Iterable[float], texts: Iterable[str | None] = ()) -> float:
    """The smallest difference the metric can show: the place of its last printed digit (from
    the printed ``texts``, else the shortest repr of the values), or 1/N when at least three
    different values printed with 5+ decimals are all fractions k/N with N <= ``LATTICE_MAX``
    (an accuracy over N samples printed in full)."""
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    steps = [st for t in texts if t and (st := _step(t)) is not None]
    if not steps:
        steps = [st for v in values if (st := _step(repr(v))) is not None]
    if not steps:
        return 0.0
    step = min(steps)
    if len(set(values)) < 3 or step > 1e-5:
        return step
    denominators = []
    for v in values:
        frac = Fraction(v).limit_denominator(LATTICE_MAX)
        if abs(float(frac) - v) > 1e-12 * max(1.0, abs(v)):
            return step
        denominators.append(frac.denominator)
    n = math.lcm(*denominators)
    return max(step, 1.0 / n) if 1 < n <= LATTICE_MAX else step


def latest_noise(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The run's noise event (the latest one, if it was measured again), or None."""
    found = None
    for e in events:
        if e.get("event") == Event.NOISE:
            found = e
    return found


def baseline_value(event: Mapping[str, Any] | None, single: float | None) -> float | None:
    """The baseline's metric as reported: the mean of its measurements when the run measured
    its noise (the best is then a mean too, so the two compare like with like), else its one
    measurement. Reports only; the decisions and the runner's context keep their own."""
    if event and event.get("mean") is not None and event.get("sd") and event.get("n", 0) > 1:
        return float(event["mean"])
    return single


def reported(records: Iterable[Mapping[str, Any]],
             event: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """(baseline, best) of a run's trial records as `arx status`, the report and the run's
    summary show them: means where the run measured its noise (``baseline_value``, a keep's
    ``reference``), else single measurements."""
    base: float | None = None
    best: float | None = None
    for r in records:
        if r.get("status") == TrialState.BASELINE and base is None:
            base = baseline_value(event, r.get("metric"))
            best = base
        elif r.get("status") == TrialState.KEEP:
            best = r.get("reference", r.get("metric"))
    return base, best


def describe(event: Mapping[str, Any]) -> str:
    """The line a run prints once its spread is known (with what it found about the metric)."""
    if not event.get("n"):
        return f"noise: sd {event['sd']:.4g} (given)"
    line = f"noise: sd {event['sd']:.4g} over {event['n']} baseline runs ({event['method']})"
    return line + "".join(f"\nnoise: {w}" for w in warnings(event))


def warnings(event: Mapping[str, Any] | None) -> list[str]:
    """What a user must know about the measured spread: a seed that changes nothing, a metric
    coarser than its noise."""
    if not event or not event.get("n"):
        return []
    out = []
    res = event.get("resolution")
    if event.get("inert"):
        out.append(
            f"changing the seed constant changed nothing ({event['n']} seeds measured exactly "
            f"{event['metrics'][0]:.6g}): the metric is measured on one fixed split and "
            "initialisation, so its spread cannot be measured here and a gain may not hold on "
            "other data; differences under "
            f"{res:.4g} (the metric's resolution) are treated as noise" if res else
            "changing the seed constant changed nothing: the metric's spread cannot be measured")
    elif coarse(event):
        out.append(f"the metric moves in steps of {res:.4g}, no less than its measured spread: "
                   "differences under one step are treated as noise")
    return out


def coarse(event: Mapping[str, Any] | None) -> bool:
    """The metric moves in visible steps (its resolution at least ``COARSE_REL`` of its value:
    a 2-decimal accuracy, an accuracy on 899 samples) no finer than its measured spread (rules
    >= 5 only): equal values then say nothing about whether a change reached the training. A
    deterministic loss printed with 6 decimals is not coarse."""
    if not event or not event.get("resolution"):
        return False
    res = float(event["resolution"])
    return (event.get("sd") or 0.0) <= res and res >= COARSE_REL * abs(event.get("mean") or 0.0)


def spread(event: Mapping[str, Any] | None, records: Iterable[Any] = (),
           rules: int = 1) -> dict[str, Any]:
    """The spread decisions use (``ctx["noise"]``: ``sd``, ``df``, ``method``): a measured one is
    pooled over every group of repeated measurements of one configuration the run has, the
    baseline's and each confirmed trial's (its first measurement and its extra seeds), so three
    baseline runs are only where the estimate starts. A given spread is used as it is.

    From rules 5 on, the pooled estimate is corrected for its small sample (``stats.sd_upper``
    at ``stats.SD_CONFIDENCE``: a spread from 3 runs is too small 63% of the time, and margins
    in units of it keep noise), and floored at the metric's resolution (a seed that changes
    nothing measures 0, which is not "no noise"); ``sample_sd`` says what was measured. A
    target that repeats itself exactly (no seed constant, sd 0) has no noise: off, as before."""
    unmeasured = rules >= 5 and event is not None and bool(event.get("inert")) \
        and bool(event.get("resolution"))
    if event is None or (not event.get("sd") and not unmeasured):
        return {"sd": None, "df": 0, "method": "off"}
    if event.get("method") == "given":
        return {"sd": float(event["sd"]), "df": 0, "method": "given"}
    pooled, df = stats.pooled(repeated_groups(event, records))
    sd = pooled if df and pooled > 0 else float(event.get("sd") or 0.0)
    if rules < 5:
        return {"sd": sd, "df": df, "method": str(event.get("method"))}
    floor = float(event.get("resolution") or 0.0)
    upper = stats.sd_upper(sd, df) if df else sd
    return {"sd": max(upper, floor) or None, "df": df, "method": str(event.get("method")),
            "sample_sd": sd, "confidence": stats.SD_CONFIDENCE}


def repeated_groups(event: Mapping[str, Any] | None, records: Iterable[Any]
                    ) -> list[list[float]]:
    """The run's groups of repeated measurements of one configuration, which the spread is
    pooled over: the baseline's noise trainings (not a given spread) and each confirmed trial
    with its extra seeds."""
    groups = [list(event.get("metrics") or [])] \
        if event is not None and event.get("method") != "given" else []
    for rec in records:
        extra = rec.get("confirm_metrics")
        if rec.get("kind") == TrialKind.TRIAL and extra and rec.get("metric") is not None:
            groups.append([rec.get("metric"), *extra])
    return groups


def margin_sd(metrics: Sequence[float | None], best_metrics: Sequence[float | None],
              sd: float | None, direction: str) -> float | None:
    """How far the candidate's mean beats the best's mean, in units of the spread (None when
    the spread is unknown or a value is missing)."""
    cand = [m for m in metrics if m is not None]
    best = [m for m in best_metrics if m is not None]
    if not sd or not cand or not best:
        return None
    gain = statistics.fmean(best) - statistics.fmean(cand)
    return round((gain if direction == "min" else -gain) / sd, 3)


def judged(metrics: Sequence[float | None], best_metrics: Sequence[float | None],
           sd: float | None, direction: str, state: Any) -> dict[str, float]:
    """What a decided trial records of the noise: its ``margin_sd`` (its mean's win over the
    best's, in units of ``sd``, the spread it was judged with), and for a keep the ``reference``
    the best is compared with from now on (the mean of what it measured). Empty without a
    spread or a measurement."""
    margin = margin_sd(metrics, best_metrics, sd, direction) if state is not None else None
    if margin is None:
        return {}
    out = {"margin_sd": margin}
    if state == TrialState.KEEP:
        out["reference"] = statistics.fmean([m for m in metrics if m is not None])
    return out


def measurable(wall_s: float | None, rules: int) -> bool:
    """Whether a measurement of ``wall_s`` seconds can be judged for contention: always before
    rules 8, from 8 only when it lasted ``MIN_JUDGED_S`` (its usage was sampled)."""
    return rules < 8 or (wall_s or 0.0) >= MIN_JUDGED_S


def reference_usage(records: Iterable[Any], rules: int = 1) -> dict[str, float] | None:
    """What the baseline got of the machine: the median over its measurements (baseline and
    noise trials) long enough to be ``measurable``, or None when they carry no usage (a run
    recorded before usage was, or measurements too short to sample)."""
    shares, others, gpu = [], [], []
    for rec in records:
        usage = rec.get("machine") or {}
        if not measurable(rec.get("wall_s"), rules):
            continue
        if rec.get("kind") in ("baseline", "noise") and "cpu_share" in usage:
            shares.append(float(usage["cpu_share"]))
            others.append(float(usage.get("others_cpu", 0.0)))
            if "gpu_others_frac" in usage:
                gpu.append(float(usage["gpu_others_frac"]))
    if not shares:
        return None
    out = {"cpu_share": statistics.median(shares), "others_cpu": statistics.median(others)}
    if gpu:
        out["gpu_others_frac"] = statistics.median(gpu)
    return out


def contended(usage: Mapping[str, float], reference: Mapping[str, float] | None) -> bool:
    """Whether a trial got markedly less of the machine than its baseline did: others kept more
    cores busy and the trial's own tree got less CPU. Targets that are not CPU-bound (a trial
    that mostly waits on a GPU or on I/O) are not judged by CPU. On GPUs (where NVML reports
    them for the baseline and the trial): others were busy on the trial's GPUs for at least
    ``GPU_BUSY_FRAC`` more of its time than during the baseline."""
    if not reference or not usage:
        return False
    if gpu_contended(usage, reference):
        return True
    if reference["cpu_share"] < MIN_SHARE:
        return False
    busier = usage.get("others_cpu", 0.0) > reference["others_cpu"] + OTHERS_CORES
    starved = usage.get("cpu_share", 0.0) < SHARE_DROP * reference["cpu_share"]
    return busier and starved


def gpu_contended(usage: Mapping[str, float], reference: Mapping[str, float]) -> bool:
    """Others were busy on the trial's GPUs for ``GPU_BUSY_FRAC`` more of its time than during
    the baseline (False where NVML reported nothing for either)."""
    if "gpu_others_frac" not in usage or "gpu_others_frac" not in reference:
        return False
    return usage["gpu_others_frac"] - reference["gpu_others_frac"] >= GPU_BUSY_FRAC


def quiet_enough(others_cpu: float, reference: Mapping[str, float] | None) -> bool:
    return reference is None or others_cpu <= reference["others_cpu"] + OTHERS_CORES


def throughput(summary: Mapping[str, Any]) -> float | None:
    """Training steps per second, from the summary block (``num_steps``, ``training_seconds``)."""
    steps, seconds = summary.get("num_steps"), summary.get("training_seconds")
    if isinstance(steps, (int, float)) and isinstance(seconds, (int, float)) and seconds > 0:
        return round(steps / seconds, 3)
    return None


def drifted(records: Iterable[Any], i: int) -> bool:
    """Whether a contended trial since the best was last re-measured says the machine may have
    changed (time mode): then the best is measured again before iteration ``i``."""
    contended = [r.iteration for r in records  # (a contended re-measurement was re-measured)
                 if r.state == TrialState.CONTENDED and r.kind != TrialKind.REBASELINE
                 and r.iteration < i]
    rebased = [r.iteration for r in records
               if r.kind == TrialKind.REBASELINE and r.iteration < i]
    return bool(contended) and max(contended) >= max(rebased, default=-1)


def _stamp(rec: Any) -> float | None:
    """A record's ``finished_at`` as seconds since the epoch (None where it has none)."""
    text = rec.get("finished_at")
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (TypeError, ValueError):
        return None


def stale(records: Sequence[Any], i: int, after: float) -> bool:
    """Whether the best was last measured more than ``after`` seconds of the run ago (time
    mode): the machine may have changed since, so the best is measured again before iteration
    ``i``. Its measurements: the baseline and noise trials, the keeps and the re-measurements;
    the clock is the trace's ``finished_at`` stamps, so replay decides the same. Reads back from
    the end to the best's last measurement and parses two stamps (the run's cost per iteration
    stays flat)."""
    if after <= 0:
        return False
    last = None
    for r in reversed(records):
        if r.iteration >= i or not isinstance(r.get("finished_at"), str):
            continue
        last = last or r
        if r.kind in (TrialKind.BASELINE, TrialKind.NOISE, TrialKind.REBASELINE) \
                or r.state == TrialState.KEEP:
            now, then = _stamp(last), _stamp(r)
            return now is not None and then is not None and now - then > after
    return False


def rebaseline_due(config: RunConfig, records: Sequence[Any], i: int) -> bool:
    """Whether the best is measured again before iteration ``i`` (time mode only, once): every
    ``--rebaseline K`` iterations, after contention (``drifted``), and once its last
    measurement is ``--remeasure-after`` seconds old (``stale``)."""
    if config.steps or any(r.kind == TrialKind.REBASELINE and r.iteration == i for r in records):
        return False
    every = config.rebaseline
    return bool(every and i > 1 and (i - 1) % every == 0) or drifted(records, i) \
        or stale(records, i, config.remeasure_after)
