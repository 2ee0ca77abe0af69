"""`arx ablate`: the paper's Table 2, reproduced on the user's own target.

Every **arm** (a group A/B/C/D, or a baseline without an LLM: ``optuna``, ``random``) runs
``repeats`` times, each repeat on its own branch ``arx/<prefix>-<arm>-r<repeat>`` started from the
same base commit with the same proposer seed in every arm (repeat r uses seed r), so arms differ
only in what the levels do. Each arm's row holds every repeat's delta (best - baseline), their
mean and sample standard deviation, and the ratio of its mean |delta| to group A's (the paper's
"5x"). The table is printed and written as CSV and Markdown, beside a figure.

The runs are ordinary arx runs (``open_run`` + ``Engine``), so an ablation is resumable like
``arx run``: run it again with the same prefix and finished runs are skipped, interrupted ones
resumed, missing ones started. An arm the engine does not offer yet (Level 2 for group C, the
catalog for group D) is reported as unavailable rather than failing the ablation.

Offline (the group rows have no LLM), two pairs of arms are the same runs by construction: group
A is the ``optuna`` row (the same proposer, the same group), and group C is group D (without an
LLM, Level 2 draws the built-in catalog in both). Each such pair runs once, as one row labelled
with both keys ("C = D offline"), instead of spending compute on duplicates presented as
independent rows (issue #16). ``TWINS`` names the pairs.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arx.core.analysis.ablate_figure import figure
from arx.core.analysis.summary import delta_convention
from arx.core.analysis.summary import to_markdown as blocks_md
from arx.core.app.runs import run_status
from arx.core.config import load_toml, plain, resolve
from arx.core.errors import ConfigError
from arx.core.llm.settings import resolve_llm
from arx.core.loop.driver import run_to_end
from arx.core.loop.provenance import write_provenance
from arx.core.loop.trace import read_trace
from arx.core.proposers.base import Proposer
from arx.core.proposers.offline import OptunaProposer
from arx.core.proposers.offline import offline_proposer as run_offline_proposer
from arx.core.proposers.random_search import RandomProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import branch_of
from arx.core.repo.workspace import Workspace, check_name, open_run
from arx.core.states import RunState, TrialKind, TrialState

GROUPS = ("A", "B", "C", "D")
BASELINES = ("optuna", "random")
LABELS = {
    "A": "A (Level 1)",
    "B": "B (Level 1 + 1.5)",
    "C": "C (Level 1 + 1.5 + 2)",
    "D": "D (Level 1 + 1.5 + mechanism catalog)",
    "optuna": "Optuna TPE, no LLM (Level 1)",
    "random": "Random search, no LLM (Level 1)",
}
#: offline, (arm, its twin): the same runs by construction; the twin is folded into the arm's row
TWINS = (("A", "optuna"), ("C", "D"))


@dataclass(frozen=True)
class Arm:
    """One row of the table: which group the engine runs and where proposals come from."""

    key: str
    group: str
    #: "default" (as `arx run` would: the configured LLM, else Optuna), "optuna" or "random"
    proposer: str

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)

    def run_name(self, prefix: str, repeat: int) -> str:
        return f"{prefix}-{self.key}-r{repeat}"


@dataclass(frozen=True)
class Outcome:
    """One repeat of one arm after this invocation."""

    run: str
    repeat: int
    #: finished, running (another process holds it), unavailable
    state: str
    #: what this invocation did: started, resumed, extended, skipped, none
    action: str
    baseline: float | None = None
    best: float | None = None
    delta: float | None = None


@dataclass(frozen=True)
class Row:
    arm: Arm
    outcomes: tuple[Outcome, ...]
    unavailable: str | None = None
    #: arms identical to this one by construction (offline), run once as this row
    twins: tuple[Arm, ...] = ()

    @property
    def label(self) -> str:
        """The arm's label; a row that stands for its twins too says so ("C = D offline")."""
        if not self.twins:
            return self.arm.label
        return " = ".join([self.arm.key, *(t.key for t in self.twins)]) + \
            f" offline: {self.arm.label}"

    @property
    def deltas(self) -> list[float]:
        return [o.delta for o in self.outcomes if o.state == RunState.FINISHED and o.delta is not None]

    @property
    def mean(self) -> float | None:
        d = self.deltas
        return statistics.fmean(d) if d else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1), as in the paper's Table 2; None below 2 repeats."""
        d = self.deltas
        return statistics.stdev(d) if len(d) > 1 else None

    @property
    def mean_abs(self) -> float | None:
        d = self.deltas
        return statistics.fmean(abs(x) for x in d) if d else None


@dataclass
class Ablation:
    prefix: str
    iterations: int
    repeats: int
    metric: str
    direction: str
    rows: list[Row]
    csv_path: Path | None = None
    md_path: Path | None = None
    figure_path: Path | None = None
    figure: Any = None
    log: list[str] = field(default_factory=list)

    @property
    def reference(self) -> Row | None:
        """The row ratios are relative to: group A, else the first row with results."""
        rows = [r for r in self.rows if r.mean_abs is not None]
        return next((r for r in rows if r.arm.key == "A"), rows[0] if rows else None)

    def ratio(self, row: Row) -> float | None:
        ref = self.reference
        if ref is None or row.mean_abs is None or not ref.mean_abs:
            return None
        return row.mean_abs / ref.mean_abs


def plan(groups: Sequence[str], baselines: Sequence[str] = ()) -> list[Arm]:
    """The arms, in table order; refuses unknown letters or names, naming the flag."""
    arms: dict[str, Arm] = {}
    for g in groups:
        g = g.strip().upper()
        if g not in GROUPS:
            raise ConfigError(f"--groups: unknown group {g!r}", hint="use letters from A, B, C, D")
        arms.setdefault(g, Arm(g, g, "default"))
    for b in baselines:
        b = b.strip().lower()
        if b not in BASELINES:
            raise ConfigError(f"--baseline: unknown baseline {b!r}",
                              hint="use " + " or ".join(BASELINES))
        arms.setdefault(b, Arm(b, "A", b))
    if not arms:
        raise ConfigError("nothing to run", hint="name at least one group with --groups")
    return list(arms.values())


def split_list(text: str | None) -> list[str]:
    return [p for p in (text or "").replace(" ", ",").split(",") if p]


def offline_proposer(arm: Arm, seed: int, config: Any = None) -> Proposer:
    """The proposer of a baseline row. With the run's ``config`` at rules >= 3, the ``optuna``
    row gets exactly what `arx run` gives an offline group A run (``offline_proposer`` of
    proposers.offline), so the two are one by construction; older runs keep theirs."""
    if arm.proposer == "random":
        return RandomProposer(seed=seed)
    if config is not None and config.rules >= 3:
        return run_offline_proposer(config)
    return OptunaProposer(seed=seed)


def group_rows_offline(root: Path | str, flags: Mapping[str, Any],
                       proposer_for: Callable[[Workspace], Proposer] | None) -> bool:
    """Whether the group rows run without an LLM: no ``proposer_for`` (they get Optuna), or no
    LLM configured for them (``--llm``, ``ARX_LLM``, arx.toml, a key), as `arx run` decides."""
    if proposer_for is None:
        return True
    doc = load_toml(Path(root))
    config = resolve("probe", doc, {**flags, "group": "A"}, env=os.environ)
    return resolve_llm(config.llm, config.model, os.environ,
                       overrides=plain(doc.get("llm", {}))) is None


def fold_twins(arms: Sequence[Arm], offline: bool,
               available: Callable[[Arm], bool] = lambda _arm: True,
               ) -> list[tuple[Arm, tuple[Arm, ...]]]:
    """The arms to run, each with the arms it stands for (``TWINS``, only ``offline``, and only
    a twin the engine would run: one it refuses keeps its own "unavailable" row)."""
    keys = {a.key: a for a in arms}
    folded = {twin for arm, twin in TWINS
              if offline and arm in keys and twin in keys and available(keys[twin])}
    return [(a, tuple(keys[t] for arm, t in TWINS if arm == a.key and t in folded))
            for a in arms if a.key not in folded]


def run_ablation(
    root: Path | str,
    groups: Sequence[str] = ("A", "B", "C"),
    repeats: int = 3,
    iterations: int = 30,
    baselines: Sequence[str] = (),
    prefix: str = "ablate",
    flags: Mapping[str, Any] | None = None,
    proposer_for: Callable[[Workspace], Proposer] | None = None,
    reporter_for: Callable[[], Any] | None = None,
    executor_for: Callable[[Workspace], Any] | None = None,
    out: Path | str | None = None,
    echo: Callable[[str], None] | None = None,
    offline: bool | None = None,
) -> Ablation:
    """Run (or resume) every arm's repeats, then write ``<out>.csv``, ``.md`` and ``.png``.

    ``flags`` are `arx run` options given to every run (budget, steps, timeout, llm, model...).
    ``proposer_for(ws)`` makes the proposer of the group rows, as `arx run` would (default:
    Optuna); the baseline rows always use their own offline proposer. ``executor_for(ws)``
    makes the executor of a run with ``parallel`` > 1 (None: one candidate at a time), and
    ``reporter_for()`` its progress reporter. ``out`` is the path stem of the outputs (default
    ``<prefix>-ablation`` in the current directory). ``offline``: whether the group rows run
    without an LLM (None: ``group_rows_offline``); then identical arms run once (``TWINS``)."""
    if repeats < 1 or iterations < 1:
        raise ConfigError("--repeats and --iterations must be at least 1")
    check_name(f"{prefix}-optuna-r{repeats}")
    arms = plan(groups, baselines)
    repo = GitRepo(root)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    say = echo or (lambda _text: None)
    log: list[str] = []

    def note(text: str) -> None:
        log.append(text)
        say(text)

    if offline is None:
        offline = group_rows_offline(repo.root, flags, proposer_for)
    rows = []
    for arm, twins in fold_twins(arms, offline,
                                 lambda a: group_refusal(repo.root, a.group, flags) is None):
        run_flags = {**flags, "group": arm.group, "iterations": iterations}
        if arm.proposer != "default":  # the no-LLM rows: recorded as offline, whatever is set
            run_flags.update(llm="offline", model=None)
        if twins:
            note(f"ablate: {' = '.join([arm.key, *(t.key for t in twins)])}: the same runs "
                 "offline (identical by construction), run once")
        run = functools.partial(_run_one, repo.root, arm=arm, proposer_for=proposer_for,
                                reporter_for=reporter_for, executor_for=executor_for)
        row = _run_arm(repo, arm, prefix, repeats, run_flags, run, note)
        rows.append(Row(row.arm, row.outcomes, row.unavailable, twins))
    metric, direction = _target(repo, rows)
    result = Ablation(prefix, iterations, repeats, metric, direction, rows, log=log)
    write_outputs(result, repo, Path(out) if out else Path(f"{prefix}-ablation"))
    return result


def _run_arm(repo: GitRepo, arm: Arm, prefix: str, repeats: int, flags: Mapping[str, Any],
             run: Callable[[str, str, Mapping[str, Any]], None],
             note: Callable[[str], None]) -> Row:
    """Every repeat of one arm: skip the finished, resume the interrupted, start the missing."""
    refusal = group_refusal(repo.root, arm.group, flags)
    outcomes = []
    for r in range(1, repeats + 1):
        if refusal:
            break
        name = arm.run_name(prefix, r)
        action = _next_action(repo, name, int(flags["iterations"]))
        if action == "skipped":
            note(f"ablate: {name}: already finished, skipped")
        elif action == "running":
            note(f"ablate: {name}: running in another process, skipped")
        else:
            note(f"ablate: {name}: {action} ({arm.label}, seed {r})")
            try:
                run(name, action, {**flags, "seed": r})
            except Exception as exc:  # the engine refusing a group it does not offer yet
                if "not built" not in str(exc):
                    raise
                refusal = getattr(exc, "message", None) or str(exc)
                break
        st = run_status(repo, name)
        outcomes.append(Outcome(name, r, st.state, action, st.baseline, st.best, st.delta))
        if st.state == RunState.FINISHED:
            note(f"ablate: {name}: delta " + fmt(st.delta, "+.6f"))
    if refusal:
        note(f"ablate: {arm.label}: unavailable ({refusal})")
        return Row(arm, (), unavailable=refusal)
    return Row(arm, tuple(outcomes))


def group_refusal(root: Path, group: str, flags: Mapping[str, Any]) -> str | None:
    """Why the engine would not run ``group`` now (None: it would), without making a branch.

    Settings wrong for every group (a bad --budget, a broken arx.toml) raise instead."""
    doc = load_toml(root)
    resolve("probe", doc, {**flags, "group": "A"}, env={})
    try:
        resolve("probe", doc, {**flags, "group": group}, env={})
    except ConfigError as exc:
        return exc.message
    return None


def _next_action(repo: GitRepo, name: str, iterations: int) -> str:
    if not repo.branch_exists(branch_of(name)):
        return "started"
    st = run_status(repo, name)
    if st.state == RunState.RUNNING:
        return "running"
    if st.state == RunState.FINISHED:
        reached = max((int(r["iteration"]) for r in read_trace(repo, name)
                       if r.get("kind") == TrialKind.TRIAL and r.get("status") != TrialState.INTERRUPTED),
                      default=0)
        return "skipped" if reached >= iterations else "extended"
    return "resumed"


def _run_one(root: Path, name: str, action: str, flags: Mapping[str, Any], arm: Arm,
             proposer_for: Callable[[Workspace], Proposer] | None,
             reporter_for: Callable[[], Any] | None,
             executor_for: Callable[[Workspace], Any] | None) -> None:
    if action == "started":
        ws = open_run(root, flags, name=name)
    else:
        ws = open_run(root, {"iterations": flags["iterations"]}, resume=name)
    try:
        write_provenance(ws, ["arx", "ablate", f"({action} {name})"])
        if arm.proposer == "default" and proposer_for is not None:
            proposer = proposer_for(ws)
        else:
            proposer = offline_proposer(arm, ws.config.seed, ws.config)
        reporter = reporter_for() if reporter_for else None
        executor = executor_for(ws) if executor_for else None
    except BaseException:
        ws.close(remove_worktree=False)
        raise
    run_to_end(ws, proposer, reporter, executor)


def _target(repo: GitRepo, rows: Sequence[Row]) -> tuple[str, str]:
    for row in rows:
        for o in row.outcomes:
            st = run_status(repo, o.run)
            return st.metric, st.direction
    doc = load_toml(repo.root)
    target = doc.get("target", {})
    return str(target.get("metric", "metric")), str(target.get("direction", "min"))


# ---- the table ----------------------------------------------------------------------------
def fmt(value: float | None, spec: str = "+.4f") -> str:
    return "n/a" if value is None else format(value, spec)


def table_rows(result: Ablation) -> tuple[list[str], list[list[str]]]:
    ref = result.reference
    ref_name = ref.arm.key if ref else "A"
    headers = ["Group", *[f"R{r}" for r in range(1, result.repeats + 1)], "Mean ± Std",
               f"Ratio vs {ref_name} (mean |delta|)"]
    out = []
    for row in result.rows:
        if row.unavailable:
            out.append([row.label, *["-"] * result.repeats,
                        f"unavailable: {row.unavailable}", "-"])
            continue
        cells = []
        for r in range(1, result.repeats + 1):
            o = next((o for o in row.outcomes if o.repeat == r), None)
            cells.append(fmt(o.delta) if o and o.state == RunState.FINISHED else
                         (o.state if o else "-"))
        ratio = result.ratio(row)
        mean_std = (f"{fmt(row.mean)} ± {fmt(row.std, '.4f')}" if row.mean is not None
                    else "n/a")
        out.append([row.label, *cells, mean_std, "n/a" if ratio is None else f"{ratio:.2f}x"])
    return headers, out


def caption(result: Ablation) -> str:
    return (f"Ablation '{result.prefix}': {result.iterations} iterations per run, "
            f"{result.repeats} repeat(s) per row; repeat r uses proposer seed r in every row. "
            + delta_convention(result.metric, result.direction)
            + " Std is the sample standard deviation (n - 1). Ratio: mean |delta| of the row "
            "over that of the reference row.")


def to_markdown(result: Ablation) -> str:
    headers, rows = table_rows(result)
    return blocks_md([("p", caption(result)), ("table", headers, rows)])


def csv_rows(result: Ablation) -> list[list[Any]]:
    """Header and one row per arm: full-precision deltas, mean, std, mean |delta|, ratio."""
    ref = result.reference
    header = ["arm", "label", "group", "proposer",
              *[f"R{r}" for r in range(1, result.repeats + 1)],
              "mean", "std", "mean_abs", "ratio", "reference", "state", "runs", "same_as"]
    out: list[list[Any]] = [header]
    for row in result.rows:
        deltas, states = [], []
        for r in range(1, result.repeats + 1):
            o = next((o for o in row.outcomes if o.repeat == r), None)
            deltas.append(_cell(o.delta if o and o.state == RunState.FINISHED else None))
            states.append(o.state if o else "missing")
        state = (f"unavailable: {row.unavailable}" if row.unavailable else
                 "finished" if all(s == "finished" for s in states) else " ".join(states))
        out.append([row.arm.key, row.label, row.arm.group, row.arm.proposer, *deltas,
                    _cell(row.mean), _cell(row.std), _cell(row.mean_abs),
                    _cell(result.ratio(row)), ref.arm.key if ref else "", state,
                    " ".join(o.run for o in row.outcomes), " ".join(t.key for t in row.twins)])
    return out


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def write_outputs(result: Ablation, repo: GitRepo, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    result.csv_path = stem.with_name(stem.name + ".csv")
    with open(result.csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(csv_rows(result))
    result.md_path = stem.with_name(stem.name + ".md")
    result.figure_path = stem.with_name(stem.name + ".png")
    result.md_path.write_text(to_markdown(result) + f"\n![ablation]({result.figure_path.name})\n")
    result.figure = figure(result, repo)
    result.figure.savefig(result.figure_path, dpi=110)
