"""The paper's Table 2 on a suite of black-box problems: groups A, B, D and the baselines, offline.

    python bench/ablation.py [--problems bbob-f8,bbob-f15,bbob-f21,logreg,mlp] [--seeds 5]
                             [--iterations 30] [--rows A,B,D,random] [--work DIR] [--md FILE]

For each problem of ``bench/suite.py`` a fresh repository is made (``arx init --target``), and
each row runs ``--seeds`` times through ``arx ablate``'s own code (``run_ablation``: ordinary
runs of the real engine, seed r in every row for repeat r, the offline proposer a run of these
rules gets). Printed, per problem and row: the mean and sample std of the delta (best - baseline;
every metric here is lower-is-better, so more negative is better), the wins, ties and losses of
each seed against group A's run of the same seed, the difference to A in units of the pooled
std, and the seconds the row took; then, for each row, on how many problems it is worse than A
by more than one pooled std and on how many its mean is better.

Offline, two pairs of rows are identical by construction and run once, labelled as such: group A
is Level 1 with the Optuna proposer, which is the ``optuna`` baseline; and group C without an
LLM installs mechanisms from the built-in catalog, which is group D.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from arx.core.analysis.ablate import run_ablation
from arx.core.proposers.offline import offline_proposer

sys.path.insert(0, str(Path(__file__).parent))
import regime  # noqa: E402  (bench/regime.py, beside this script)
import suite  # noqa: E402  (bench/suite.py, beside this script)

#: row key -> (label, groups, baselines) for run_ablation
ROWS = {
    "A": ("A = optuna (Level 1, Optuna TPE; the optuna baseline is the same runs)", ["A"], []),
    "B": ("B (Level 1 + 1.5)", ["B"], []),
    "D": ("D = C (Level 1 + 1.5 + mechanism catalog; offline C is D)", ["D"], []),
    "random": ("random (Level 1, random search)", [], ["random"]),
}


@dataclass
class Row:
    key: str
    label: str
    deltas: dict[int, float]
    seconds: float

    @property
    def values(self) -> list[float]:
        return [self.deltas[r] for r in sorted(self.deltas)]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


def run_row(root: Path, problem: suite.Problem, key: str, seeds: int, iterations: int,
            out: Path) -> Row:
    label, groups, baselines = ROWS[key]
    t0 = time.monotonic()
    result = run_ablation(root, groups=groups, baselines=baselines, repeats=seeds,
                          iterations=iterations, prefix=problem.name,
                          flags={"noise": "off", **problem.flags},
                          proposer_for=lambda ws: offline_proposer(ws.config),
                          out=out / f"{problem.name}-{key}")
    seconds = time.monotonic() - t0
    (row,) = result.rows
    if row.unavailable:
        raise SystemExit(f"{problem.name} {key}: unavailable: {row.unavailable}")
    deltas = {o.repeat: o.delta for o in row.outcomes if o.delta is not None}
    return Row(key, label, deltas, seconds)


def versus(row: Row, ref: Row) -> tuple[str, float | None]:
    """(wins/ties/losses of each seed against the reference's run of the same seed, the mean
    difference in pooled stds: negative is better)."""
    wins = ties = losses = 0
    for r, d in row.deltas.items():
        a = ref.deltas.get(r)
        if a is None:
            continue
        if math.isclose(d, a, rel_tol=1e-9, abs_tol=1e-12):
            ties += 1
        elif d < a:
            wins += 1
        else:
            losses += 1
    pooled = math.sqrt(((row.std or 0) ** 2 + (ref.std or 0) ** 2) / 2)
    diff = None if row.mean is None or ref.mean is None else row.mean - ref.mean
    score = None if diff is None else (0.0 if diff == 0 else diff / pooled if pooled else
                                       math.copysign(math.inf, diff))
    return f"{wins}/{ties}/{losses}", score


def table(results: dict[str, list[Row]]) -> str:
    lines = ["| problem | row | delta mean ± std | W/T/L vs A | (mean - A) / pooled std | seconds |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        ref = next(r for r in rows if r.key == "A")
        for row in rows:
            wtl, score = versus(row, ref) if row is not ref else ("-", None)
            mean = f"{row.mean:+.4f} ± {row.std:.4f}" if row.std is not None else \
                f"{row.mean:+.4f}" if row.mean is not None else "n/a"
            lines.append(f"| {name} | {row.label} | {mean} | {wtl} | "
                         f"{'-' if score is None else f'{score:+.2f}'} | {row.seconds:.0f} |")
    return "\n".join(lines)


def verdicts(results: dict[str, list[Row]]) -> str:
    out = []
    n = len(results)
    for key in ROWS:
        if key == "A":
            continue
        scores = [versus(r, next(x for x in rows if x.key == "A"))[1]
                  for rows in results.values() for r in rows if r.key == key]
        if not scores:
            continue
        worse = sum(1 for s in scores if s is not None and s > 1)
        better = sum(1 for s in scores if s is not None and s < 0)
        out.append(f"- {ROWS[key][0].split(' (')[0]}: worse than A by more than one pooled std "
                   f"on {worse} of {n} problems; mean better than A on {better} of {n}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=None,
                    help="default: the suite's list (with --regime: bbob-f8,bbob-f15,bbob-f21)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--rows", default="A,B,D,random")
    ap.add_argument("--work", type=Path, default=None, help="keep the repositories here")
    ap.add_argument("--md", type=Path, default=None, help="also write the table here")
    regime.add_arguments(ap)
    args = ap.parse_args()
    if args.regime:
        return main_regime(args)
    keys = [k for k in args.rows.split(",") if k]
    if "A" not in keys:
        keys.insert(0, "A")
    work = args.work or Path(tempfile.mkdtemp(prefix="arx-ablation-"))
    results: dict[str, list[Row]] = {}
    t0 = time.monotonic()
    for name in (args.problems or ",".join(suite.DEFAULT)).split(","):
        problem = suite.PROBLEMS[name]
        root = suite.make_repo(problem, work / name)
        if name == "gpt":
            os.environ.update(suite.gpt_env(root))
        rows = []
        for key in keys:
            rows.append(run_row(root, problem, key, args.seeds, args.iterations, work / "out"))
            print(f"{name} {key}: {rows[-1].mean:+.4f} ({rows[-1].seconds:.0f} s)",
                  file=sys.stderr, flush=True)
        results[name] = rows
    total = time.monotonic() - t0
    command = "python bench/ablation.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"{args.seeds} seeds x {args.iterations} iterations per row, offline; "
        f"{total:.0f} s in all (`{command.strip()}`).", "",
        table(results), "", verdicts(results), "",
        "Problems: " + "; ".join(f"{n}: {suite.PROBLEMS[n].about}" for n in results) + ".",
    ])
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    print(f"repositories: {work}", file=sys.stderr)


def main_regime(args: argparse.Namespace) -> None:
    """``--regime``: groups A, B, C against the simulated LLM, the same table plus repeats and
    mechanisms per run."""
    problems = (args.problems or ",".join(regime.DEFAULT_PROBLEMS)).split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="arx-regime-"))
    model = regime.model_from(args)
    t0 = time.monotonic()
    cells = regime.run_all(problems, args.seeds, args.iterations, model, work, args.jobs,
                           args.port)
    total = time.monotonic() - t0
    labels = {"A": "A (Level 1)", "B": "B (Level 1 + 1.5)", "C": "C (Level 1 + 1.5 + 2, LLM)"}
    results: dict[str, list[Row]] = {}
    for cell in cells:
        deltas = {r.seed: r.delta for r in cell.runs if r.delta is not None}
        results.setdefault(cell.problem, []).append(
            Row(cell.group, labels[cell.group], deltas, cell.seconds))
    command = "python bench/ablation.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"SIMULATED LLM (bench/regime_llm.py): guidance {args.guidance}, mechanism lines "
        f"{args.mechanism_lines}, second choice {args.second_choice}, memory {args.memory}. "
        f"{args.seeds} seeds x {args.iterations} iterations per row; {total:.0f} s in all with "
        f"--jobs {args.jobs} (`{command.strip()}`).", "",
        table(results), "", regime.summary(cells), "", regime.runs_table(cells), "",
        "Problems: " + "; ".join(f"{n}: {suite.PROBLEMS[n].about}" for n in results) + ".",
    ])
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    print(f"repositories: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
