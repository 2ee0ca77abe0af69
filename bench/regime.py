"""Groups A, B and C in the paper's regime: against a SIMULATED near-deterministic LLM.

    python bench/ablation.py --regime [--guidance obeyed|ignored] [--problems bbob-f8,...]
                             [--seeds 5] [--iterations 30] [--jobs 2] [--second-choice 0.1]
                             [--memory 2] [--mechanism-lines obeyed|ignored]

Each (problem, group) is one job: a fresh repository of ``bench/suite.py``'s problem, its own
``regime_llm.Endpoint`` (a real local OpenAI-compatible server) and ``run_ablation``'s ordinary
runs, seed r for repeat r. The runs reach the endpoint as a user's would: ``--llm`` is its URL
(with the seed in the path, ``/seed-r/v1``, so each seed's answers are its own and a resume asks
the same model) and the proposer is `arx ablate`'s (``cli.common.make_proposer``). Per run the
job also reads from the trace how many trials re-ran a measured configuration
(``outcome.repeated``) and what became of each mechanism (kept, reverted and why, not judged).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arx.cli.common import make_proposer
from arx.core.analysis.ablate import run_ablation
from arx.core.levels.outcome import repeated
from arx.core.loop.trace import trace_events
from arx.core.repo.git import GitRepo
from arx.core.states import Event, Verdict

sys.path.insert(0, str(Path(__file__).parent))
import regime_llm  # noqa: E402  (bench/, beside this script)
import suite  # noqa: E402

GROUPS = ("A", "B", "C")
DEFAULT_PROBLEMS = ("bbob-f8", "bbob-f15", "bbob-f21")
#: the simulated LLM's favourite moves per target script (what "DeepSeek" tries first on it)
PREFERENCES: dict[str, tuple[str, ...]] = {
    "bbob.py": ("SCALE-", "OPTIMIZER>", "SCALE+", "LAYERS+", "OFFSET+", "WIDTH+", "LAYERS-",
                "OFFSET-", "WIDTH-", "OPTIMIZER<"),
    "logreg.py": ("LR+", "BATCH_SIZE-", "LR-", "MOMENTUM+", "SCHEDULE>", "L2-", "L2+",
                  "BATCH_SIZE+", "MOMENTUM-", "STANDARDIZE>"),
}


@dataclass(frozen=True)
class RunFacts:
    """One run of one seed: its delta, its trials, how many re-ran a measured configuration,
    and each mechanism's fate ("kept", "reverted: <reason>", "not judged", ...)."""

    seed: int
    delta: float | None
    trials: int
    repeats: int
    mechanisms: tuple[tuple[str, str], ...]
    stepped_aside: int
    #: each judged mechanism: (name, whether its window had fewer repeats per trial than the
    #: window it was compared with, whether it was kept)
    judged: tuple[tuple[str, bool, bool], ...] = ()


@dataclass(frozen=True)
class Cell:
    problem: str
    group: str
    runs: tuple[RunFacts, ...]
    seconds: float


def fate(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Each mechanism's last word in the trace's ``level2`` events, in order of first mention."""
    last: dict[str, Mapping[str, Any]] = {}
    for e in events:
        if e.get("event") == Event.LEVEL2:
            last[str(e.get("mechanism"))] = e
    words = {Verdict.PASS.value: "not judged", Verdict.KEPT.value: "kept",
             Verdict.NO_BENEFIT.value: "reverted", Verdict.FAIL.value: "gate failed",
             Verdict.REFUSED.value: "refused", Verdict.RUNTIME_REVERT.value: "runtime revert"}
    out = []
    for name, e in last.items():
        word = words.get(str(e.get("verdict")), str(e.get("verdict")))
        reason = str(e.get("reason") or "")
        out.append((name, f"{word}: {reason}" if reason and word != "kept" else word))
    return out


def judged(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool, bool]]:
    """(name, cut repeats, kept) of each outcome-gate judgement whose event holds both windows
    (``before``/``after`` with ``repeats`` and ``trials``)."""
    out = []
    for e in events:
        if e.get("event") != Event.LEVEL2 or e.get("verdict") not in (
                Verdict.KEPT.value, Verdict.NO_BENEFIT.value):
            continue
        b, a = e.get("before"), e.get("after")
        if not (isinstance(b, Mapping) and isinstance(a, Mapping) and b.get("trials")
                and a.get("trials")):
            continue
        cut = a["repeats"] / a["trials"] < b["repeats"] / b["trials"]
        out.append((str(e.get("mechanism")), cut, e.get("verdict") == Verdict.KEPT.value))
    return out


def facts(repo: GitRepo, run: str, seed: int, delta: float | None) -> RunFacts:
    events = trace_events(repo, run)
    records = [e for e in events if e.get("event") == Event.TRIAL]
    trials = [r for r in records if r.get("kind") == "trial"]
    return RunFacts(seed, delta, len(trials), len(repeated(records)), tuple(fate(events)),
                    sum(1 for e in events if e.get("event") == Event.STEP_ASIDE),
                    tuple(judged(events)))


def run_cell(problem_name: str, group: str, seeds: int, iterations: int, model: regime_llm.Model,
             work: Path, port: int = 0) -> Cell:
    """One job: ``seeds`` runs of ``group`` on a fresh repository of the problem (or, when it
    exists, on the one a previous bench left: finished runs are skipped, others resumed)."""
    problem = suite.PROBLEMS[problem_name]
    root = work / f"{problem.name}-{group}"
    if not root.exists():
        suite.make_repo(problem, root)
    if not model.prefer:
        model = regime_llm.Model(**{**model.__dict__,
                                    "prefer": PREFERENCES.get(problem.script, ())})
    t0 = time.monotonic()
    with regime_llm.Endpoint(model, port) as endpoint:
        result = None
        for seed in range(1, seeds + 1):  # finished repeats are skipped: one new seed a call
            result = run_ablation(
                root, groups=[group], repeats=seed, iterations=iterations, prefix=problem.name,
                flags={"noise": "off", **problem.flags, "llm": endpoint.base_url(seed),
                       "model": regime_llm.MODEL_ID},
                proposer_for=lambda ws: make_proposer(ws, quiet=True),
                out=work / "out" / f"{problem.name}-{group}", offline=False)
    assert result is not None
    (row,) = result.rows
    if row.unavailable:
        raise SystemExit(f"{problem.name} {group}: unavailable: {row.unavailable}")
    repo = GitRepo(root)
    runs = tuple(facts(repo, o.run, o.repeat, o.delta) for o in row.outcomes)
    return Cell(problem.name, group, runs, time.monotonic() - t0)


def run_all(problems: Sequence[str], seeds: int, iterations: int, model: regime_llm.Model,
            work: Path, jobs: int = 1, port: int = 0) -> list[Cell]:
    """Every (problem, group) cell, ``jobs`` at a time in their own processes; with ``port``,
    cell i's endpoint listens on ``port + i`` (the same URL on a rerun: resumable)."""
    todo = [(p, g, port + i if port else 0)
            for i, (p, g) in enumerate((p, g) for p in problems for g in GROUPS)]
    for p in problems:
        if p not in suite.PROBLEMS:
            raise SystemExit(f"--problems: unknown problem {p!r} (bench/suite.py has "
                             f"{', '.join(suite.PROBLEMS)})")
    if jobs <= 1:
        return [run_cell(p, g, seeds, iterations, model, work, n) for p, g, n in todo]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, p, g, seeds, iterations, model, work, n)
                   for p, g, n in todo]
        return [f.result() for f in futures]


def runs_table(cells: Sequence[Cell]) -> str:
    """Per run: delta, repeats of trials, Level-2 step-asides and each mechanism's fate."""
    lines = ["| problem | group | seed | delta | repeats / trials | L2 stepped aside | "
             "mechanisms (fate) |", "|---|---|---|---|---|---|---|"]
    for cell in cells:
        for r in cell.runs:
            mechs = "; ".join(f"{n}: {f}" for n, f in r.mechanisms) or "-"
            delta = "n/a" if r.delta is None else f"{r.delta:+.4f}"
            lines.append(f"| {cell.problem} | {cell.group} | {r.seed} | {delta} | "
                         f"{r.repeats} / {r.trials} | {r.stepped_aside} | {mechs} |")
    return "\n".join(lines)


def summary(cells: Sequence[Cell]) -> str:
    """Mean repeats per (problem, group), C against A and B seed by seed, mechanisms' fates."""
    by = {(c.problem, c.group): c for c in cells}
    out = []
    for problem in dict.fromkeys(c.problem for c in cells):
        parts = []
        for g in GROUPS:
            cell = by.get((problem, g))
            if cell and cell.runs:
                mean = sum(r.repeats for r in cell.runs) / len(cell.runs)
                parts.append(f"{g} {mean:.1f}")
        line = f"- {problem}: mean repeats per run " + ", ".join(parts)
        c = by.get((problem, "C"))
        for ref in ("A", "B"):
            other = by.get((problem, ref))
            if c and other:
                pairs = [(x.delta, y.delta) for x in c.runs for y in other.runs
                         if x.seed == y.seed and x.delta is not None and y.delta is not None]
                wins = sum(1 for x, y in pairs if x < y)
                line += f"; C better than {ref} on {wins} of {len(pairs)} seeds"
        out.append(line)
    fates: dict[str, int] = {}
    for c in cells:
        for r in c.runs:
            for _name, f in r.mechanisms:
                word = f.split(":")[0]
                fates[word] = fates.get(word, 0) + 1
    if fates:
        out.append("- mechanisms: " + ", ".join(f"{k} {v}" for k, v in sorted(fates.items())))
    cuts = [j for c in cells for r in c.runs for j in r.judged]
    if cuts:
        cut = [j for j in cuts if j[1]]
        out.append(f"- judged mechanisms whose window had fewer repeats per trial than the one "
                   f"it was compared with: {len(cut)} of {len(cuts)}, kept {sum(j[2] for j in cut)} "
                   f"of them; the others kept {sum(j[2] for j in cuts if not j[1])} of "
                   f"{len(cuts) - len(cut)}")
    return "\n".join(out)


def model_from(args: Any) -> regime_llm.Model:
    return regime_llm.Model(
        prefer=tuple(p for p in (args.prefer or "").split(",") if p),
        second_choice=args.second_choice, memory=args.memory,
        guidance=args.guidance == "obeyed", mechanisms=args.mechanism_lines == "obeyed")


def add_arguments(ap: Any) -> None:
    """The ``--regime`` options of bench/ablation.py."""
    ap.add_argument("--regime", action="store_true",
                    help="groups A, B, C against the simulated near-deterministic LLM")
    ap.add_argument("--guidance", choices=("obeyed", "ignored"), default="obeyed",
                    help="(--regime) whether the LLM's proposals follow Level 1.5's guidance")
    ap.add_argument("--mechanism-lines", choices=("obeyed", "ignored"), default="obeyed",
                    help="(--regime) whether they follow the mechanisms' focus/avoid lines")
    ap.add_argument("--second-choice", type=float, default=0.1,
                    help="(--regime) probability of the second allowed move (seeded)")
    ap.add_argument("--memory", type=int, default=2,
                    help="(--regime) how many last trials the LLM does not repeat")
    ap.add_argument("--prefer", default="",
                    help="(--regime) the preference list, e.g. 'SCALE-,OPTIMIZER>' "
                         "(default: per target script, PREFERENCES)")
    ap.add_argument("--port", type=int, default=0,
                    help="(--regime) first port of the endpoints (cell i: port + i); give it "
                         "again with the same --work to resume an interrupted bench")
    ap.add_argument("--jobs", type=int, default=1,
                    help="(--regime) (problem, group) cells run at once, one process each")
