"""Pruning on the curve-printing suite: trials per hour and the best, prune on vs off, same clock.

    python bench/pruning.py [--problems mlp,gpt-shakespeare] [--seeds 5] [--first-seed 0]
                            [--modes off,on] [--budget 600] [--noise off|auto]
                            [--no-check] [--work DIR] [--md FILE]
    python bench/pruning.py --report DIR [DIR ...] [--md FILE]

For each problem of ``bench/suite.py`` that prints a learning curve (``mlp``: val_loss every 25
of its 400 steps; ``gpt-shakespeare``: the default target on its default corpus, 8 curve
evaluations in 20 steps; ``gpt``, the same on the suite's tiny corpus, where every
configuration ends at the same val_bpb, is there on request), all in steps mode, a fresh
repository is made, and for each seed r two ordinary runs of the real engine with the offline
proposer (seed r) are given the same wall-clock budget (``--budget`` seconds, the baseline
included): one with ``--prune off``, one with ``--prune on``. A run is stopped after the first
trial that ends past the budget. Printed, per problem and mode: trials per hour (Level-1 trials
finished, pruned ones included) and the delta of the best (best - baseline; lower is better),
mean ± sample std over the seeds; then the ratio of trials per hour and the difference of the
best in pooled stds (positive: pruning's best is worse). Each session's line says where its
seconds went (baseline and noise trainings, confirmations, pruned trials, trials trained to the
end, and the rest: arx's own work). The two modes of a seed run one after the other, so a busy
machine weighs on both alike; the load average is printed with the table.

Check mode (on by default): every pruned trial is trained again to its end, as the file it
would have trained, and counted as a lost keep when its metric beats the best it was compared
with: "strictly better", the rule without noise (these problems are deterministic); with
``--noise auto`` a keep needs more than that, so the count is then an upper bound.
The issue's targets: trials per hour >= 1.5x, the best no worse by more than one pooled std on
any problem, lost keeps under 5% of the pruned trials.

Counterfactual (always): the runner template's ``prune`` is asked, as a run's watch asks it, at
every point of the trials the prune-off sessions trained to the end: how many it would have
stopped, how many of those beat the best they were compared with, and the share of their
training seconds it would have saved, and the most any rule that loses no keep could save
there (every trial that did not beat the best stopped at its first point past the template's
``prune_after``): when that bound is far below a third, no rule reaches 1.5x trials per hour on
those sessions. It costs nothing and does not depend on what the proposer
did with the pruned trials, so it is how a rule is compared with another on the same curves.

Each session is also written to ``WORK/sessions/PROBLEM/MODE-SEED.json`` (its records, seconds
and check), so a bench can be run in parts (``--modes off`` first, ``--first-seed`` to split
the seeds between processes) and reported as one: ``--report`` reads the sessions of the given
work directories and prints the table without running anything.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from arx.core.codemods.constants import apply_changes
from arx.core.execution.trial import TrialSpec, run_trial
from arx.core.loop.engine import Engine
from arx.core.loop.progress import Reporter
from arx.core.loop.pruning import Pruner, curve_noise
from arx.core.loop.trace import Trace, TraceRecord
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run

sys.path.insert(0, str(Path(__file__).parent))
import suite  # noqa: E402  (bench/suite.py, beside this script)

#: the problems that print a learning curve; without --problems all but ``gpt``, whose
#: configurations all end at the same val_bpb
CURVED = ("mlp", "gpt", "gpt-shakespeare")
DEFAULT = ("mlp", "gpt-shakespeare")
#: steps mode for every problem (a fixed step count: the metric does not depend on the machine's
#: speed, so no trial is judged contended and run again on a busy machine)
STEPS = {"mlp": 400}


class OutOfTime(Exception):
    """The session's wall-clock budget is spent (raised after a trial is recorded)."""


class Deadline(Reporter):
    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s

    def trial(self, progress, record) -> None:
        if time.monotonic() >= self.end:
            raise OutOfTime


@dataclass
class Session:
    prune: str
    seed: int
    seconds: float
    records: list[TraceRecord]
    best_delta: float
    #: pruned trials trained to the end: (metric, the best it was compared with)
    checked: list[tuple[float | None, float]] = field(default_factory=list)

    @property
    def trials(self) -> list[TraceRecord]:
        return [r for r in self.records if r.kind == "trial" and r.state.value != "interrupted"]

    @property
    def per_hour(self) -> float:
        return len(self.trials) / self.seconds * 3600

    @property
    def pruned(self) -> list[TraceRecord]:
        return [r for r in self.trials if r.state.value == "pruned"]

    def spent(self) -> dict[str, float]:
        """Where the session's seconds went: the trainings' own seconds (``wall_s``) by what they
        were, and the rest (process starts are in the trainings; the rest is arx's own work)."""
        out = {"baseline+noise": 0.0, "confirm": 0.0, "pruned": 0.0, "full": 0.0}
        for r in self.records:
            wall = float(r.get("wall_s") or 0.0)
            if r.kind in ("baseline", "noise"):
                out["baseline+noise"] += wall
            elif r.kind == "confirm":
                out["confirm"] += wall
            elif r.kind == "trial":
                out["pruned" if r.state.value == "pruned" else "full"] += wall
        out["arx"] = self.seconds - sum(out.values())
        return out

    @property
    def lost(self) -> int:
        return sum(1 for m, best in self.checked if m is not None and m < best)

    def dump(self, path: Path, load: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "prune": self.prune, "seed": self.seed, "seconds": self.seconds,
            "best_delta": self.best_delta, "checked": self.checked, "load": load,
            "records": [dict(r.data) for r in self.records]}))

    @classmethod
    def load(cls, path: Path) -> tuple[Session, float]:
        d = json.loads(path.read_text())
        return cls(d["prune"], d["seed"], d["seconds"], [TraceRecord(r) for r in d["records"]],
                   d["best_delta"], [tuple(c) for c in d["checked"]]), d["load"]


def session(root: Path, problem: suite.Problem, seed: int, prune: str, budget_s: float,
            check: bool, noise: str = "off") -> Session:
    name = f"{problem.name}-{prune}-{seed}"
    steps = {"steps": STEPS[problem.name]} if problem.name in STEPS else {}
    ws = open_run(root, {"iterations": 100_000, "seed": seed, "prune": prune, "noise": noise,
                         "verify": 0, **problem.flags, **steps}, name=name)
    engine = Engine(ws, offline_proposer(ws.config), Deadline(budget_s))
    t0 = time.monotonic()
    try:
        engine.run()
    except OutOfTime:
        pass
    seconds = time.monotonic() - t0
    try:
        records = Trace(ws.path / ws.trace_rel).records()
        base = next(r.metric for r in records if r.state.value == "baseline")
        out = Session(prune, seed, seconds, records, engine.best.metric - base)
        if check:
            for rec in out.pruned:
                source = apply_changes(engine.best.source, dict(rec.get("config") or {}))
                out.checked.append((train_to_end(ws.path, ws.config.target, source),
                                    float(rec.get("best_before"))))
    finally:
        ws.close(remove_worktree=True)
    return out


def train_to_end(worktree: Path, target, source: str) -> float | None:
    """The metric ``source`` gets when trained to its end, in a copy of the run's worktree."""
    with tempfile.TemporaryDirectory(prefix="arx-prune-check-") as tmp:
        cwd = Path(tmp) / "w"
        shutil.copytree(worktree, cwd, ignore=shutil.ignore_patterns(".git", "runs", "runner"),
                        symlinks=True)
        (cwd / target.file).write_text(source)
        result = run_trial(TrialSpec(command=target.command, cwd=cwd, timeout_s=3600,
                                     metric=target.metric, metric_regex=target.metric_regex))
        return result.metric


class _Curve:
    """What a watch reads of a running trial's curve (``CurveReader``'s unit and points)."""

    def __init__(self, unit: str):
        self.unit, self.points = unit, []


def template_runner() -> type:
    """The runner template's ``Runner`` class (its rule: ``prune`` and the ``prune_*`` knobs)."""
    namespace: dict = {}
    exec(importlib.resources.files("arx.runner_repo").joinpath("runner.py").read_text(), namespace)
    return namespace["Runner"]


def counterfactual(sessions: list[Session], judge=None) -> tuple[int, int, int, float, float]:
    """The runner template's ``prune`` asked, as a run's watch asks it, at every point of the
    trials the prune-off sessions trained to the end: (trials, would be pruned, of those the
    ones that beat the best they were compared with, share of their training seconds saved,
    and the bound on that share: every trial that did not beat the best stopped at its first
    point past the template's ``prune_after``, which no rule that loses no keep can beat).
    ``judge``: another runner to ask (a variant of the rule) instead of the template's."""
    judge = judge or template_runner()({"direction": "min"})
    n = pruned = lost = 0
    spent = saved = bound = 0.0
    for s in sessions:
        best = None
        for rec in s.records:
            curve, unit = rec.get("curve"), rec.get("curve_unit")
            if rec.kind == "trial" and rec.metric is not None and curve and best is not None \
                    and best.get("curve_unit") == unit:
                total = float(best.get("curve_end") or best.get("curve")[-1][0])
                ctx = {"best_metric": float(rec.get("best_before"))}
                watch = Pruner(judge, ctx, best.get("curve"), unit, total,
                               curve_noise(s.records, unit))
                reading, n, wall = _Curve(unit), n + 1, float(rec.get("wall_s") or 0.0)
                end = float(rec.get("curve_end") or curve[-1][0])
                spent += wall
                if rec.metric >= ctx["best_metric"]:
                    first = next((p for p, _ in curve if p / total >= judge.prune_after), end)
                    bound += wall * (1 - first / end)
                for point in curve:
                    reading.points.append(tuple(point))
                    if watch(reading):
                        pruned += 1
                        lost += rec.metric < ctx["best_metric"]
                        saved += wall * (1 - point[0] / end)
                        break
            if rec.state.is_best and rec.get("curve"):
                best = rec
    return n, pruned, lost, saved / spent if spent else 0.0, bound / spent if spent else 0.0


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def report(results: dict[str, dict[str, list[Session]]], budget_s: float, check: bool) -> str:
    lines = ["| problem | prune | seeds | trials/h mean ± std | best delta mean ± std | "
             "pruned | lost keeps (check) |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, modes in results.items():
        for mode in ("off", "on"):
            runs = modes[mode]
            rate, rate_sd = stats([s.per_hour for s in runs])
            best, best_sd = stats([s.best_delta for s in runs])
            pruned = sum(len(s.pruned) for s in runs)
            lost = f"{sum(s.lost for s in runs)} of {pruned}" if check and mode == "on" else "-"
            lines.append(f"| {name} | {mode} | {len(runs)} | {rate:.0f} ± {rate_sd:.0f} | "
                         f"{best:+.4f} ± {best_sd:.4f} | {pruned} | {lost} |")
        off, on = modes["off"], modes["on"]
        ratio = stats([s.per_hour for s in on])[0] / stats([s.per_hour for s in off])[0]
        (b_on, sd_on), (b_off, sd_off) = stats([s.best_delta for s in on]), \
            stats([s.best_delta for s in off])
        pooled = math.sqrt((sd_on ** 2 + sd_off ** 2) / 2)
        diff = b_on - b_off
        score = diff / pooled if pooled else (0.0 if diff == 0 else math.copysign(math.inf, diff))
        pruned = sum(len(s.pruned) for s in on)
        lost = sum(s.lost for s in on)
        n, would, lost_cf, saved, bound = counterfactual(off)
        verdicts.append(
            f"- {name}: the rule on the prune-off runs' {n} full curves: {would} would be "
            f"pruned, {lost_cf} of them beat the best; {saved:.0%} of their training seconds "
            f"saved (at most {bound:.0%}: every trial that did not beat the best stopped at "
            "its first point past prune_after)")
        verdicts.append(
            f"- {name}: trials per hour x{ratio:.2f} with pruning (target >= 1.5); best "
            f"{score:+.2f} pooled std vs off (target <= +1)"
            + (f"; lost keeps {lost}/{pruned} = {lost / pruned:.0%} (target < 5%)"
               if check and pruned else ""))
    return "\n".join([f"Equal wall-clock budget per session: {budget_s:.0f} s (baseline "
                      "included).", "", *lines, "", *verdicts])


def from_dumps(dirs: list[Path]) -> tuple[dict[str, dict[str, list[Session]]], list[float]]:
    """The sessions written under the work directories ``dirs``, by problem and mode, in seed
    order, and the load average after each."""
    results: dict[str, dict[str, list[Session]]] = {}
    loads: list[float] = []
    for path in sorted(p for d in dirs for p in d.glob("sessions/*/*.json")):
        s, load = Session.load(path)
        results.setdefault(path.parent.name, {"off": [], "on": []})[s.prune].append(s)
        loads.append(load)
    for modes in results.values():
        for runs in modes.values():
            runs.sort(key=lambda s: s.seed)
    return results, loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=",".join(DEFAULT))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+SEEDS-1 [0]")
    ap.add_argument("--modes", default="off,on", help="which sessions to run [off,on]")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per session")
    ap.add_argument("--noise", default="off", help="the runs' --noise: off (the margin is the "
                    "rule's relative one) or auto (the curve's noise is measured and used) [off]")
    ap.add_argument("--no-check", action="store_true", help="skip training pruned trials to "
                    "the end")
    ap.add_argument("--work", type=Path, help="where the repositories go [a temporary dir]")
    ap.add_argument("--report", type=Path, nargs="+", metavar="DIR", help="run nothing: report "
                    "the sessions written under these work directories")
    ap.add_argument("--md", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    if args.report:
        results, loads = from_dumps(args.report)
        check = any(s.checked for modes in results.values() for s in modes["on"]) \
            or not any(s.pruned for modes in results.values() for s in modes["on"])
    else:
        results, loads = run(args)
        check = not args.no_check
    if not any(modes["off"] and modes["on"] for modes in results.values()):
        print("\n".join(f"{name} prune {mode}: {len(runs)} sessions" for name, modes in
                        results.items() for mode, runs in modes.items()))
        return
    text = report({k: v for k, v in results.items() if v["off"] and v["on"]}, args.budget
                  if not args.report else _budget(results), check) + (
        f"\n\n{'' if args.report else f'--noise {args.noise}; '}load average (1 min) after "
        "each session: min "
        f"{min(loads):.1f}, mean {statistics.fmean(loads):.1f}, max {max(loads):.1f} on "
        f"{os.cpu_count()} cores")
    print(text)
    if args.md:
        args.md.write_text(text + "\n")


def _budget(results: dict[str, dict[str, list[Session]]]) -> float:
    """A reported bench's budget per session: the shortest session (each ran past it by one
    trial at most)."""
    return min(s.seconds for modes in results.values() for runs in modes.values() for s in runs)


def run(args) -> tuple[dict[str, dict[str, list[Session]]], list[float]]:
    work = args.work or Path(tempfile.mkdtemp(prefix="arx-bench-pruning-"))
    # one thread per trial for every problem (numpy's BLAS too): a multithreaded trial's time
    # follows the other cores' load, and the two modes of a seed must not differ by that
    os.environ.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "MKL_NUM_THREADS")})
    results: dict[str, dict[str, list[Session]]] = {}
    loads: list[float] = []
    for name in args.problems.split(","):
        problem = suite.PROBLEMS[name]
        root = suite.make_repo(problem, work / name)
        if name.startswith("gpt"):
            os.environ.update(suite.gpt_env(root))
        results[name] = {"off": [], "on": []}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for mode in args.modes.split(","):
                s = session(root, problem, seed, mode, args.budget, not args.no_check,
                            args.noise)
                loads.append(os.getloadavg()[0])
                s.dump(work / "sessions" / name / f"{mode}-{seed}.json", loads[-1])
                results[name][mode].append(s)
                spent = ", ".join(f"{k} {v:.0f}" for k, v in s.spent().items())
                print(f"{name} seed {seed} prune {mode}: {len(s.trials)} trials in "
                      f"{s.seconds:.0f} s ({len(s.pruned)} pruned, lost {s.lost}), best delta "
                      f"{s.best_delta:+.4f}; seconds: {spent}", flush=True)
    return results, loads


if __name__ == "__main__":
    main()
