"""``arx export NAME --storage URL`` and ``arx run --storage URL``: a run as an Optuna study.

Optuna users read studies in optuna-dashboard; this writes a run's trials into an Optuna storage
(an RDB URL such as ``sqlite:///arx.db``, or a journal file path) so that
``optuna-dashboard sqlite:///arx.db`` shows it. One study per run, named after it, with the
run's direction; one Optuna trial per arx trial, meaning the baseline and every Level-1 trial
record (``kind`` ``baseline`` or ``trial``: confirmations, noise and held-out measurements are
extra seeds of those, kept as their user attributes or the study's). The trial's value is its
metric, its params the tunable parameters' values as trained, its state mapped from the arx
status (``optuna_state``), its user attributes the iteration, status, reason, hypothesis,
changes, the commit of a baseline or keep, and the Level-2 mechanisms active when it ran.

Everything is read from the trace through the run views (``loop.trace.trace_events``), never
from memory, and each arx record is written once: an Optuna trial carries the position of its
record in the trace (``arx_record``, the trace is append-only), and ``sync`` adds only the
positions the study lacks, so exporting twice, or a resumed ``arx run --storage``, duplicates
nothing. The study remembers the run's baseline commit (``arx_baseline_commit``) and a study of
the same name holding another run is refused rather than mixed.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from arx.core.app.runs import history
from arx.core.codemods.bundle import TargetFiles, read_files
from arx.core.config import RunConfig
from arx.core.errors import ExportError, RepoError
from arx.core.levels.mechanism_state import active_mechanisms
from arx.core.loop.params import ParamSpec
from arx.core.loop.space import run_space
from arx.core.loop.trace import trace_events
from arx.core.repo.commits import Trailer, level_of, trailer_int
from arx.core.repo.git import GitRepo
from arx.core.repo.paths import RunFiles, branch_of
from arx.core.states import Event, Level, TrialKind, TrialState

try:  # optuna >= 4
    from optuna.storages.journal import JournalFileBackend as _JournalFile
except ImportError:  # pragma: no cover - optuna 3.x spells it so
    from optuna.storages import JournalFileStorage as _JournalFile

optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created" per export

__all__ = ["ExportResult", "ExportingReporter", "StudyWriter", "export_run", "live_export",
           "optuna_state", "public_url"]

#: arx trial status -> Optuna state. Measured statuses are COMPLETE with their metric; every
#: other one (a failure, a refused proposal, an interrupted or contended trial) is FAIL, with
#: the arx status kept in the user attributes. "pruned" (a trial stopped early by a pruning rule,
#: ``TrialState.PRUNED`` once arx has one) is Optuna's PRUNED.
_STATES: Mapping[str, OptunaState] = {
    **{s.value: OptunaState.COMPLETE for s in TrialState if s.is_measured},
    "pruned": OptunaState.PRUNED,
}
#: the record kinds that are Optuna trials (the others are extra seeds of these)
_EXPORTED = (TrialKind.BASELINE.value, TrialKind.TRIAL.value)
#: the user attribute naming the trial's record (its position among the trace's trial records)
RECORD_KEY = "arx_record"


def optuna_state(status: str, metric: Any) -> OptunaState:
    """The Optuna state of an arx trial record (a measured one without a finite metric fails)."""
    state = _STATES.get(str(status), OptunaState.FAIL)
    if state is OptunaState.COMPLETE and not _finite(metric):
        return OptunaState.FAIL
    return state


def public_url(url: str) -> str:
    """The storage as it may be printed or recorded: an RDB URL without its password."""
    if "://" not in url:
        return url
    head, _, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if at and ":" in userinfo and "/" not in userinfo:
        return f"{head}://{userinfo.split(':', 1)[0]}:***@{host}"
    return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for a URL (``sqlite:///arx.db``, ``postgresql://...``), else a journal
    file at that path; a clear error when it cannot be opened."""
    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        path = Path(url).expanduser()
        if path.is_dir():
            raise ExportError(f"--storage {url} is a directory",
                              hint="name a journal file (arx.log) or an RDB URL (sqlite:///arx.db)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(_JournalFile(str(path)))
    except ExportError:
        raise
    except Exception as exc:  # sqlalchemy, a driver or the file system: all say the same
        raise ExportError(f"cannot open the Optuna storage {public_url(url)}: {exc}",
                          hint="give an RDB URL such as sqlite:///arx.db or a journal file "
                          "path such as arx-journal.log") from None


def distribution(spec: ParamSpec, value: Any) -> tuple[Any, BaseDistribution] | None:
    """``value`` of parameter ``spec`` as an Optuna param: the declared range, widened to hold
    a value outside it (Optuna allows ranges to differ per trial, never the log flag nor the
    choices); None when Optuna cannot hold it (a value outside the choices, a log range's 0)."""
    if spec.choices is not None or spec.kind == "bool":
        choices = tuple(_plain(c) for c in spec.choices) if spec.choices is not None \
            else (False, True)
        plain = _plain(value)
        return (plain, CategoricalDistribution(choices)) if plain in choices else None
    if not spec.has_range or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    log = bool(spec.log or spec.pow2) and float(spec.low) > 0  # type: ignore[arg-type]
    if log and value <= 0:
        return None
    if spec.kind == "int" and isinstance(value, int):
        low, high = min(int(spec.low), value), max(int(spec.high), value)  # type: ignore[arg-type]
        return value, IntDistribution(low, high, log=log)
    value = float(value)
    if not math.isfinite(value):
        return None
    low, high = min(float(spec.low), value), max(float(spec.high), value)  # type: ignore[arg-type]
    return value, FloatDistribution(low, high, log=log)


@dataclass(frozen=True)
class ExportResult:
    """What one export did."""

    study: str
    storage: str  # public_url of the storage
    added: int  # trials written now
    trials: int  # trials the study holds for the run


class StudyWriter:
    """One run's study in one storage: opened (or created) once, then ``sync``ed with the
    trace as often as wanted; only records it lacks are written."""

    def __init__(self, url: str, name: str, direction: str, specs: Sequence[ParamSpec],
                 attrs: Mapping[str, Any]):
        self.url, self.name = url, name
        self.specs = {s.name: s for s in specs}
        storage = open_storage(url)
        try:
            self.study = optuna.create_study(
                storage=storage, study_name=name, load_if_exists=True,
                direction="minimize" if direction == "min" else "maximize")
        except Exception as exc:
            raise ExportError(f"cannot create the study {name} in {public_url(url)}: {exc}",
                              hint="check the storage URL and that it is writable") from None
        for key, value in attrs.items():
            if self.study.user_attrs.get(key) != value:
                self.study.set_user_attr(key, value)
        self.done = {t.user_attrs.get(RECORD_KEY) for t in self.study.get_trials(deepcopy=False)}
        self.done.discard(None)

    def check_run(self, baseline_commit: str | None) -> None:
        """Refuse a study of this name that holds another run (a removed run's namesake)."""
        held = self.study.user_attrs.get("arx_baseline_commit")
        if (held or self.done) and held != baseline_commit:
            mine = f"this run's is {baseline_commit[:12]}" if baseline_commit else \
                "this run has none yet"
            raise ExportError(
                f"the study {self.name} in {public_url(self.url)} holds another run "
                f"(baseline commit {str(held)[:12]}; {mine})",
                hint=f"export to another storage, or delete that study: optuna delete-study "
                f"--study-name {self.name} --storage {public_url(self.url)}")

    def sync(self, events: Sequence[Mapping[str, Any]],
             commits: Callable[[], Mapping[tuple[str, int], str]]) -> int:
        """Write the exported records of ``events`` (a trace, oldest first) the study lacks;
        ``commits`` ((level, iteration) -> sha) is asked only when a baseline or keep is new."""
        added, level2, shas = 0, [], None
        position = -1
        for event in events:
            if event.get("event") == Event.LEVEL2:
                level2.append(event)
            if event.get("event") != Event.TRIAL:
                continue
            position += 1
            if position in self.done or event.get("kind", "trial") not in _EXPORTED:
                continue
            if shas is None and event.get("status") in (TrialState.BASELINE, TrialState.KEEP):
                shas = commits()
            self.study.add_trial(self._trial(position, event, level2, shas or {}))
            self.done.add(position)
            added += 1
            if event.get("status") == TrialState.BASELINE and shas:
                self.study.set_user_attr("arx_baseline_commit", shas.get(("baseline", 0)))
        return added

    def _trial(self, position: int, rec: Mapping[str, Any], level2: Sequence[Mapping[str, Any]],
               shas: Mapping[tuple[str, int], str]) -> FrozenTrial:
        status, metric = str(rec.get("status")), rec.get("metric")
        state = optuna_state(status, metric)
        params, dists = {}, {}
        for name, value in (rec.get("config") or {}).items():
            spec = self.specs.get(name)
            held = distribution(spec, value) if spec is not None else None
            if held is not None:
                params[name], dists[name] = held
        iteration = int(rec.get("iteration", 0))
        attrs = {RECORD_KEY: position, "iteration": iteration, "status": status,
                 "reason": rec.get("reason") or "",
                 "hypothesis": rec.get("hypothesis") or "", "changes": _jsonable(rec.get("changes")),
                 "mechanisms": [m.name for m in active_mechanisms(level2)]}
        level = "baseline" if status == TrialState.BASELINE else "1"
        if status in (TrialState.BASELINE, TrialState.KEEP) and (level, iteration) in shas:
            attrs["commit"] = shas[(level, iteration)]
        for key in ("seq", "attempt", "proposer", "delta", "margin_sd", "confirm_metrics",
                    "best_confirm_metrics", "focus"):  # (each attribute costs Optuna a query)
            if rec.get(key) not in (None, [], {}):
                attrs[key] = _jsonable(rec[key])
        end = _when(rec.get("finished_at"))
        wall = rec.get("wall_s")
        start = end - timedelta(seconds=float(wall)) if end and _finite(wall) else end
        return FrozenTrial(
            number=-1, trial_id=-1, state=state,
            value=float(metric) if state is OptunaState.COMPLETE else None,
            datetime_start=start or datetime.now(), datetime_complete=end or datetime.now(),
            params=params, distributions=dists, user_attrs=attrs, system_attrs={},
            intermediate_values={})


def run_commits(repo: GitRepo, name: str) -> dict[tuple[str, int], str]:
    """(level, iteration) -> sha of the run's baseline and Level-1 (keep) commits."""
    out = {}
    for c in history(repo, name):
        level = level_of(c)
        if level in (Level.BASELINE, Level.L1):
            out[(level.value, trailer_int(c, Trailer.ITERATION) or 0)] = c.sha
    return out


def writer_for(repo: GitRepo, name: str, url: str, specs: Sequence[ParamSpec],
               config: RunConfig) -> StudyWriter:
    """The run's study in ``url``, checked to hold this run (or nothing yet)."""
    writer = StudyWriter(url, name, config.target.direction, specs, {
        "arx_run": name, "branch": branch_of(name), "metric": config.target.metric,
        "direction": config.target.direction, "group": config.group, "seed": config.seed})
    writer.check_run(run_commits(repo, name).get(("baseline", 0)))
    return writer


def export_run(root: Path | str, name: str, url: str) -> ExportResult:
    """``arx export``: every trial of run ``name`` not yet in the study, from its branch (or
    its live worktree while it runs)."""
    repo = GitRepo(root)
    branch = branch_of(name)
    if not repo.branch_exists(branch):
        raise RepoError(f"no run named {name!r}", hint="`arx status` lists the runs")
    stored = repo.show(branch, RunFiles(name).config_rel)
    if not stored:
        raise RepoError(f"run {name} has no config.json on {branch}: it never started",
                        hint="start it with `arx run --resume NAME`, or remove it with `arx rm`")
    config = RunConfig.from_json(stored)
    writer = writer_for(repo, name, url, branch_space(repo, branch, config), config)
    added = writer.sync(trace_events(repo, name), lambda: run_commits(repo, name))
    return ExportResult(name, public_url(url), added, len(writer.done))


def branch_space(repo: GitRepo, branch: str, config: RunConfig) -> tuple[ParamSpec, ...]:
    """The tunable parameters of a run, from arx.toml and the target on its branch."""
    toml = repo.show(branch, "arx.toml") or ""
    source = read_files(lambda p: repo.show(branch, p), config.target.paths()) or ""
    with tempfile.TemporaryDirectory(prefix="arx-export-") as tmp:  # run_space reads a tree
        (Path(tmp) / "arx.toml").write_text(toml)
        return run_space(Path(tmp), source, config).tunable()


class ExportingReporter:
    """``arx run --storage``: the run's reporter, which also syncs the study after each trial
    and at the end. Every other call goes to the reporter it wraps, as it is. A storage that
    fails mid-run (a locked database, a full disk) does not stop a run of hours: the reporter
    says so and the next sync, or `arx export`, fills in what is missing."""

    def __init__(self, inner: Any, writer: StudyWriter, repo: GitRepo, name: str):
        self.inner, self.writer, self.repo, self.name = inner, writer, repo, name
        self.failed = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def trial(self, progress: Any, record: Any) -> None:
        self.inner.trial(progress, record)
        self.sync()

    def finish(self, progress: Any) -> None:
        self.sync()
        self.inner.finish(progress)

    def sync(self) -> None:
        try:
            self.writer.sync(trace_events(self.repo, self.name),
                             lambda: run_commits(self.repo, self.name))
            self.failed = False
        except Exception as exc:  # any storage error: reported once, retried next trial
            if not self.failed:
                self.inner.line(f"arx: writing the study to {public_url(self.writer.url)} "
                                f"failed ({exc}); the run goes on, and `arx export "
                                f"{self.name} --storage URL` fills in what is missing")
            self.failed = True


def live_export(ws: Any, url: str, inner: Any) -> ExportingReporter:
    """The reporter of ``arx run --storage URL`` for workspace ``ws`` (checked before the run
    starts: a storage that cannot be opened, or holds another run, stops it first)."""
    source = TargetFiles(ws.path, ws.config.target.paths()).read()
    specs = run_space(ws.path, source, ws.config).tunable()
    writer = writer_for(ws.repo, ws.name, url, specs, ws.config)
    return ExportingReporter(inner, writer, ws.repo, ws.name)


def _when(text: Any) -> datetime | None:
    """A record's ``finished_at`` as Optuna keeps times (naive, local)."""
    try:
        when = datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z") if text else None
    except ValueError:
        return None
    return when.astimezone().replace(tzinfo=None) if when else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _plain(value: Any) -> Any:
    """A value Optuna can hold as a choice (None, bool, int, float, str): others as text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr)) if value is not None else None
